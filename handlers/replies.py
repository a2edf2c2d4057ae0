"""Answers to chat commands: queued in the outbox as a reply to the command's message."""

from __future__ import annotations

from aiogram.types import Message
from sqlalchemy.ext.asyncio import AsyncSession

from storage.outbox import enqueue_text


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
