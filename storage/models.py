"""SQLAlchemy 2 models for the whole schema; timestamps are timezone-aware UTC."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import BYTEA, JSONB, UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import UserDefinedType

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

Json = dict[str, Any]


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {
        datetime: DateTime(timezone=True),
        Json: JSONB,
        list[Any]: JSONB,
        uuid.UUID: UUID(as_uuid=True),
    }


def _now() -> Any:
    return mapped_column(DateTime(timezone=True), server_default=func.now(), nullable=False)


class Team(Base):
    __tablename__ = "teams"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = _now()


class Chat(Base):
    __tablename__ = "chats"
    # Telegram chat ids need up to 52 bits.
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"), index=True)
    title: Mapped[str | None] = mapped_column(String(256))
    type: Mapped[str | None] = mapped_column(String(16))
    active: Mapped[bool] = mapped_column(Boolean, server_default=text("true"))
    migrated_to: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = _now()
    updated_at: Mapped[datetime] = _now()


class ApprovalRequest(Base):
    __tablename__ = "approval_requests"
    __table_args__ = (
        UniqueConstraint("team_id", "idempotency_key", name="uq_approval_requests_idempotency"),
        # At most one pending request per fingerprint: repeats merge into it.
        Index(
            "uq_approval_requests_pending_fingerprint",
            "team_id",
            "fingerprint",
            unique=True,
            postgresql_where=text("status = 'pending' AND fingerprint IS NOT NULL"),
        ),
        Index("ix_approval_requests_status_expires", "status", "expires_at"),
        CheckConstraint(
            "status IN ('pending','approved','rejected','expired','cancelled')", name="status"
        ),
        CheckConstraint("risk_level IN ('low','medium','high','critical')", name="risk_level"),
    )
    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id"), index=True)
    action: Mapped[str] = mapped_column(Text)
    target: Mapped[str] = mapped_column(Text)
    description: Mapped[str | None] = mapped_column(Text)
    risk_level: Mapped[str] = mapped_column(String(16))
    approval_level: Mapped[str] = mapped_column(String(16))
    required_approvals: Mapped[int] = mapped_column(SmallInteger)
    reject_threshold: Mapped[int] = mapped_column(SmallInteger)
    status: Mapped[str] = mapped_column(String(16), server_default="pending")
    requested_by: Mapped[str] = mapped_column(Text)
    requester_telegram_id: Mapped[int | None] = mapped_column(BigInteger)
    fingerprint: Mapped[str | None] = mapped_column(String(256))
    hit_count: Mapped[int] = mapped_column(Integer, server_default="1")
    last_seen_at: Mapped[datetime] = _now()
    incident_id: Mapped[str | None] = mapped_column(String(256))
    blast_radius: Mapped[Json | None] = mapped_column(JSONB)
    dry_run_checks: Mapped[list[Any] | None] = mapped_column(JSONB)
    meta: Mapped[Json | None] = mapped_column("metadata", JSONB)
    idempotency_key: Mapped[str | None] = mapped_column(String(256))
    body_sha256: Mapped[str | None] = mapped_column(String(64))
    callback_url: Mapped[str | None] = mapped_column(Text)
    decided_by: Mapped[list[Any] | None] = mapped_column(JSONB)
    escalated_at: Mapped[datetime | None]
    result_success: Mapped[bool | None] = mapped_column(Boolean)
    result_detail: Mapped[str | None] = mapped_column(Text)
    result_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = _now()
    updated_at: Mapped[datetime] = _now()
    expires_at: Mapped[datetime]
    decided_at: Mapped[datetime | None]
    # The policy engine: the trust pattern and its score when the request was made, the
    # auto_approve rule that approved it, a break-glass reason, and a revocation.
    action_pattern: Mapped[str | None] = mapped_column(Text)
    trust_score: Mapped[int] = mapped_column(Integer, server_default="0")
    auto_rule: Mapped[str | None] = mapped_column(String(64))
    break_glass_reason: Mapped[str | None] = mapped_column(Text)
    revoked_at: Mapped[datetime | None]
    revoked_by: Mapped[str | None] = mapped_column(Text)
    # After a break-glass: the review ("open", "acknowledged", "disputed") and its message.
    review_status: Mapped[str | None] = mapped_column(String(16))
    review_message_row: Mapped[int | None] = mapped_column(BigInteger)
    # Votes do not render the cards: they set cards_due_at, and the card worker re-renders
    # (at most once per interval after cards_rendered_at; Telegram paces the edits anyway).
    cards_due_at: Mapped[datetime | None]
    cards_rendered_at: Mapped[datetime | None]
    reason: Mapped[str | None] = mapped_column(Text)
    warned_at: Mapped[datetime | None]  # the one expiry warning was posted
    # Every vote inserted (an unconfirmed approval withdrawn stays counted: an upper bound is
    # all the plain vote needs), and requested_by as bot.votes.requesters compares it.
    votes_cast: Mapped[int] = mapped_column(Integer, server_default="0")
    requester_key: Mapped[str | None] = mapped_column(Text)


class TrustRecord(Base):
    """Per team and action pattern: approvals that went well in a row, and the totals."""

    __tablename__ = "trust_records"
    team_id: Mapped[int] = mapped_column(
        ForeignKey("teams.id", ondelete="CASCADE"), primary_key=True
    )
    pattern: Mapped[str] = mapped_column(Text, primary_key=True)
    score: Mapped[int] = mapped_column(Integer, server_default="0")
    total_approvals: Mapped[int] = mapped_column(Integer, server_default="0")
    total_rejections: Mapped[int] = mapped_column(Integer, server_default="0")
    last_approver: Mapped[str | None] = mapped_column(Text)
    last_approved_at: Mapped[datetime | None]
    last_rejecter: Mapped[str | None] = mapped_column(Text)
    last_rejected_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = _now()
    updated_at: Mapped[datetime] = _now()


class BreakGlassReview(Base):
    """An approver's verdict on a break-glass afterwards: acknowledged or disputed."""

    __tablename__ = "break_glass_reviews"
    __table_args__ = (CheckConstraint("verdict IN ('ack','dispute')", name="verdict"),)
    request_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("approval_requests.id", ondelete="CASCADE"), primary_key=True
    )
    voter_telegram_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    voter_name: Mapped[str] = mapped_column(String(128))
    verdict: Mapped[str] = mapped_column(String(8))
    created_at: Mapped[datetime] = _now()


