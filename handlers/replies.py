"""Answers to chat commands (queued in the outbox as a reply to the command's message) and to
button taps (the toast)."""

from __future__ import annotations

from collections.abc import Awaitable

from aiogram.methods import AnswerCallbackQuery
from aiogram.types import Message
from sqlalchemy.ext.asyncio import AsyncSession

from bot.errors import QuorumError
from bot.rendering import esc
from storage.outbox import enqueue_text

TOAST_LIMIT = 200  # Telegram shows at most 200 characters of an answerCallbackQuery text


async def reply_with(session: AsyncSession, message: Message, answer: Awaitable[str]) -> None:
    """Reply with what a command's service said; a refusal (QuorumError) with its message."""
    try:
        text = await answer
    except QuorumError as exc:
        text = esc(exc.message)
    await reply(session, message, text)


async def answer_tap(query_id: str, press: Awaitable[str]) -> AnswerCallbackQuery:
    """Answer the tap of callback query `query_id` with what its service said; a refusal
    (QuorumError) as an alert. By id, not by aiogram's CallbackQuery: the vote buttons' fast
    lane (handlers.taps) has none."""
    try:
        text = await press
    except QuorumError as exc:
        return toast(query_id, exc.message, show_alert=True)
    return toast(query_id, text)


def toast(query_id: str, text: str, *, show_alert: bool | None = None) -> AnswerCallbackQuery:
    return AnswerCallbackQuery(
        callback_query_id=query_id, text=text[:TOAST_LIMIT], show_alert=show_alert
    )


def topic_of(message: Message) -> int | None:
    """The forum topic a message was posted in (None in General or a plain chat)."""
    return message.message_thread_id if message.is_topic_message else None


async def reply(session: AsyncSession, message: Message, text_html: str) -> None:
    await enqueue_text(
        session,
        message.chat.id,
        text_html,
        reply_to=message.message_id,
        thread_id=topic_of(message),
    )
