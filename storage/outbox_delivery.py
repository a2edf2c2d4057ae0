"""The outbox sender's side: claiming due rows, recording what became of each one."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from storage.db import raw
from storage.models import OutboxItem, TelegramMessage


@dataclass(frozen=True, slots=True)
class SyncTarget:
    """A bot message as wanted (text/markup/version) and as last delivered."""

    id: int
    chat_id: int
    message_id: int | None
    text: str
    reply_markup: dict[str, Any] | None
    version: int
    sent_version: int
    sent_text: str | None
    sent_markup: dict[str, Any] | None
    thread_id: int | None = None
    reply_to: int | None = None

    @property
    def up_to_date(self) -> bool:
        return (
            self.message_id is not None
            and self.sent_text == self.text
            and self.sent_markup == self.reply_markup
        )


@dataclass(frozen=True, slots=True)
class ClaimedRow:
    id: int
    kind: str
    priority: int
    chat_id: int | None
    method: str
    payload: dict[str, Any]
    telegram_message_id: int | None
    attempts: int
    created_at: datetime
    target: SyncTarget | None


# The head of each chat's queue (strict order per chat: a later row never overtakes an earlier
# one that is in flight or waiting), plus chat-less rows (callback answers). Chats the bot was
# removed from are held back until it is added again. The chats with waiting rows are found by
# skipping through ix_outbox_chat_queue (one index probe per chat, however deep the queues
# are) and each one's head is that index's first entry for the chat. Each candidate chat gets
# a transaction-scoped advisory lock, so two senders never claim rows of one chat at once; the
# claim below runs as a new statement (a fresh snapshot) after the lock, so it sees any claim
# another sender committed before releasing the same lock.
# The one definition of a row ready to send, for the outbox row (or queue head) aliased `o`:
# pending and due, or claimed by a sender whose lease ran out.
_DUE = """((o.status = 'pending' AND o.next_attempt_at <= now())
          OR (o.status = 'sending' AND o.claimed_until < now()))"""
# ... and not in a chat the bot was removed from (held until it is added again).
_READY = f"""{_DUE}
          AND NOT EXISTS (SELECT 1 FROM chats c WHERE c.id = o.chat_id AND NOT c.active)"""  # noqa: S608
_HEADS = f"""
    WITH RECURSIVE chat_ids(chat_id) AS (
        (SELECT o.chat_id FROM outbox o
         WHERE o.status IN ('pending', 'sending') AND o.chat_id IS NOT NULL
         ORDER BY o.chat_id LIMIT 1)
        UNION ALL
        SELECT (SELECT o.chat_id FROM outbox o
                WHERE o.status IN ('pending', 'sending') AND o.chat_id > q.chat_id
                ORDER BY o.chat_id LIMIT 1)
        FROM chat_ids q WHERE q.chat_id IS NOT NULL
    ), due AS (
        SELECT o.id, o.chat_id, o.priority
        FROM chat_ids q
        CROSS JOIN LATERAL (
            SELECT o.id, o.chat_id, o.priority, o.status, o.next_attempt_at, o.claimed_until
            FROM outbox o
            WHERE o.status IN ('pending', 'sending') AND o.chat_id = q.chat_id
            ORDER BY o.priority, o.id
            LIMIT 1
        ) o
        WHERE q.chat_id IS NOT NULL AND {_READY}
          AND q.chat_id <> ALL($2::bigint[])
        UNION ALL
        (SELECT o.id, o.chat_id, o.priority FROM outbox o
         WHERE o.status IN ('pending', 'sending') AND o.chat_id IS NULL AND {_DUE}
         ORDER BY o.priority, o.id LIMIT $1)
    )
    SELECT d.id FROM (SELECT * FROM due ORDER BY priority, id LIMIT $1) d
    WHERE d.chat_id IS NULL OR pg_try_advisory_xact_lock(7170, hashtext(d.chat_id::text))
"""  # noqa: S608 (fixed fragments of our own)
# The same for one chat, whose sender has just finished its previous row.
_CHAT_HEAD = f"""
    SELECT d.id FROM (
        SELECT o.id
        FROM (
            SELECT o.id, o.chat_id, o.status, o.next_attempt_at, o.claimed_until
            FROM outbox o
            WHERE o.status IN ('pending', 'sending') AND o.chat_id = $1
            ORDER BY o.priority, o.id
            LIMIT 1
        ) o
        WHERE {_READY}
        LIMIT 1
    ) d
    WHERE pg_try_advisory_xact_lock(7170, hashtext($1::bigint::text))
