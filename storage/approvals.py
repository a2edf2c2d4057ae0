"""Approval requests and their cards (frozen records); votes and tokens have their own modules."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Interval, Table, func, literal_column, select, tuple_, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from storage.db import raw
from storage.models import (
    ApprovalRequest,
    AuditEntry,
    TelegramMessage,
    Vote,
)

_R = cast(Table, ApprovalRequest.__table__)
# The request as the domain sees it: the card worker's and the plain vote's bookkeeping
# columns stay here.
_BOOKKEEPING = ("cards_due_at", "cards_rendered_at", "votes_cast", "requester_key")
_COLUMNS = tuple(c for c in _R.c if c.name not in _BOOKKEEPING)


@dataclass(frozen=True, slots=True)
class RequestRecord:
    id: uuid.UUID
    team_id: int
    action: str
    target: str
    description: str | None
    risk_level: str
    approval_level: str
    required_approvals: int
    reject_threshold: int
    status: str
    requested_by: str
    requester_telegram_id: int | None
    fingerprint: str | None
    hit_count: int
    last_seen_at: datetime
    incident_id: str | None
    blast_radius: dict[str, Any] | None
    dry_run_checks: list[Any] | None
    metadata: dict[str, Any] | None
    idempotency_key: str | None
    body_sha256: str | None
    callback_url: str | None
    decided_by: list[Any] | None
    escalated_at: datetime | None
    result_success: bool | None
    result_detail: str | None
    result_at: datetime | None
    created_at: datetime
    updated_at: datetime
    expires_at: datetime
    decided_at: datetime | None
    action_pattern: str | None = None
    trust_score: int = 0
    auto_rule: str | None = None
    break_glass_reason: str | None = None
    revoked_at: datetime | None = None
    revoked_by: str | None = None
    review_status: str | None = None
    review_message_row: int | None = None
    reason: str | None = None  # the requester's reason, given by ForceReply (bot.questions)
    warned_at: datetime | None = None

    @property
    def pending(self) -> bool:
        return self.status == "pending"


@dataclass(frozen=True, slots=True)
class VoteContext:
    """A request locked for a vote (or a card refresh), its cards, and the database's clock."""

    request: RequestRecord
    cards: tuple[tuple[int, int], ...]  # (telegram_messages.id, chat id) of every card
    db_now: datetime


def _request(row: Any) -> RequestRecord:
    m = row._mapping
    return RequestRecord(*(m[c] for c in _COLUMNS))


async def get(session: AsyncSession, request_id: uuid.UUID) -> RequestRecord | None:
    row = (await session.execute(select(*_COLUMNS).where(_R.c.id == request_id))).first()
    return _request(row) if row else None


async def by_idempotency(session: AsyncSession, team_id: int, key: str) -> RequestRecord | None:
    row = (
        await session.execute(
            select(*_COLUMNS).where(_R.c.team_id == team_id, _R.c.idempotency_key == key)
        )
    ).first()
    return _request(row) if row else None


@dataclass(frozen=True, slots=True)
class Merge:
    """A fingerprint's pending request: `merged` when it asks for the same, else `clash`."""

    merged: RequestRecord | None = None
    clash: uuid.UUID | None = None


async def merge_fingerprint(
    session: AsyncSession,
    team_id: int,
    fingerprint: str,
    *,
    action: str,
    target: str,
    risk_level: str,
) -> Merge | None:
    """Count a repeat on the live pending request with this fingerprint, if it asks for the
    same action on the same target at the same risk; else name the one that differs.

    None when no live pending request has the fingerprint.
    """
    live = (
        _R.c.team_id == team_id,
        _R.c.fingerprint == fingerprint,
        _R.c.status == "pending",
        _R.c.expires_at > func.now(),
    )
    same = (_R.c.action == action, _R.c.target == target, _R.c.risk_level == risk_level)
    row = (
        await session.execute(
            update(_R)
            .where(*live, *same)
            .values(hit_count=_R.c.hit_count + 1, last_seen_at=func.now(), updated_at=func.now())
            .returning(*_COLUMNS)
        )
    ).first()
    if row is not None:
        return Merge(merged=_request(row))
    # Only a request that differs: one asking for the same, committed since the update, is
    # found by the caller's next round, which merges into it.
    clash = await session.scalar(
        select(_R.c.id).where(
            *live, tuple_(_R.c.action, _R.c.target, _R.c.risk_level) != (action, target, risk_level)
        )
    )
    return Merge(clash=clash) if clash is not None else None


