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
from handlers.replies import reply


def _sender(message: Message) -> chat.Sender:
    user = message.from_user
    # A channel or the anonymous group admin posts with sender_chat: not a person.
    if user is None or message.sender_chat is not None:
        return chat.Sender(message.chat.id, None, "")
    return chat.Sender(message.chat.id, user.id, user.username or user.first_name)


async def press_incident_button(
    callback: CallbackQuery, callback_data: IncidentAction, session: AsyncSession, runtime: Runtime
) -> AnswerCallbackQuery:
    msg = callback.message
    if msg is None:
        return callback.answer(ForgedButton().message, show_alert=True)
    user = callback.from_user
    tap = chat.IncidentTap(
        ref=callback_data.ref,
        act=callback_data.act,
        tag=callback_data.tag,
        chat_id=msg.chat.id,
        message_id=msg.message_id,
        user_id=user.id,
        name=user.username or user.first_name,
    )
    try:
        toast = await chat.press(runtime, session, tap)
    except QuorumError as exc:
        return callback.answer(exc.message[:200], show_alert=True)
    return callback.answer(toast[:200])


async def press_declare_button(
    callback: CallbackQuery, callback_data: DeclareIncident, session: AsyncSession, runtime: Runtime
) -> AnswerCallbackQuery:
    msg = callback.message
    if msg is None:
        return callback.answer(ForgedButton().message, show_alert=True)
    user = callback.from_user
    tap = chat.IncidentTap(
        ref=callback_data.ref,
        act="dec",
        tag=callback_data.tag,
        chat_id=msg.chat.id,
        message_id=msg.message_id,
        user_id=user.id,
        name=user.username or user.first_name,
    )
    try:
        toast = await chat.declare_from_alert(runtime, session, tap)
    except QuorumError as exc:
        return callback.answer(exc.message[:200], show_alert=True)
    return callback.answer(toast[:200])


async def declare_incident(
    message: Message, command: CommandObject, session: AsyncSession, runtime: Runtime
) -> None:
    try:
        text = await chat.declare(runtime, session, _sender(message), command.args or "")
    except QuorumError as exc:
        text = esc(exc.message)
    await reply(session, message, text)


async def add_note(
    message: Message, command: CommandObject, session: AsyncSession, runtime: Runtime
) -> None:
    try:
        text = await chat.note(runtime, session, _sender(message), command.args or "")
    except QuorumError as exc:
        text = esc(exc.message)
    await reply(session, message, text)


async def show_timeline(
    message: Message, command: CommandObject, session: AsyncSession, runtime: Runtime
) -> None:
    try:
        text = await chat.timeline_text(runtime, session, message.chat.id, command.args or "")
    except QuorumError as exc:
        text = esc(exc.message)
    await reply(session, message, text)


async def show_incidents(message: Message, session: AsyncSession, runtime: Runtime) -> None:
    try:
        text = await chat.open_text(runtime, session, message.chat.id)
    except QuorumError as exc:
        text = esc(exc.message)
    await reply(session, message, text)


async def open_maintenance(
    message: Message, command: CommandObject, session: AsyncSession, runtime: Runtime
) -> None:
    try:
        who = _sender(message)
        args = command.args or ""
        text = await maintenance.from_chat(
            runtime, session, chat_id=who.chat_id, user_id=who.user_id, args=args
        )
    except QuorumError as exc:
        text = esc(exc.message)
    await reply(session, message, text)


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
