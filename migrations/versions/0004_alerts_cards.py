"""Alerts: deferred card refreshes, source context, Alertmanager silence sync state.

Revision ID: 0004
Revises: 0002
Create Date: 2026-11-28
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0004"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("alerts", sa.Column("card_due_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column(
        "alerts",
        sa.Column(
            "context",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
    )
    op.create_index(
        "ix_alerts_card_due",
        "alerts",
        ["card_due_at"],
        unique=False,
        postgresql_where=sa.text("card_due_at IS NOT NULL"),
    )
    op.create_index(
        "ix_alerts_silenced_firing",
        "alerts",
        ["team_id"],
        unique=False,
        postgresql_where=sa.text("silenced AND status = 'firing'"),
    )
    op.add_column("silences", sa.Column("am_status", sa.String(length=16), nullable=True))
    op.add_column("silences", sa.Column("am_error", sa.Text(), nullable=True))
    op.add_column(
        "silences", sa.Column("am_claimed_until", sa.DateTime(timezone=True), nullable=True)
    )
    op.create_index(
        "ix_silences_am_due",
        "silences",
        ["id"],
        unique=False,
        postgresql_where=sa.text("am_status IN ('create','expire')"),
    )


def downgrade() -> None:
    op.drop_index("ix_silences_am_due", table_name="silences")
    op.drop_column("silences", "am_claimed_until")
    op.drop_column("silences", "am_error")
    op.drop_column("silences", "am_status")
    op.drop_index("ix_alerts_silenced_firing", table_name="alerts")
    op.drop_index("ix_alerts_card_due", table_name="alerts")
    op.drop_column("alerts", "context")
    op.drop_column("alerts", "card_due_at")