async def insert_request(
    session: AsyncSession, values: dict[str, Any], ttl_seconds: int
) -> RequestRecord | None:
    """None when the idempotency key or the pending fingerprint was taken concurrently.

    expires_at comes from the database's clock, the one every expiry check uses.
    """
    expires = func.now() + func.make_interval(0, 0, 0, 0, 0, 0, float(ttl_seconds))
    row = (
        await session.execute(
            pg_insert(_R)
            .values(**values, expires_at=expires)
            .on_conflict_do_nothing()
            .returning(*_COLUMNS)
        )
    ).first()
    return _request(row) if row else None


async def list_for_team(
    session: AsyncSession,
    team_id: int,
    status: str | None,
    limit: int = 100,
    *,
    before: tuple[datetime, uuid.UUID] | None = None,
) -> list[RequestRecord]:
    """The team's requests newest first, those older than `before` (created_at, id) if given:
    keyset pagination, stable while requests are added."""
    stmt = select(*_COLUMNS).where(_R.c.team_id == team_id)
    if status is not None:
        stmt = stmt.where(_R.c.status == status)
    if before is not None:
        stmt = stmt.where(tuple_(_R.c.created_at, _R.c.id) < before)
    order = (_R.c.created_at.desc(), _R.c.id.desc())
    rows = await session.execute(stmt.order_by(*order).limit(limit))
    return [_request(r) for r in rows]


# The request `r` as the first columns of a statement run on the raw asyncpg connection, read
# back by _request_from_row.
_REQUEST_SQL = ", ".join(f"r.{c.name}" for c in _COLUMNS)
_N = len(_COLUMNS)


def _request_from_row(row: Any) -> RequestRecord:
    """A record from an asyncpg row whose first columns are _COLUMNS (json already decoded)."""
    return RequestRecord(*(row[i] for i in range(_N)))


# A request `r` as a VoteContext: its columns, the database's clock and every card of it
# ([[row id, chat id], ...]), for statements run on the raw asyncpg connection.
_CONTEXT = f"""{_REQUEST_SQL}, now() AS db_now,
           (SELECT json_agg(json_build_array(tm2.id, tm2.chat_id) ORDER BY tm2.id)
              FROM telegram_messages AS tm2 WHERE tm2.approval_id = r.id) AS cards"""  # noqa: S608


def tapped_card(chat: str, message: str) -> str:
    """SQL: the tapped message (`message` in chat `chat`, parameter references) may carry a
    vote on request `r`. The request must have a card in the chat, and the tapped message must
    not be anything else we sent there. A message we never stored is a card whose id the
    sender has not recorded yet (the tap raced it), or a duplicate card (Telegram posted a
    card whose send timed out on our side, and the retry posted it again): both map to the
    request, and votes count once per person. The vote's transaction and the plain vote
    (storage.votes) check it alike."""
    return f"""EXISTS (SELECT 1 FROM telegram_messages AS tm
                    WHERE tm.approval_id = r.id AND tm.chat_id = {chat})
       AND NOT EXISTS (SELECT 1 FROM telegram_messages AS tm
                        WHERE tm.chat_id = {chat} AND tm.message_id = {message}
                          AND tm.approval_id IS DISTINCT FROM r.id)"""  # noqa: S608


