"""Outbox rows and bot messages: every Telegram call is queued in the transaction that causes it."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime
from enum import IntEnum
from typing import Any

from sqlalchemy import func, insert, select
from sqlalchemy.exc import NoResultFound
from sqlalchemy.ext.asyncio import AsyncSession

from storage.db import raw
from storage.models import OutboxItem, TelegramMessage

# The insert trigger (migration 0002) NOTIFYs here when rows are added.
NEW_ROWS_CHANNEL = "quorum_outbox"


class Priority(IntEnum):
    """Lower is sent first within a chat: a waiting spinner, then high and critical approval
    cards, then the others, then new critical alert groups, then resolves, then other new
    groups, then count refreshes (which never delay a group's first appearance)."""

    CALLBACK = 0
    URGENT_CARD = 5
    CARD = 10
    REPLY = 15
    ALERT_CRITICAL = 18
    ALERT_RESOLVE = 19
    ALERT_SEND = 20
    ALERT_EDIT = 30


@dataclass(frozen=True, slots=True)
class MessageRecord:
    id: int
    chat_id: int
    message_id: int | None
    purpose: str
    approval_id: uuid.UUID | None
    alert_id: int | None
    text: str
    reply_markup: dict[str, Any] | None
    version: int
    sent_version: int
    status: str


def message_record(row: TelegramMessage) -> MessageRecord:
    return MessageRecord(
        id=row.id,
        chat_id=row.chat_id,
        message_id=row.message_id,
        purpose=row.purpose,
        approval_id=row.approval_id,
        alert_id=row.alert_id,
        text=row.text,
        reply_markup=row.reply_markup,
        version=row.version,
        sent_version=row.sent_version,
        status=row.status,
    )


async def enqueue_call(
    session: AsyncSession,
    method: str,
    payload: dict[str, Any],
    *,
    chat_id: int | None,
    priority: Priority,
    kind: str,
) -> int:
    """Queue a one-off Bot API call (answerCallbackQuery, a reply, deleteMessage)."""
    row_id: int = (
        await session.execute(
            insert(OutboxItem)
            .values(
                method=method,
                payload=payload,
                chat_id=chat_id,
                priority=int(priority),
                kind=kind,
            )
            .returning(OutboxItem.id)
        )
    ).scalar_one()
    return row_id


# A sync row for the message that the statement's CTE `m` (id, chat_id) wrote, coalesced with
# its pending one: a pending sync already there will read the newest content, so it is kept
# (the earlier due time and the more urgent priority win) and a vote storm on one card leaves
# one pending row. $1 priority, $2 kind, $3 due time (null: now); the message's own values
# start at $4. The one text both statements below share, on the raw asyncpg connection: a hot
# path (every vote edits its cards; the content and its sync in one round trip).
_SYNC_OF_M = """
    INSERT INTO outbox (method, telegram_message_id, chat_id, priority, kind, next_attempt_at)
    SELECT 'sync', m.id, m.chat_id, $1, $2, coalesce($3::timestamptz, now())
    FROM m
    ON CONFLICT (telegram_message_id) WHERE status = 'pending' AND telegram_message_id IS NOT NULL
    DO UPDATE SET priority = least(outbox.priority, excluded.priority),
                  next_attempt_at = least(outbox.next_attempt_at, excluded.next_attempt_at)
    RETURNING outbox.telegram_message_id
"""
_PUT_AND_SYNC = f"""
    WITH m AS (
        INSERT INTO telegram_messages
            (chat_id, purpose, text, reply_markup, approval_id, alert_id, thread_id, reply_to)
        VALUES ($4, $5, $6, $7::jsonb, $8, $9, $10, $11)
        RETURNING id, chat_id
    ){_SYNC_OF_M}"""  # noqa: S608 (fixed fragments of our own)
_EDIT_AND_SYNC = f"""
    WITH m AS (
        UPDATE telegram_messages
        SET text = $4, reply_markup = $5::jsonb, version = version + 1, updated_at = now()
        WHERE id = $6
        RETURNING id, chat_id
    ){_SYNC_OF_M}"""  # noqa: S608 (fixed fragments of our own)


async def put_message(
    session: AsyncSession,
    *,
    chat_id: int,
    purpose: str,
    text_html: str,
    reply_markup: dict[str, Any] | None,
    priority: Priority,
    approval_id: uuid.UUID | None = None,
    alert_id: int | None = None,
    thread_id: int | None = None,
    reply_to: int | None = None,
) -> int:
    """Create a bot message (a card) and queue its first send; returns telegram_messages.id.

    `thread_id` posts it in a forum topic, `reply_to` (a Telegram message id) as a reply."""
    msg_id: int = await (await raw(session)).fetchval(
        _PUT_AND_SYNC,
        int(priority),
        f"{purpose}:send",
        None,
        chat_id,
        purpose,
        text_html,
        json.dumps(reply_markup),
        approval_id,
        alert_id,
        thread_id,
        reply_to,
    )
    return msg_id


async def edit_message(
    session: AsyncSession,
    message_row_id: int,
    *,
    text_html: str,
    reply_markup: dict[str, Any] | None,
    priority: Priority,
    not_before: datetime | None = None,
) -> None:
    """Change what a message should show; pending syncs coalesce so only the latest is sent."""
    found = await (await raw(session)).fetchval(
        _EDIT_AND_SYNC,
        int(priority),
        "edit",
        not_before,
        text_html,
        json.dumps(reply_markup),
        message_row_id,
    )
    if found is None:
        raise NoResultFound(f"no bot message {message_row_id}")


async def messages_for_approval(
    session: AsyncSession, approval_id: uuid.UUID
) -> list[MessageRecord]:
    rows = await session.scalars(
        select(TelegramMessage)
        .where(TelegramMessage.approval_id == approval_id)
        .order_by(TelegramMessage.id)
    )
    return [message_record(r) for r in rows]


async def messages_for_alert(session: AsyncSession, alert_id: int) -> list[MessageRecord]:
    rows = await session.scalars(
        select(TelegramMessage)
        .where(TelegramMessage.alert_id == alert_id)
        .order_by(TelegramMessage.id)
    )
    return [message_record(r) for r in rows]


async def find_message(
    session: AsyncSession, chat_id: int, message_id: int
) -> MessageRecord | None:
    row = await session.scalar(
        select(TelegramMessage).where(
            TelegramMessage.chat_id == chat_id, TelegramMessage.message_id == message_id
        )
    )
    return message_record(row) if row else None


async def enqueue_text(
    session: AsyncSession,
    chat_id: int,
    text_html: str,
    *,
    priority: Priority = Priority.REPLY,
    kind: str = "reply",
    reply_to: int | None = None,
    reply_markup: dict[str, Any] | None = None,
    thread_id: int | None = None,
) -> int:
    """Queue a plain HTML message (a command's reply, an escalation), buttons if given;
    `thread_id` posts it in a forum topic (a reply lands in its message's topic anyway)."""
    payload: dict[str, Any] = {
        "chat_id": chat_id,
        "text": text_html,
        "parse_mode": "HTML",
        "link_preview_options": {"is_disabled": True},
    }
    if reply_to is not None:
        payload["reply_parameters"] = {"message_id": reply_to, "allow_sending_without_reply": True}
    if reply_markup is not None:
        payload["reply_markup"] = reply_markup
    if thread_id is not None:
        payload["message_thread_id"] = thread_id
    return await enqueue_call(
        session, "sendMessage", payload, chat_id=chat_id, priority=priority, kind=kind
    )


async def dead_letter_count(session: AsyncSession) -> int:
    """Rows given up on (readiness reports them for operators)."""
    n = await session.scalar(
        select(func.count()).select_from(OutboxItem).where(OutboxItem.status == "dead")
    )
    return int(n or 0)
