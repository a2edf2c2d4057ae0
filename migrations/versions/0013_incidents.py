"""Incidents and their timelines.

Revision ID: 0013
Revises: 0006
Create Date: 2026-11-27
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0013"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_JSONB = postgresql.JSONB(astext_type=sa.Text())


def _ts(name: str, *, now: bool = False) -> sa.Column[object]:
    if now:
        return sa.Column(
            name, sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        )
    return sa.Column(name, sa.DateTime(timezone=True), nullable=True)


def upgrade() -> None:
    op.add_column("silences", _ts("summarized_at"))
    op.create_table(
        "incidents",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("team_id", sa.Integer(), nullable=False),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("severity", sa.String(length=2), nullable=False),
        sa.Column("status", sa.String(length=16), server_default="investigating", nullable=False),
        _ts("escalated_at"),
        sa.Column("commander_telegram_id", sa.BigInteger(), nullable=True),
        sa.Column("commander_name", sa.String(length=128), nullable=True),
        sa.Column("services", _JSONB, server_default=sa.text("'[]'::jsonb"), nullable=False),
        sa.Column("group_labels", _JSONB, server_default=sa.text("'{}'::jsonb"), nullable=False),
        sa.Column("declared_by", sa.Text(), nullable=False),
        _ts("first_alert_at"),
        _ts("acknowledged_at"),
        _ts("created_at", now=True),
        _ts("updated_at", now=True),
        _ts("resolved_at"),
        _ts("closed_at"),
        _ts("card_due_at"),
        sa.CheckConstraint(
            "status IN ('investigating','mitigating','resolved','closed')",
            name=op.f("ck_incidents_status"),
        ),
        sa.CheckConstraint("severity IN ('P0','P1','P2','P3')", name=op.f("ck_incidents_severity")),
        sa.ForeignKeyConstraint(["team_id"], ["teams.id"], name=op.f("fk_incidents_team_id_teams")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_incidents")),
    )
    op.create_index(
        "ix_incidents_team_created", "incidents", ["team_id", "created_at", "id"], unique=False
    )
    op.create_index(
        "ix_incidents_open",
        "incidents",
        ["team_id"],
        unique=False,
        postgresql_where=sa.text("status IN ('investigating','mitigating')"),
    )
    op.create_index(
        "ix_incidents_card_due",
        "incidents",
        ["card_due_at"],
        unique=False,
        postgresql_where=sa.text("card_due_at IS NOT NULL"),
    )
    op.create_table(
        "incident_cards",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("incident_id", sa.String(length=32), nullable=False),
        sa.Column("message_row_id", sa.BigInteger(), nullable=False),
        sa.Column("chat_id", sa.BigInteger(), nullable=False),
        sa.Column("pinned", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.ForeignKeyConstraint(
            ["incident_id"],
            ["incidents.id"],
            name=op.f("fk_incident_cards_incident_id_incidents"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["message_row_id"],
            ["telegram_messages.id"],
            name=op.f("fk_incident_cards_message_row_id_telegram_messages"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_incident_cards")),
        sa.UniqueConstraint("message_row_id", name=op.f("uq_incident_cards_message_row_id")),
    )
    op.create_index("ix_incident_cards_incident", "incident_cards", ["incident_id"], unique=False)
    op.create_table(
        "timeline_events",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("incident_id", sa.String(length=32), nullable=False),
        _ts("at", now=True),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("actor", sa.Text(), nullable=True),
        sa.Column("actor_telegram_id", sa.BigInteger(), nullable=True),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("alert_id", sa.BigInteger(), nullable=True),
        sa.Column("approval_id", sa.UUID(), nullable=True),
        sa.Column("count", sa.Integer(), server_default="1", nullable=False),
        sa.Column("detail", _JSONB, server_default=sa.text("'{}'::jsonb"), nullable=False),
        sa.ForeignKeyConstraint(
            ["incident_id"],
            ["incidents.id"],
            name=op.f("fk_timeline_events_incident_id_incidents"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_timeline_events")),
    )
    op.create_index(
        "ix_timeline_events_incident", "timeline_events", ["incident_id", "id"], unique=False
    )
    op.create_index(
        "uq_timeline_events_attached",
        "timeline_events",
        ["incident_id", "alert_id"],
        unique=True,
        postgresql_where=sa.text("kind = 'alert.attached'"),
    )


def downgrade() -> None:
    op.drop_index("uq_timeline_events_attached", table_name="timeline_events")
    op.drop_index("ix_timeline_events_incident", table_name="timeline_events")
    op.drop_table("timeline_events")
    op.drop_index("ix_incident_cards_incident", table_name="incident_cards")
    op.drop_table("incident_cards")
    op.drop_index("ix_incidents_card_due", table_name="incidents")
    op.drop_index("ix_incidents_open", table_name="incidents")
    op.drop_index("ix_incidents_team_created", table_name="incidents")
    op.drop_table("incidents")
    op.drop_column("silences", "summarized_at")