# The request a tapped button names (its tag, checked before, proves the request and the
# chat) as a VoteContext, prepared once per connection.
_LOCK_FOR_VOTE = f"""
    SELECT {_CONTEXT}
      FROM approval_requests AS r
     WHERE r.id = $1 AND {tapped_card("$2", "$3")}
       FOR NO KEY UPDATE OF r
"""  # noqa: S608 (column names from our own table)


async def lock_for_vote(
    session: AsyncSession, approval_id: uuid.UUID, chat_id: int, message_id: int
) -> VoteContext | None:
    """The request behind a tapped button, row-locked so votes on it are counted one at a time;
    None when the tapped message is not one of its cards in that chat (see _LOCK_FOR_VOTE).

    The lock is what makes the last voter see every earlier vote (READ COMMITTED takes a new
    snapshot per statement): without it two concurrent final votes could each miss the other.
    """
    row = await (await raw(session)).fetchrow(_LOCK_FOR_VOTE, approval_id, chat_id, message_id)
    return None if row is None else _context(row)


def _context(row: Any) -> VoteContext:
    """A VoteContext from a row selected as _CONTEXT."""
    cards = tuple((int(c[0]), int(c[1])) for c in row["cards"] or ())
    return VoteContext(_request_from_row(row), cards, row["db_now"])


async def lock(
    session: AsyncSession, request_id: uuid.UUID
) -> tuple[RequestRecord, datetime] | None:
    row = (
        await session.execute(
            select(*_COLUMNS, func.now().label("db_now"))
            .where(_R.c.id == request_id)
            .with_for_update(key_share=True)
        )
    ).first()
    return (_request(row), row.db_now) if row else None


_TRANSITION = f"""
    UPDATE approval_requests AS r
       SET status = $2, decided_by = $3::jsonb, decided_at = now(), updated_at = now()
     WHERE r.id = $1 AND r.status = 'pending' AND (NOT $4 OR r.expires_at > now())
    RETURNING {_REQUEST_SQL}
"""  # noqa: S608 (column names from our own table)


async def transition(
    session: AsyncSession,
    request_id: uuid.UUID,
    status: str,
    *,
    decided_by: list[Any] | None = None,
    require_live: bool = True,
) -> RequestRecord | None:
    """pending -> status, at most once; None if someone else got there first.

    With require_live the database's clock must still be before expires_at.
    """
    row = await (await raw(session)).fetchrow(
        _TRANSITION,
        request_id,
        status,
        json.dumps(decided_by),  # None is JSON null, as the ORM column stored it
        require_live,
    )
    return _request_from_row(row) if row else None


async def mark_policy(
    session: AsyncSession,
    request_id: uuid.UUID,
    *,
    auto_rule: str | None = None,
    break_glass_reason: str | None = None,
) -> RequestRecord:
    """Note on a just-decided request which auto_approve rule or break-glass decided it."""
    row = (
        await session.execute(
            update(_R)
            .where(_R.c.id == request_id)
            .values(auto_rule=auto_rule, break_glass_reason=break_glass_reason)
            .returning(*_COLUMNS)
        )
    ).one()
    return _request(row)


async def revoke(session: AsyncSession, request_id: uuid.UUID, actor: str) -> RequestRecord | None:
    """Revoke an auto-approved request once; None if it is not one, or already revoked."""
    row = (
        await session.execute(
            update(_R)
            .where(
                _R.c.id == request_id,
                _R.c.status == "approved",
                _R.c.auto_rule.is_not(None),
                _R.c.revoked_at.is_(None),
            )
            .values(revoked_at=func.now(), revoked_by=actor, updated_at=func.now())
            .returning(*_COLUMNS)
        )
    ).first()
    return _request(row) if row else None