class TotpSecret(Base):
    """An approver's TOTP secret for step-up, sealed (bot.totp), and its wrong-code lock."""

    __tablename__ = "totp_secrets"
    telegram_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    kid: Mapped[str] = mapped_column(String(16))
    sealed: Mapped[bytes] = mapped_column(LargeBinary)
    failures: Mapped[int] = mapped_column(Integer, server_default="0")
    locked_until: Mapped[datetime | None]
    created_at: Mapped[datetime] = _now()


class Vote(Base):
    __tablename__ = "votes"
    __table_args__ = (
        UniqueConstraint("request_id", "voter_telegram_id", name="uq_votes_request_voter"),
        CheckConstraint("decision IN ('approve','reject')", name="decision"),
    )
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    request_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("approval_requests.id", ondelete="CASCADE")
    )
    voter_telegram_id: Mapped[int] = mapped_column(BigInteger)
    voter_name: Mapped[str] = mapped_column(String(128))
    decision: Mapped[str] = mapped_column(String(8))
    chat_id: Mapped[int | None] = mapped_column(BigInteger)
    message_id: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = _now()
    # Given after the tap, by a ForceReply answer (bot.approvals.reasons), never in the vote.
    reason: Mapped[str | None] = mapped_column(Text)
    # Under a level's step_up: when the voter confirmed this approval in a private chat.
    confirmed_at: Mapped[datetime | None]


