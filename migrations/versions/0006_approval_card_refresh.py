"""Approval cards: votes schedule a coalesced card refresh instead of rendering each time.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-27
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # No index: the card worker looks among pending requests (ix_approval_requests_status_
    # expires), and an unindexed column keeps each vote's update of the row a HOT update.
    op.add_column(
        "approval_requests",
        sa.Column("cards_due_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.add_column(
        "approval_requests",
        sa.Column("cards_rendered_at", sa.DateTime(timezone=True), nullable=True),
    )


def downgrade() -> None:
    op.drop_column("approval_requests", "cards_rendered_at")
    op.drop_column("approval_requests", "cards_due_at")
