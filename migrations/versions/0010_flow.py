"""Questions asked by ForceReply, private chats' reachability, topics and replies on bot
messages, request reasons and vote reasons.

Revision ID: 0010
Revises: 0006
Create Date: 2026-11-27
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0010"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("telegram_messages", sa.Column("thread_id", sa.BigInteger(), nullable=True))
    op.add_column("telegram_messages", sa.Column("reply_to", sa.BigInteger(), nullable=True))
    op.add_column("approval_requests", sa.Column("reason", sa.Text(), nullable=True))
    op.add_column(
        "approval_requests",
        sa.Column("warned_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.add_column("votes", sa.Column("reason", sa.Text(), nullable=True))
    op.create_table(
        "questions",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column(
            "message_row_id",
            sa.BigInteger(),
            nullable=False,
        ),
        sa.Column("chat_id", sa.BigInteger(), nullable=False),
        sa.Column("asked_telegram_id", sa.BigInteger(), nullable=False),
        sa.Column(
            "subject", postgresql.JSONB(), server_default=sa.text("'{}'::jsonb"), nullable=False
        ),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("answered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("answer", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["message_row_id"],
            ["telegram_messages.id"],
            name=op.f("fk_questions_message_row_id_telegram_messages"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_questions")),
        sa.UniqueConstraint("message_row_id", name=op.f("uq_questions_message_row_id")),
    )
    op.create_table(
        "private_chats",
        sa.Column("telegram_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.CheckConstraint(
            "state IN ('open', 'not_started', 'blocked')", name=op.f("ck_private_chats_state")
        ),
        sa.PrimaryKeyConstraint("telegram_id", name=op.f("pk_private_chats")),
    )


def downgrade() -> None:
    op.drop_table("private_chats")
    op.drop_table("questions")
    op.drop_column("votes", "reason")
    op.drop_column("approval_requests", "warned_at")
    op.drop_column("approval_requests", "reason")
    op.drop_column("telegram_messages", "reply_to")
    op.drop_column("telegram_messages", "thread_id")