class TelegramMessage(Base):
    """One bot message as we want it to look (text/markup/version) and as last delivered."""

    __tablename__ = "telegram_messages"
    __table_args__ = (
        Index(
            "uq_telegram_messages_chat_message",
            "chat_id",
            "message_id",
            unique=True,
            postgresql_where=text("message_id IS NOT NULL"),
        ),
        Index("ix_telegram_messages_approval", "approval_id"),
        Index("ix_telegram_messages_alert", "alert_id"),
    )
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    chat_id: Mapped[int] = mapped_column(BigInteger)
    message_id: Mapped[int | None] = mapped_column(BigInteger)
    purpose: Mapped[str] = mapped_column(String(32))
    approval_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("approval_requests.id", ondelete="SET NULL")
    )
    alert_id: Mapped[int | None] = mapped_column(ForeignKey("alerts.id", ondelete="SET NULL"))
    text: Mapped[str] = mapped_column(Text)
    reply_markup: Mapped[Json | None] = mapped_column(JSONB)
    version: Mapped[int] = mapped_column(Integer, server_default="1")
    sent_version: Mapped[int] = mapped_column(Integer, server_default="0")
    sent_text: Mapped[str | None] = mapped_column(Text)
    sent_markup: Mapped[Json | None] = mapped_column(JSONB)
    status: Mapped[str] = mapped_column(String(16), server_default="pending")
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = _now()
    updated_at: Mapped[datetime] = _now()
    sent_at: Mapped[datetime | None]
    thread_id: Mapped[int | None] = mapped_column(BigInteger)  # a forum topic
    reply_to: Mapped[int | None] = mapped_column(BigInteger)  # a Telegram message id


class Question(Base):
    """A question put to one person by ForceReply; their reply goes to the handler of `kind`."""

    __tablename__ = "questions"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    message_row_id: Mapped[int] = mapped_column(
        ForeignKey("telegram_messages.id", ondelete="CASCADE"), unique=True
    )
    chat_id: Mapped[int] = mapped_column(BigInteger)
    asked_telegram_id: Mapped[int] = mapped_column(BigInteger)
    subject: Mapped[Json] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
    created_at: Mapped[datetime] = _now()
    expires_at: Mapped[datetime]
    answered_at: Mapped[datetime | None]
    answer: Mapped[str | None] = mapped_column(Text)


class PrivateChat(Base):
    """Whether the bot may write to a person: Telegram refuses until they open the chat."""

    __tablename__ = "private_chats"
    __table_args__ = (CheckConstraint("state IN ('open', 'not_started', 'blocked')", name="state"),)
    telegram_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    state: Mapped[str] = mapped_column(String(16))
    updated_at: Mapped[datetime] = _now()


class OutboxItem(Base):
    """One Telegram call to make, written in the transaction of the change that causes it."""

    __tablename__ = "outbox"
    __table_args__ = (
        # Pending syncs of the same message coalesce: the sender reads the latest content.
        Index(
            "uq_outbox_pending_message",
            "telegram_message_id",
            unique=True,
            postgresql_where=text("status = 'pending' AND telegram_message_id IS NOT NULL"),
        ),
        Index(
            "ix_outbox_due",
            "priority",
            "id",
            postgresql_where=text("status IN ('pending','sending')"),
        ),
        # Each chat's queue in send order: the sender reads only the head row of every chat.
        Index(
            "ix_outbox_chat_queue",
            "chat_id",
            "priority",
            "id",
            postgresql_where=text("status IN ('pending','sending')"),
        ),
        CheckConstraint("status IN ('pending','sending','done','dead')", name="status"),
    )
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    priority: Mapped[int] = mapped_column(SmallInteger)
    kind: Mapped[str] = mapped_column(String(32))
    chat_id: Mapped[int | None] = mapped_column(BigInteger)
    method: Mapped[str] = mapped_column(String(64))
    payload: Mapped[Json] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
    telegram_message_id: Mapped[int | None] = mapped_column(
        ForeignKey("telegram_messages.id", ondelete="CASCADE")
    )
    status: Mapped[str] = mapped_column(String(16), server_default="pending")
    attempts: Mapped[int] = mapped_column(Integer, server_default="0")
    next_attempt_at: Mapped[datetime] = _now()
    claimed_until: Mapped[datetime | None]
    claimed_by: Mapped[str | None] = mapped_column(String(64))
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = _now()
    done_at: Mapped[datetime | None]


class InboundUpdate(Base):
    __tablename__ = "inbound_updates"
    __table_args__ = (
        Index("ix_inbound_updates_pending", "id", postgresql_where=text("status = 'pending'")),
    )
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    # Unique with bounded retention: Telegram's ids restart after a week of silence.
    update_id: Mapped[int] = mapped_column(BigInteger, unique=True)
    payload: Mapped[Json] = mapped_column(JSONB)
    status: Mapped[str] = mapped_column(String(16), server_default="pending")
    attempts: Mapped[int] = mapped_column(Integer, server_default="0")
    last_error: Mapped[str | None] = mapped_column(Text)
    received_at: Mapped[datetime] = _now()
    processed_at: Mapped[datetime | None]