async def set_result(
    session: AsyncSession, request_id: uuid.UUID, success: bool, detail: str
) -> RequestRecord | None:
    """Store the executor's report once, on an approved request."""
    row = (
        await session.execute(
            update(_R)
            .where(_R.c.id == request_id, _R.c.status == "approved", _R.c.result_at.is_(None))
            .values(
                result_success=success,
                result_detail=detail,
                result_at=func.now(),
                updated_at=func.now(),
            )
            .returning(*_COLUMNS)
        )
    ).first()
    return _request(row) if row else None


# Pending requests whose cards are due a refresh, marked rendered and returned with their
# cards and the database's clock. The update's row lock lasts until the renders commit: a vote
# on one of them waits (so a render never overwrites a newer one, and the vote then schedules
# the next refresh) and other workers skip them. Keep batches small for that reason.
_CLAIM_DUE_CARDS = f"""
    WITH due AS (
        SELECT id FROM approval_requests
         WHERE status = 'pending' AND cards_due_at <= now()
         ORDER BY cards_due_at
         LIMIT $1
           FOR NO KEY UPDATE SKIP LOCKED
    )
    UPDATE approval_requests AS r
       SET cards_due_at = NULL, cards_rendered_at = now()
      FROM due WHERE r.id = due.id
    RETURNING {_CONTEXT}
"""  # noqa: S608 (column names from our own table)


async def claim_due_cards(session: AsyncSession, limit: int) -> list[VoteContext]:
    return [_context(row) for row in await (await raw(session)).fetch(_CLAIM_DUE_CARDS, limit)]


