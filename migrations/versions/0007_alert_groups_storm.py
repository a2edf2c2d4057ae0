"""Alert groups (one card per group key) and storm digests (one card per chat in a storm).

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-27
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # group_id is the id of the group's first alert (the one whose card the group shares);
    # earlier alerts are each a group of one.
    op.add_column("alerts", sa.Column("group_key", sa.Text(), nullable=True))
    op.add_column("alerts", sa.Column("group_id", sa.BigInteger(), nullable=True))
    op.execute("UPDATE alerts SET group_key = 'fp:' || fingerprint, group_id = id")
    op.create_index(
        "ix_alerts_group_firing",
        "alerts",
        ["team_id", "group_key"],
        postgresql_where=sa.text("status = 'firing'"),
    )
    op.create_index("ix_alerts_group", "alerts", ["group_id"])
    op.create_table(
        "alert_digests",
        sa.Column("id", sa.BigInteger(), primary_key=True),
        sa.Column("chat_id", sa.BigInteger(), nullable=False),
        sa.Column("team_id", sa.Integer(), sa.ForeignKey("teams.id"), nullable=False),
        sa.Column(
            "message_row_id",
            sa.BigInteger(),
            sa.ForeignKey("telegram_messages.id", ondelete="SET NULL"),
            nullable=True,
        ),
        sa.Column(
            "opened_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column("calm_since", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finalised_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index(
        "uq_alert_digests_open",
        "alert_digests",
        ["chat_id"],
        unique=True,
        postgresql_where=sa.text("finalised_at IS NULL"),
    )
    op.create_table(
        "alert_digest_groups",
        sa.Column(
            "digest_id",
            sa.BigInteger(),
            sa.ForeignKey("alert_digests.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("group_id", sa.BigInteger(), primary_key=True),
    )
    op.create_index("ix_alert_digest_groups_group", "alert_digest_groups", ["group_id"])


def downgrade() -> None:
    op.drop_index("ix_alert_digest_groups_group", table_name="alert_digest_groups")
    op.drop_table("alert_digest_groups")
    op.drop_index("uq_alert_digests_open", table_name="alert_digests")
    op.drop_table("alert_digests")
    op.drop_index("ix_alerts_group", table_name="alerts")
    op.drop_index("ix_alerts_group_firing", table_name="alerts")
    op.drop_column("alerts", "group_id")
    op.drop_column("alerts", "group_key")