class Xid8(UserDefinedType[int]):
    """PostgreSQL's 64-bit transaction id (pg_current_xact_id())."""

    cache_ok = True

    def get_col_spec(self, **kw: Any) -> str:
        return "xid8"


class AuditEntry(Base):
    """Append-only: DELETE and TRUNCATE are refused by trigger and by grants, and so is UPDATE
    except the sealer's one setting of seq/prev_hash/hash (migration 0011)."""

    __tablename__ = "audit_log"
    __table_args__ = (
        Index("ix_audit_log_approval", "approval_id"),
        Index("ix_audit_log_event_at", "event", "at"),
        Index("ix_audit_log_chain", "xid", "id"),
        {"postgresql_with": {"fillfactor": 70}},
    )
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    at: Mapped[datetime] = _now()
    event: Mapped[str] = mapped_column(String(64))
    actor: Mapped[str | None] = mapped_column(Text)
    actor_telegram_id: Mapped[int | None] = mapped_column(BigInteger)
    team_id: Mapped[int | None] = mapped_column(Integer)
    approval_id: Mapped[uuid.UUID | None]
    alert_id: Mapped[int | None] = mapped_column(BigInteger)
    chat_id: Mapped[int | None] = mapped_column(BigInteger)
    detail: Mapped[Json] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
    xid: Mapped[int] = mapped_column(Xid8, server_default=func.pg_current_xact_id())
    seq: Mapped[int | None] = mapped_column(BigInteger)
    prev_hash: Mapped[bytes | None] = mapped_column(BYTEA)
    hash: Mapped[bytes | None] = mapped_column(BYTEA)


class AuditCheckpoint(Base):
    """A signed chain head (append-only like the log)."""

    __tablename__ = "audit_checkpoints"
    __table_args__ = (Index("ix_audit_checkpoints_seq", "seq"),)
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger)
    hash: Mapped[bytes] = mapped_column(BYTEA)
    signed_at: Mapped[datetime]
    key_id: Mapped[str] = mapped_column(Text)
    signature: Mapped[bytes] = mapped_column(BYTEA)
    created_at: Mapped[datetime] = _now()


class ApprovalToken(Base):
    __tablename__ = "approval_tokens"
    jti: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    # One token per approved request, minted once.
    request_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("approval_requests.id", ondelete="CASCADE"), unique=True
    )
    kid: Mapped[str] = mapped_column(String(32))
    payload_sha256: Mapped[str] = mapped_column(String(64))
    token: Mapped[str] = mapped_column(Text)
    issued_at: Mapped[datetime] = _now()
    expires_at: Mapped[datetime]


class TokenRedemption(Base):
    """The authority for single use: a jti can be inserted here once."""

    __tablename__ = "token_redemptions"
    jti: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("approval_tokens.jti", ondelete="CASCADE"), primary_key=True
    )
    request_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("approval_requests.id"))
    redeemed_by: Mapped[str | None] = mapped_column(String(128))
    redeemed_at: Mapped[datetime] = _now()


class CallbackDelivery(Base):
    """A decision POSTed to the requester's callback_url, retried with backoff."""

    __tablename__ = "callback_deliveries"
    __table_args__ = (
        Index(
            "ix_callback_deliveries_due",
            "next_attempt_at",
            postgresql_where=text("status = 'pending'"),
        ),
    )
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    approval_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("approval_requests.id", ondelete="CASCADE")
    )
    url: Mapped[str] = mapped_column(Text)
    body: Mapped[Json] = mapped_column(JSONB)
    status: Mapped[str] = mapped_column(String(16), server_default="pending")
    attempts: Mapped[int] = mapped_column(Integer, server_default="0")
    next_attempt_at: Mapped[datetime] = _now()
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = _now()
    done_at: Mapped[datetime | None]


