"""/start and /help, and the fallback answer for buttons no other router knows."""

from __future__ import annotations

from html import escape

from aiogram import Router
from aiogram.filters import Command, CommandStart
from aiogram.methods import AnswerCallbackQuery
from aiogram.types import CallbackQuery, Message
from sqlalchemy.ext.asyncio import AsyncSession

from bot.runtime import Runtime
from handlers.replies import reply, topic_of
from storage.outbox import enqueue_text

HELP = (
    "<b>Quorum</b> puts risky operations up for approval here: tap ✅ Approve or ❌ Reject "
    "on a card. Critical requests need several distinct approvers; once approved, the "
    "executor gets a single-use signed token. Alerts arrive as one living card each, with "
    "Acknowledge, Silence and Resolve.\n\n"
    "Commands: /pending, /status &lt;id, or its first 8 characters&gt;, /whoami, /alerts, "
    "/silences, /unsilence &lt;id&gt;, /incident P0-P3 title, /incidents, /note [id] text, "
    "/timeline [id], /trust, /enroll (in private: TOTP step-up), /where (this chat's and "
    "topic's ids), /help"
)


async def show_help(message: Message, session: AsyncSession, runtime: Runtime) -> None:
    sender = message.from_user
    who = (
        f"Your Telegram id is <code>{sender.id}</code>."
        if sender is not None and message.sender_chat is None
        else "You are posting as a channel or anonymous admin: votes need your own account."
    )
    team = runtime.policy.team_for_chat(message.chat.id)
    where = (
        f"This chat belongs to team <b>{escape(team.name)}</b>."
        if team
        else f"This chat (<code>{message.chat.id}</code>) is not in the policy file yet."
    )
    await enqueue_text(
        session, message.chat.id, f"{HELP}\n\n{who}\n{where}", thread_id=topic_of(message)
    )


async def show_where(message: Message, session: AsyncSession, runtime: Runtime) -> None:
    """The chat id and forum topic id, ready to paste into the policy as a route."""
    thread = topic_of(message)
    team = runtime.policy.team_for_chat(message.chat.id)
    name = team.name if team else "NAME"
    lines = [f"chat id <code>{message.chat.id}</code>"]
    if thread is not None:
        lines[0] += f", topic id <code>{thread}</code>"
    snippet = f"[[teams.{escape(name)}.routes]]\nchat_id = {message.chat.id}"
    if thread is not None:
        snippet += f"\nthread_id = {thread}"
    snippet += '\nmatch = { kind = "approval" }'
    lines.append(f"<pre>{snippet}</pre>")
    await reply(session, message, "\n".join(lines))


async def refuse_unknown_button(query: CallbackQuery) -> AnswerCallbackQuery:
    # Every tap must be answered, or the client shows a spinner until Telegram gives up.
    return query.answer("This button is not valid here.", show_alert=True)


def make_router() -> Router:
    """This module's handlers; a fresh router per Quorum (aiogram lets a router have one parent).

    Included last: its catch-all answers buttons no other router claimed."""
    router = Router(name=__name__)
    router.message.register(show_help, CommandStart())
    router.message.register(show_help, Command("help"))
    router.message.register(show_where, Command("where"))
    router.callback_query.register(refuse_unknown_button)
    return router