"""  # noqa: S608 (fixed fragments of our own)

_CLAIM = f"""
    UPDATE outbox AS u
    SET status = 'sending', claimed_by = $1,
        claimed_until = now() + make_interval(secs => $2::double precision)
    WHERE u.id IN (
        SELECT o.id FROM outbox o
        WHERE o.id = ANY($3::bigint[]) AND {_DUE}
        FOR UPDATE SKIP LOCKED
    )
    AND (u.chat_id IS NULL OR NOT EXISTS (
        SELECT 1 FROM outbox p
        WHERE p.status IN ('pending', 'sending') AND p.chat_id = u.chat_id
          AND (p.priority, p.id) < (u.priority, u.id)
    ))
    RETURNING u.id, u.kind, u.priority, u.chat_id, u.method, u.payload,
              u.telegram_message_id, u.attempts, u.created_at
"""  # noqa: S608 (fixed fragments of our own)
# Work left for a draining sender: a row ready to send, or one a sender holds right now.
# On the raw connection only because it shares _READY with the claim statements.
_UNSETTLED = f"""
    SELECT EXISTS (SELECT 1 FROM outbox o WHERE o.status = 'sending' OR ({_READY}))
"""  # noqa: S608 (fixed fragments of our own)


_TARGETS = """
    SELECT id, chat_id, message_id, text, reply_markup, version, sent_version, sent_text,
           sent_markup, thread_id, reply_to
      FROM telegram_messages WHERE id = ANY($1::bigint[])