class Alert(Base):
    __tablename__ = "alerts"
    __table_args__ = (
        UniqueConstraint("team_id", "fingerprint", "occurrence", name="uq_alerts_occurrence"),
        # One firing occurrence per team and fingerprint: repeats land on it.
        Index(
            "uq_alerts_firing",
            "team_id",
            "fingerprint",
            unique=True,
            postgresql_where=text("status = 'firing'"),
        ),
        CheckConstraint("status IN ('firing','resolved')", name="status"),
        # The card refresh worker's queue: alerts whose cards show stale counts.
        Index(
            "ix_alerts_card_due",
            "card_due_at",
            postgresql_where=text("card_due_at IS NOT NULL"),
        ),
        Index(
            "ix_alerts_silenced_firing",
            "team_id",
            postgresql_where=text("silenced AND status = 'firing'"),
        ),
        # A new alert finds its group among the firing alerts with its group key.
        Index(
            "ix_alerts_group_firing",
            "team_id",
            "group_key",
            postgresql_where=text("status = 'firing'"),
        ),
        Index("ix_alerts_group", "group_id"),
    )
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id"))
    fingerprint: Mapped[str] = mapped_column(String(256))
    occurrence: Mapped[int] = mapped_column(Integer, server_default="1")
    status: Mapped[str] = mapped_column(String(16), server_default="firing")
    source: Mapped[str] = mapped_column(String(32))
    title: Mapped[str] = mapped_column(Text)
    severity: Mapped[str | None] = mapped_column(String(32))
    labels: Mapped[Json] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
    annotations: Mapped[Json] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
    url: Mapped[str | None] = mapped_column(Text)
    incident_id: Mapped[str | None] = mapped_column(String(256))
    starts_at: Mapped[datetime | None]
    ends_at: Mapped[datetime | None]
    hit_count: Mapped[int] = mapped_column(Integer, server_default="1")
    first_seen_at: Mapped[datetime] = _now()
    last_seen_at: Mapped[datetime] = _now()
    resolved_at: Mapped[datetime | None]
    resolved_by: Mapped[str | None] = mapped_column(String(128))
    silenced: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    last_card_edit_at: Mapped[datetime | None]
    # When the cards must next be re-rendered (repeats are coalesced into one edit).
    card_due_at: Mapped[datetime | None]
    # Source context shown on the card: groupKey, truncatedAlerts, Grafana values and links.
    context: Mapped[Json] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
    # The team's alert_group_by labels of this alert, and its group: the id of the group's
    # first alert, whose card every member shares.
    group_key: Mapped[str | None] = mapped_column(Text)
    group_id: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = _now()
    updated_at: Mapped[datetime] = _now()


class AlertDigest(Base):
    """A chat's storm digest: one card standing for the groups that arrived during a storm."""

    __tablename__ = "alert_digests"
    __table_args__ = (
        Index(
            "uq_alert_digests_open",
            "chat_id",
            unique=True,
            postgresql_where=text("finalised_at IS NULL"),
        ),
    )
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    chat_id: Mapped[int] = mapped_column(BigInteger)
    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id"))
    message_row_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("telegram_messages.id", ondelete="SET NULL")
    )
    opened_at: Mapped[datetime] = _now()
    # Since when the chat's backlog has stayed under budget (None: it is over it now).
    calm_since: Mapped[datetime | None]
    finalised_at: Mapped[datetime | None]


class AlertDigestGroup(Base):
    __tablename__ = "alert_digest_groups"
    __table_args__ = (Index("ix_alert_digest_groups_group", "group_id"),)
    digest_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("alert_digests.id", ondelete="CASCADE"), primary_key=True
    )
    group_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)


class AlertAcknowledgement(Base):
    __tablename__ = "alert_acknowledgements"
    __table_args__ = (UniqueConstraint("alert_id", "telegram_id", name="uq_alert_ack_who"),)
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    alert_id: Mapped[int] = mapped_column(ForeignKey("alerts.id", ondelete="CASCADE"))
    telegram_id: Mapped[int] = mapped_column(BigInteger)
    name: Mapped[str] = mapped_column(String(128))
    at: Mapped[datetime] = _now()


