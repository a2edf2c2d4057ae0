"""Outbox rows and bot messages: every Telegram call is queued in the transaction that causes it."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from enum import IntEnum
from typing import Any

from sqlalchemy import func, insert, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from storage.models import OutboxItem, TelegramMessage


class Priority(IntEnum):
    """Lower is sent first: a waiting spinner, then decisions, then alerts, then alert edits."""

    CALLBACK = 0
    CARD = 10
    REPLY = 15
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
) -> int:
    """Create a bot message (a card) and queue its first send; returns telegram_messages.id."""
    msg_id: int = (
        await session.execute(
            insert(TelegramMessage)
            .values(
                chat_id=chat_id,
                purpose=purpose,
                text=text_html,
                reply_markup=reply_markup,
                approval_id=approval_id,
                alert_id=alert_id,
            )
            .returning(TelegramMessage.id)
        )
    ).scalar_one()
    await _queue_sync(session, msg_id, chat_id, priority, kind=f"{purpose}:send", not_before=None)
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
    chat_id = (
        await session.execute(
            update(TelegramMessage)
            .where(TelegramMessage.id == message_row_id)
            .values(
                text=text_html,
                reply_markup=reply_markup,
                version=TelegramMessage.version + 1,
                updated_at=func.now(),
            )
            .returning(TelegramMessage.chat_id)
        )
    ).scalar_one()
    await _queue_sync(session, message_row_id, chat_id, priority, "edit", not_before)


async def _queue_sync(
    session: AsyncSession,
    message_row_id: int,
    chat_id: int,
    priority: Priority,
    kind: str,
    not_before: datetime | None,
) -> None:
    values: dict[str, Any] = {
        "method": "sync",
        "telegram_message_id": message_row_id,
        "chat_id": chat_id,
        "priority": int(priority),
        "kind": kind,
    }
    if not_before is not None:
        values["next_attempt_at"] = not_before
    stmt = pg_insert(OutboxItem).values(**values)
    # A pending sync already exists: it will read the newest content, keep it (the earlier
    # due time and the more urgent priority win).
    stmt = stmt.on_conflict_do_update(
        index_elements=[OutboxItem.telegram_message_id],
        index_where=text("status = 'pending' AND telegram_message_id IS NOT NULL"),
        set_={
            "priority": func.least(OutboxItem.priority, stmt.excluded.priority),
            "next_attempt_at": func.least(
                OutboxItem.next_attempt_at, stmt.excluded.next_attempt_at
            ),
        },
    )
    await session.execute(stmt)


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
) -> int:
    """Queue a plain HTML message (a command's reply, an escalation)."""
    payload: dict[str, Any] = {
        "chat_id": chat_id,
        "text": text_html,
        "parse_mode": "HTML",
        "link_preview_options": {"is_disabled": True},
    }
    if reply_to is not None:
        payload["reply_parameters"] = {"message_id": reply_to, "allow_sending_without_reply": True}
    return await enqueue_call(
        session, "sendMessage", payload, chat_id=chat_id, priority=priority, kind=kind
    )
