"""The outbox sender: delivers queued Telegram calls (minimal version, replaced by issue 3)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import aiogram.methods
from aiogram.methods import EditMessageText, SendMessage, TelegramMethod
from aiogram.types import InlineKeyboardMarkup
from sqlalchemy import func, select, text, update

from bot.runtime import Runtime
from storage.models import OutboxItem, TelegramMessage

log = logging.getLogger(__name__)


def build_method(method: str, payload: dict[str, Any]) -> TelegramMethod[Any]:
    cls = getattr(aiogram.methods, method[0].upper() + method[1:])
    result: TelegramMethod[Any] = cls(**payload)
    return result


async def run_sender(rt: Runtime) -> None:
    while True:
        sent = await send_due(rt)
        if not sent:
            await asyncio.sleep(0.05)


async def send_due(rt: Runtime, batch: int = 20) -> int:
    async with rt.sessions() as session, session.begin():
        rows = list(
            await session.scalars(
                select(OutboxItem)
                .where(OutboxItem.status == "pending", OutboxItem.next_attempt_at <= func.now())
                .order_by(OutboxItem.priority, OutboxItem.id)
                .limit(batch)
                .with_for_update(skip_locked=True)
            )
        )
        for row in rows:
            try:
                if row.method == "sync":
                    msg = await session.get(TelegramMessage, row.telegram_message_id)
                    assert msg is not None
                    markup = (
                        InlineKeyboardMarkup.model_validate(msg.reply_markup)
                        if msg.reply_markup
                        else None
                    )
                    if msg.message_id is None:
                        res = await rt.bot(
                            SendMessage(
                                chat_id=msg.chat_id,
                                text=msg.text,
                                parse_mode="HTML",
                                reply_markup=markup,
                            )
                        )
                        msg.message_id = res.message_id
                    else:
                        await rt.bot(
                            EditMessageText(
                                chat_id=msg.chat_id,
                                message_id=msg.message_id,
                                text=msg.text,
                                parse_mode="HTML",
                                reply_markup=markup,
                            )
                        )
                    msg.sent_version, msg.status = msg.version, "sent"
                else:
                    await rt.bot(build_method(row.method, row.payload))
                row.status, row.done_at = "done", func.now()
            except Exception as exc:
                row.attempts += 1
                row.last_error = str(exc)[:500]
                row.status = "dead" if row.attempts >= 5 else "pending"
                await session.execute(
                    update(OutboxItem)
                    .where(OutboxItem.id == row.id)
                    .values(next_attempt_at=func.now() + text("interval '1 second'"))
                )
        return len(rows)