class Silence(Base):
    __tablename__ = "silences"
    __table_args__ = (
        Index("ix_silences_team_fingerprint", "team_id", "fingerprint"),
        Index(
            "ix_silences_am_due", "id", postgresql_where=text("am_status IN ('create','expire')")
        ),
    )
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id"))
    fingerprint: Mapped[str] = mapped_column(String(256))
    matchers: Mapped[Json] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
    created_by_id: Mapped[int] = mapped_column(BigInteger)
    created_by_name: Mapped[str] = mapped_column(String(128))
    starts_at: Mapped[datetime] = _now()
    ends_at: Mapped[datetime]
    cancelled_at: Mapped[datetime | None]
    cancelled_by_id: Mapped[int | None] = mapped_column(BigInteger)
    alertmanager_silence_id: Mapped[str | None] = mapped_column(String(64))
    # Alertmanager sync, done outside any transaction: create/expire pending, then done/failed.
    am_status: Mapped[str | None] = mapped_column(String(16))
    am_error: Mapped[str | None] = mapped_column(Text)
    am_claimed_until: Mapped[datetime | None]
    created_at: Mapped[datetime] = _now()
    # A maintenance window (fingerprint MAINTENANCE) whose end was summarised in the chats.
    summarized_at: Mapped[datetime | None]


class Incident(Base):
    """An incident a team runs in its chat; its every change adds a timeline row with it."""

    __tablename__ = "incidents"
    __table_args__ = (
        Index("ix_incidents_team_created", "team_id", "created_at", "id"),
        # Ingest looks up a team's open incidents for every alert batch: a small partial index.
        Index(
            "ix_incidents_open",
            "team_id",
            postgresql_where=text("status IN ('investigating','mitigating')"),
        ),
        Index(
            "ix_incidents_card_due",
            "card_due_at",
            postgresql_where=text("card_due_at IS NOT NULL"),
        ),
        CheckConstraint(
            "status IN ('investigating','mitigating','resolved','closed')", name="status"
        ),
        CheckConstraint("severity IN ('P0','P1','P2','P3')", name="severity"),
    )
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id"))
    title: Mapped[str] = mapped_column(Text)
    severity: Mapped[str] = mapped_column(String(2))
    status: Mapped[str] = mapped_column(String(16), server_default="investigating")
    escalated_at: Mapped[datetime | None]
    commander_telegram_id: Mapped[int | None] = mapped_column(BigInteger)
    commander_name: Mapped[str | None] = mapped_column(String(128))
    services: Mapped[list[Any]] = mapped_column(JSONB, server_default=text("'[]'::jsonb"))
    # The grouping labels' values (e.g. {"service": "payments"}): matching alerts attach.
    group_labels: Mapped[Json] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
    declared_by: Mapped[str] = mapped_column(Text)
    first_alert_at: Mapped[datetime | None]
    acknowledged_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = _now()
    updated_at: Mapped[datetime] = _now()
    resolved_at: Mapped[datetime | None]
    closed_at: Mapped[datetime | None]
    # When the cards must next be re-rendered (alert counts and approvals change often).
    card_due_at: Mapped[datetime | None]


class IncidentCard(Base):
    """An incident's card in one chat, and whether it is pinned there."""

    __tablename__ = "incident_cards"
    __table_args__ = (Index("ix_incident_cards_incident", "incident_id"),)
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    incident_id: Mapped[str] = mapped_column(ForeignKey("incidents.id", ondelete="CASCADE"))
    message_row_id: Mapped[int] = mapped_column(
        ForeignKey("telegram_messages.id", ondelete="CASCADE"), unique=True
    )
    chat_id: Mapped[int] = mapped_column(BigInteger)
    pinned: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))


class TimelineEvent(Base):
    """One line of an incident's timeline, written in the transaction of what it records."""

    __tablename__ = "timeline_events"
    __table_args__ = (
        Index("ix_timeline_events_incident", "incident_id", "id"),
        # One line per alert attached; its repeats show as the alert's hit count on it.
        Index(
            "uq_timeline_events_attached",
            "incident_id",
            "alert_id",
            unique=True,
            postgresql_where=text("kind = 'alert.attached'"),
        ),
    )
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    incident_id: Mapped[str] = mapped_column(ForeignKey("incidents.id", ondelete="CASCADE"))
    at: Mapped[datetime] = _now()
    kind: Mapped[str] = mapped_column(String(32))
    actor: Mapped[str | None] = mapped_column(Text)
    actor_telegram_id: Mapped[int | None] = mapped_column(BigInteger)
    count: Mapped[int] = mapped_column(Integer, server_default="1")
    detail: Mapped[Json] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
    alert_id: Mapped[int | None] = mapped_column(BigInteger)
    approval_id: Mapped[uuid.UUID | None]
    # Declared last: the name shadows sqlalchemy's text() in the class body.
    text: Mapped[str] = mapped_column(Text)
