"""Outbox: a per-chat queue index, so the sender finds each chat's head row without a scan.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_outbox_chat_queue",
        "outbox",
        ["chat_id", "priority", "id"],
        unique=False,
        postgresql_where=sa.text("status IN ('pending','sending')"),
    )


def downgrade() -> None:
    op.drop_index(
        "ix_outbox_chat_queue",
        table_name="outbox",
        postgresql_where=sa.text("status IN ('pending','sending')"),
    )
