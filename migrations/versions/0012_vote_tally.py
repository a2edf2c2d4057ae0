"""Approval requests keep a tally of their votes and their requester's name key, so a vote
that cannot decide its request is counted by one autocommit statement (bot.approvals.plain).

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-27
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Unindexed, as cards_due_at: a vote's update of the row stays a HOT update.
    op.add_column(
        "approval_requests",
        sa.Column("votes_cast", sa.Integer(), server_default="0", nullable=False),
    )
    # Written by Quorum as requests are created (Python's casefold, which SQL cannot repeat):
    # older requests keep NULL, and their votes take the transaction every vote took before.
    op.add_column("approval_requests", sa.Column("requester_key", sa.Text(), nullable=True))
    op.execute(
        "UPDATE approval_requests AS r SET votes_cast = v.n"
        " FROM (SELECT request_id, count(*) AS n FROM votes GROUP BY request_id) AS v"
        " WHERE v.request_id = r.id AND r.status = 'pending'"
    )


def downgrade() -> None:
    op.drop_column("approval_requests", "requester_key")
    op.drop_column("approval_requests", "votes_cast")
