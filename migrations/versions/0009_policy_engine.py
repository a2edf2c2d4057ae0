"""Policy engine: trust records per action pattern, and what a request was judged with.

Revision ID: 0009
Revises: 0010
Create Date: 2026-11-27
"""

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_REQUEST_COLUMNS: tuple[tuple[str, Any, dict[str, Any]], ...] = (
    ("action_pattern", sa.Text(), {}),
    ("trust_score", sa.Integer(), {"server_default": "0", "nullable": False}),
    ("auto_rule", sa.String(64), {}),
    ("break_glass_reason", sa.Text(), {}),
    ("revoked_at", sa.DateTime(timezone=True), {}),
    ("revoked_by", sa.Text(), {}),
    ("review_status", sa.String(16), {}),
    ("review_message_row", sa.BigInteger(), {}),
)


def upgrade() -> None:
    for name, type_, kw in _REQUEST_COLUMNS:
        op.add_column("approval_requests", sa.Column(name, type_, **kw))
    op.add_column("votes", sa.Column("confirmed_at", sa.DateTime(timezone=True), nullable=True))
    op.create_table(
        "break_glass_reviews",
        sa.Column("request_id", sa.Uuid(), nullable=False),
        sa.Column("voter_telegram_id", sa.BigInteger(), nullable=False),
        sa.Column("voter_name", sa.String(128), nullable=False),
        sa.Column("verdict", sa.String(8), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.CheckConstraint("verdict IN ('ack','dispute')", name="ck_break_glass_reviews_verdict"),
        sa.ForeignKeyConstraint(
            ["request_id"],
            ["approval_requests.id"],
            name="fk_break_glass_reviews_request_id_approval_requests",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("request_id", "voter_telegram_id", name="pk_break_glass_reviews"),
    )
    op.create_table(
        "totp_secrets",
        sa.Column("telegram_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("kid", sa.String(16), nullable=False),
        sa.Column("sealed", sa.LargeBinary(), nullable=False),
        sa.Column("failures", sa.Integer(), server_default="0", nullable=False),
        sa.Column("locked_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.PrimaryKeyConstraint("telegram_id", name="pk_totp_secrets"),
    )
    op.create_table(
        "trust_records",
        sa.Column("team_id", sa.Integer(), nullable=False),
        sa.Column("pattern", sa.Text(), nullable=False),
        sa.Column("score", sa.Integer(), server_default="0", nullable=False),
        sa.Column("total_approvals", sa.Integer(), server_default="0", nullable=False),
        sa.Column("total_rejections", sa.Integer(), server_default="0", nullable=False),
        sa.Column("last_approver", sa.Text(), nullable=True),
        sa.Column("last_approved_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_rejecter", sa.Text(), nullable=True),
        sa.Column("last_rejected_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.ForeignKeyConstraint(
            ["team_id"],
            ["teams.id"],
            name="fk_trust_records_team_id_teams",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("team_id", "pattern", name="pk_trust_records"),
    )


def downgrade() -> None:
    op.drop_table("trust_records")
    op.drop_table("totp_secrets")
    op.drop_table("break_glass_reviews")
    op.drop_column("votes", "confirmed_at")
    for name, _type, _kw in reversed(_REQUEST_COLUMNS):
        op.drop_column("approval_requests", name)