async def claim_expired(session: AsyncSession, limit: int = 50) -> list[RequestRecord]:
    """Pending requests past their expiry, locked; other processes skip them."""
    rows = await session.execute(
        select(*_COLUMNS)
        .where(_R.c.status == "pending", _R.c.expires_at <= func.now())
        .order_by(_R.c.expires_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return [_request(r) for r in rows]


async def count_pending(session: AsyncSession, team_id: int, up_to: int) -> int:
    """The team's live pending requests, counted up to `up_to` (a cap needs no more)."""
    live = (
        select(_R.c.id)
        .where(_R.c.team_id == team_id, _R.c.status == "pending", _R.c.expires_at > func.now())
        .limit(up_to)
        .subquery()
    )
    return int((await session.execute(select(func.count()).select_from(live))).scalar_one())


async def claim_escalations(
    session: AsyncSession, team_id: int, risk_level: str, after_seconds: int, limit: int = 20
) -> list[RequestRecord]:
    rows = await session.execute(
        select(*_COLUMNS)
        .where(
            _R.c.team_id == team_id,
            _R.c.risk_level == risk_level,
            _R.c.status == "pending",
            _R.c.escalated_at.is_(None),
            _R.c.expires_at > func.now(),
            _R.c.created_at
            <= func.now() - func.make_interval(0, 0, 0, 0, 0, 0, float(after_seconds)),
        )
        .order_by(_R.c.created_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return [_request(r) for r in rows]


async def claim_warnings(
    session: AsyncSession,
    team_id: int,
    risk_level: str,
    warn_seconds: int | None,
    limit: int = 20,
) -> list[RequestRecord]:
    """Pending requests of a level that enter their warning window, marked warned (once),
    locked; other processes skip them. The window is `warn_seconds` before expiry, or by
    default ten minutes or a fifth of the request's lifetime, whichever is shorter."""
    fifth = literal_column(
        "(approval_requests.expires_at - approval_requests.created_at) / 5", Interval()
    )
    window = (
        func.make_interval(0, 0, 0, 0, 0, 0, float(warn_seconds))
        if warn_seconds is not None
        else func.least(func.make_interval(0, 0, 0, 0, 0, 0, 600.0), fifth)
    )
    due = (
        select(_R.c.id)
        .where(
            _R.c.team_id == team_id,
            _R.c.risk_level == risk_level,
            _R.c.status == "pending",
            _R.c.warned_at.is_(None),
            _R.c.expires_at > func.now(),
            _R.c.expires_at - func.now() <= window,
        )
        .order_by(_R.c.expires_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )
    rows = await session.execute(
        update(_R).where(_R.c.id.in_(due)).values(warned_at=func.now()).returning(*_COLUMNS)
    )
    return [_request(r) for r in rows]


async def mark_escalated(session: AsyncSession, request_id: uuid.UUID) -> None:
    await session.execute(update(_R).where(_R.c.id == request_id).values(escalated_at=func.now()))


async def cards_of(session: AsyncSession, approval_id: uuid.UUID) -> list[tuple[int, int]]:
    """(telegram_messages.id, chat id) of every card of a request."""
    rows = await session.execute(
        select(TelegramMessage.id, TelegramMessage.chat_id)
        .where(TelegramMessage.approval_id == approval_id)
        .order_by(TelegramMessage.id)
    )
    return [(r.id, r.chat_id) for r in rows]


async def card_links(
    session: AsyncSession, approval_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, list[tuple[int, int]]]:
    """(chat id, message id) of every delivered card of these requests."""
    out: dict[uuid.UUID, list[tuple[int, int]]] = {a: [] for a in approval_ids}
    if not approval_ids:
        return out
    rows = await session.execute(
        select(TelegramMessage.approval_id, TelegramMessage.chat_id, TelegramMessage.message_id)
        .where(
            TelegramMessage.approval_id.in_(approval_ids),
            TelegramMessage.message_id.is_not(None),
        )
        .order_by(TelegramMessage.id)
    )
    for r in rows:
        out[r.approval_id].append((r.chat_id, r.message_id))
    return out


async def find_by_prefix(
    session: AsyncSession, team_id: int, prefix: str, limit: int = 2
) -> list[RequestRecord]:
    """The team's requests whose id starts with `prefix` (lowercase hex, no dashes).

    A uuid orders like its hex digits, so the prefix is the range from prefix+0…0 to prefix+f…f
    and the primary key's index answers it. `limit=2` is enough to tell unique from ambiguous.
    """
    low = uuid.UUID(prefix.ljust(32, "0"))
    high = uuid.UUID(prefix.ljust(32, "f"))
    rows = await session.execute(
        select(*_COLUMNS)
        .where(_R.c.id.between(low, high), _R.c.team_id == team_id)
        .order_by(_R.c.id)
        .limit(limit)
    )
    return [_request(r) for r in rows]


async def closing_actor(session: AsyncSession, approval_id: uuid.UUID, event: str) -> str | None:
    """The actor the audit log names for a request's closing event (e.g. approval.cancelled)."""
    return cast(
        str | None,
        await session.scalar(
            select(AuditEntry.actor)
            .where(AuditEntry.approval_id == approval_id, AuditEntry.event == event)
            .order_by(AuditEntry.id.desc())
            .limit(1)
        ),
    )


async def waiting_for_voter(
    session: AsyncSession, team_ids: Sequence[int], voter: int, limit: int
) -> list[RequestRecord]:
    """Live pending requests of these teams that `voter` has not voted on, soonest expiry
    first (whether they may vote at all, e.g. as the requester, is the caller's rule)."""
    voted = select(Vote.id).where(Vote.request_id == _R.c.id, Vote.voter_telegram_id == voter)
    rows = await session.execute(
        select(*_COLUMNS)
        .where(
            _R.c.team_id.in_(team_ids),
            _R.c.status == "pending",
            _R.c.expires_at > func.now(),
            ~voted.exists(),
        )
        .order_by(_R.c.expires_at)
        .limit(limit)
    )
    return [_request(r) for r in rows]


async def has_card_in(session: AsyncSession, approval_id: uuid.UUID, chat_id: int) -> bool:
    found = await session.scalar(
        select(TelegramMessage.id).where(
            TelegramMessage.approval_id == approval_id, TelegramMessage.chat_id == chat_id
        )
    )
    return found is not None
