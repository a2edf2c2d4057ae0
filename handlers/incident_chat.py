"""Incidents in the team chat: card buttons, /incident, /incidents, /note, /timeline, replies."""

from __future__ import annotations

from aiogram import Router
from aiogram.filters import Command, CommandObject, Filter
from aiogram.methods import AnswerCallbackQuery
from aiogram.types import CallbackQuery, Message
from sqlalchemy.ext.asyncio import AsyncSession

from bot.alerts import maintenance
from bot.buttons import DeclareIncident, IncidentAction
from bot.errors import ForgedButton, QuorumError
from bot.incidents import chat
from bot.rendering import esc
from bot.runtime import Runtime
from handlers.replies import answer_tap, reply, reply_with


def _sender(message: Message) -> chat.Sender:
    user = message.from_user
    # A channel or the anonymous group admin posts with sender_chat: not a person.
    if user is None or message.sender_chat is not None:
        return chat.Sender(message.chat.id, None, "")
    return chat.Sender(message.chat.id, user.id, user.username or user.first_name)


def _tap(callback: CallbackQuery, ref: str, act: str, tag: str) -> chat.IncidentTap | None:
    msg = callback.message
    if msg is None:
        return None
    user = callback.from_user
    return chat.IncidentTap(
        ref=ref,
        act=act,
        tag=tag,
        chat_id=msg.chat.id,
        message_id=msg.message_id,
        user_id=user.id,
        name=user.username or user.first_name,
    )


async def press_incident_button(
    callback: CallbackQuery, callback_data: IncidentAction, session: AsyncSession, runtime: Runtime
) -> AnswerCallbackQuery:
    tap = _tap(callback, callback_data.ref, callback_data.act, callback_data.tag)
    if tap is None:
        return callback.answer(ForgedButton().message, show_alert=True)
    return await answer_tap(callback.id, chat.press(runtime, session, tap))


async def press_declare_button(
    callback: CallbackQuery, callback_data: DeclareIncident, session: AsyncSession, runtime: Runtime
) -> AnswerCallbackQuery:
    tap = _tap(callback, callback_data.ref, "dec", callback_data.tag)
    if tap is None:
        return callback.answer(ForgedButton().message, show_alert=True)
    return await answer_tap(callback.id, chat.declare_from_alert(runtime, session, tap))


async def declare_incident(
    message: Message, command: CommandObject, session: AsyncSession, runtime: Runtime
) -> None:
    await reply_with(
        session, message, chat.declare(runtime, session, _sender(message), command.args or "")
    )


async def add_note(
    message: Message, command: CommandObject, session: AsyncSession, runtime: Runtime
) -> None:
    await reply_with(
        session, message, chat.note(runtime, session, _sender(message), command.args or "")
    )


async def show_timeline(
    message: Message, command: CommandObject, session: AsyncSession, runtime: Runtime
) -> None:
    await reply_with(
        session, message, chat.timeline_text(runtime, session, message.chat.id, command.args or "")
    )


async def show_incidents(message: Message, session: AsyncSession, runtime: Runtime) -> None:
    await reply_with(session, message, chat.open_text(runtime, session, message.chat.id))


async def open_maintenance(
    message: Message, command: CommandObject, session: AsyncSession, runtime: Runtime
) -> None:
    who = _sender(message)
    window = maintenance.from_chat(
        runtime, session, chat_id=who.chat_id, user_id=who.user_id, args=command.args or ""
    )
    await reply_with(session, message, window)


class ReplyToBot(Filter):
    """A person's text answering one of the bot's messages (not a command)."""

    async def __call__(self, message: Message, runtime: Runtime) -> bool:
        replied = message.reply_to_message
        return (
            replied is not None
            and replied.from_user is not None
            and replied.from_user.id == runtime.bot_id
            and bool(message.text)
            and not (message.text or "").startswith("/")
        )


async def note_by_reply(message: Message, session: AsyncSession, runtime: Runtime) -> None:
    replied = message.reply_to_message
    assert replied is not None
    try:
        text = await chat.note_by_reply(
            runtime,
            session,
            _sender(message),
            replied.message_id,
            replied.text or "",
            message.text or "",
        )
    except QuorumError as exc:
        text = esc(exc.message)
    if text is not None:
        await reply(session, message, text)


def make_router() -> Router:
    """This module's Telegram handlers; a fresh router per app (a router has one parent)."""
    router = Router(name=__name__)
    router.callback_query.register(press_incident_button, IncidentAction.filter())
    router.callback_query.register(press_declare_button, DeclareIncident.filter())
    router.message.register(declare_incident, Command("incident"))
    router.message.register(show_incidents, Command("incidents"))
    router.message.register(add_note, Command("note"))
    router.message.register(show_timeline, Command("timeline"))
    router.message.register(open_maintenance, Command("maintenance"))
    router.message.register(note_by_reply, ReplyToBot())
    return router
