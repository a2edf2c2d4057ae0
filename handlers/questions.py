"""Replies to the bot's ForceReply questions, and private chats opening and closing."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiogram import Router
from aiogram.dispatcher.event.bases import SkipHandler
from aiogram.filters import Filter
from aiogram.types import Message, TelegramObject
from sqlalchemy.ext.asyncio import AsyncSession

from bot import private, questions
from bot.runtime import Runtime


class RepliesToBot(Filter):
    """A person's text that replies to one of this bot's messages."""

    async def __call__(self, message: Message, runtime: Runtime) -> bool:
        replied = message.reply_to_message
        return (
            replied is not None
            and replied.from_user is not None
            and replied.from_user.id == runtime.bot_id
            and message.from_user is not None
            and message.sender_chat is None
            and bool(message.text)
        )


async def answer_question(message: Message, session: AsyncSession, runtime: Runtime) -> None:
    assert message.reply_to_message is not None and message.from_user is not None
    answered = await questions.route_reply(
        runtime,
        session,
        chat_id=message.chat.id,
        replied_message_id=message.reply_to_message.message_id,
        message_id=message.message_id,
        user_id=message.from_user.id,
        text=message.text or "",
    )
    if not answered:
        raise SkipHandler  # an ordinary reply: other handlers (commands) may want it


async def note_private_chat(
    handler: Callable[[TelegramObject, dict[str, Any]], Awaitable[Any]],
    event: TelegramObject,
    data: dict[str, Any],
) -> Any:
    """A person who writes to the bot privately has opened the chat: from now on the bot may
    write to them (Telegram refuses before). Runs before every message handler."""
    if (
        isinstance(event, Message)
        and event.chat.type == "private"
        and event.from_user is not None
        and isinstance(data.get("session"), AsyncSession)
    ):
        await private.opened(data["session"], event.from_user.id)
    return await handler(event, data)


def make_router() -> Router:
    """This module's handlers; included first, so its middleware sees every message."""
    router = Router(name=__name__)
    router.message.outer_middleware(note_private_chat)
    router.message.register(answer_question, RepliesToBot())
    return router