"""


async def claim_due(
    session: AsyncSession,
    *,
    instance: str,
    lease_seconds: float,
    limit: int,
    chat_id: int | None = None,
    skip_chats: Sequence[int] = (),
) -> list[ClaimedRow]:
    """Mark up to `limit` due rows 'sending' for this instance; commit before calling Telegram.

    Every chat's head row is considered, or only `chat_id`'s (a sender that has just finished
    a chat's row takes the next one at once). `skip_chats` are chats known to have no budget
    left yet: claiming their rows would only put them back.
    """
    db = await raw(session)
    if chat_id is None:
        heads = await db.fetch(_HEADS, limit, list(skip_chats))
    else:
        heads = await db.fetch(_CHAT_HEAD, chat_id)
    ids = [int(r[0]) for r in heads]
    if not ids:
        return []
    rows = await db.fetch(_CLAIM, instance, float(lease_seconds), ids)
    msg_ids = [int(r["telegram_message_id"]) for r in rows if r["telegram_message_id"] is not None]
    targets: dict[int, SyncTarget] = {}
    if msg_ids:
        for m in await db.fetch(_TARGETS, msg_ids):
            targets[m[0]] = SyncTarget(*m)
    out = [
        ClaimedRow(
            id=int(r["id"]),
            kind=r["kind"],
            priority=int(r["priority"]),
            chat_id=r["chat_id"],
            method=r["method"],
            payload=dict(r["payload"] or {}),
            telegram_message_id=r["telegram_message_id"],
            attempts=int(r["attempts"]),
            created_at=r["created_at"],
            target=targets.get(r["telegram_message_id"]) if r["telegram_message_id"] else None,
        )
        for r in rows
    ]
    out.sort(key=lambda c: (c.priority, c.id))
    return out


# The sender records every row it handled: fixed statements on the raw asyncpg connection.
_COMPLETE = """
    UPDATE outbox SET status = 'done', done_at = now(), claimed_until = NULL, last_error = NULL
     WHERE id = $1 AND status = 'sending' AND claimed_by = $2
    RETURNING id
"""
_RECORD_SENT = """
    UPDATE telegram_messages
       SET sent_version = greatest(sent_version, $2), sent_text = $3, sent_markup = $4::jsonb,
           status = 'sent', sent_at = now(), last_error = NULL,
           message_id = coalesce($5, message_id)
     WHERE id = $1
"""
_MINE_FOR_RELEASE = """
    SELECT telegram_message_id, attempts FROM outbox
     WHERE id = $1 AND status = 'sending' AND claimed_by = $2
       FOR UPDATE
"""
_FOLD_INTO_SIBLING = """
    UPDATE outbox
       SET next_attempt_at = least(next_attempt_at,
                                   now() + make_interval(secs => $2::double precision)),
           attempts = greatest(attempts, $3), last_error = $4
     WHERE telegram_message_id = $1 AND status = 'pending'
    RETURNING id
"""
_SUPERSEDED = """
    UPDATE outbox SET status = 'done', done_at = now(), claimed_until = NULL, last_error = $2
     WHERE id = $1
"""
_PUT_BACK = """
    UPDATE outbox
       SET status = 'pending',
           next_attempt_at = now() + make_interval(secs => $2::double precision),
           attempts = $3, last_error = $4, claimed_by = NULL, claimed_until = NULL
     WHERE id = $1
"""


def _mine(row_id: int, instance: str) -> Any:
    return (
        (OutboxItem.id == row_id)
        & (OutboxItem.status == "sending")
        & (OutboxItem.claimed_by == instance)
    )


async def unsettled(session: AsyncSession) -> bool:
    """Whether any row is ready to send or being sent (by any process)."""
    return bool(await (await raw(session)).fetchval(_UNSETTLED))


async def complete(session: AsyncSession, row_id: int, instance: str) -> bool:
    """The call succeeded (or was not needed); False when the claim was lost meanwhile."""
    return await (await raw(session)).fetchrow(_COMPLETE, row_id, instance) is not None


async def record_sent(
    session: AsyncSession,
    message_row_id: int,
    *,
    message_id: int | None,
    version: int,
    sent_text: str,
    sent_markup: dict[str, Any] | None,
) -> None:
    """What Telegram now shows for a bot message (the id it returned, when it was a send)."""
    await (await raw(session)).execute(
        _RECORD_SENT, message_row_id, version, sent_text, json.dumps(sent_markup), message_id
    )


async def release(
    session: AsyncSession,
    row_id: int,
    instance: str,
    *,
    delay_seconds: float,
    count_attempt: bool = False,
    error: str | None = None,
) -> bool:
    """Put a claimed row back to wait `delay_seconds`.

    A sync row whose message got a newer pending sync meanwhile is folded into that one (the
    partial unique index allows one pending sync per message; the newer one reads the latest
    content anyway), keeping the earlier due time and the attempts count.
    """
    db = await raw(session)
    row = await db.fetchrow(_MINE_FOR_RELEASE, row_id, instance)
    if row is None:
        return False
    attempts = int(row["attempts"]) + (1 if count_attempt else 0)
    delay = max(0.0, float(delay_seconds))
    if row["telegram_message_id"] is not None:
        sibling = await db.fetchrow(
            _FOLD_INTO_SIBLING, row["telegram_message_id"], delay, attempts, error
        )
        if sibling is not None:
            await db.execute(_SUPERSEDED, row_id, f"superseded by outbox row {sibling['id']}")
            return True
    await db.execute(_PUT_BACK, row_id, delay, attempts, error)
    return True


async def dead_letter(session: AsyncSession, row_id: int, instance: str, error: str) -> bool:
    """Give up on a claimed row; operators see it in /readyz and the audit log."""
    return await _finish_failed(session, row_id, instance, error, status="dead")


async def refused(session: AsyncSession, row_id: int, instance: str, error: str) -> bool:
    """Telegram refused the row for good (a person who never opened or blocked the private
    chat): it is finished, with the reason, and never sent again. Not a dead letter: nothing
    is wrong with Quorum, and the caller audits it."""
    return await _finish_failed(session, row_id, instance, error, status="done")


async def _finish_failed(
    session: AsyncSession, row_id: int, instance: str, error: str, *, status: str
) -> bool:
    """End a claimed row that was not delivered (its message marked failed); False if the
    claim was lost."""
    result = (
        await session.execute(
            update(OutboxItem)
            .where(_mine(row_id, instance))
            .values(
                status=status,
                done_at=func.now(),
                claimed_until=None,
                attempts=OutboxItem.attempts + 1,
                last_error=error,
            )
            .returning(OutboxItem.telegram_message_id)
        )
    ).first()
    if result is None:
        return False
    if result.telegram_message_id is not None:
        await session.execute(
            update(TelegramMessage)
            .where(TelegramMessage.id == result.telegram_message_id)
            .values(status="failed", last_error=error)
        )
    return True


async def leave_topic(session: AsyncSession, message_row_id: int) -> None:
    """The message's forum topic is closed or gone: it lives in the General topic from now on."""
    await session.execute(
        update(TelegramMessage).where(TelegramMessage.id == message_row_id).values(thread_id=None)
    )


async def move_to_chat(
    session: AsyncSession, row_id: int, old_chat_id: int, new_chat_id: int
) -> None:
    """A claimed row's chat became a supergroup: address the new id (a posted card is posted
    again there, since the old group is read-only)."""
    row = await session.get(OutboxItem, row_id)
    if row is None:
        return
    row.chat_id = new_chat_id
    if "chat_id" in row.payload:
        row.payload = {**row.payload, "chat_id": new_chat_id}
    if row.telegram_message_id is not None:
        await session.execute(
            update(TelegramMessage)
            .where(
                TelegramMessage.id == row.telegram_message_id,
                TelegramMessage.chat_id == old_chat_id,
            )
            .values(chat_id=new_chat_id, message_id=None, sent_text=None, sent_markup=None)
        )


async def forget_message_id(session: AsyncSession, message_row_id: int) -> None:
    """Telegram no longer has the message (deleted by someone): the next sync posts it again."""
    await session.execute(
        update(TelegramMessage)
        .where(TelegramMessage.id == message_row_id)
        .values(message_id=None, sent_text=None, sent_markup=None)
    )


async def depth_by_kind(session: AsyncSession) -> dict[str, int]:
    rows = await session.execute(
        select(OutboxItem.kind, func.count())
        .where(OutboxItem.status.in_(("pending", "sending")))
        .group_by(OutboxItem.kind)
    )
    return {str(kind): int(n) for kind, n in rows.all()}
