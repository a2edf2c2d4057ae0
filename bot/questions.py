"""Ask one person a question by ForceReply and route their reply to the handler of its kind.

A question is a bot message (telegram_messages, sent through the outbox like a card) plus a
`questions` row: who must answer, until when, and what it is about (`subject`). A reply to
that message from that person within the deadline is stored once (the first one wins, across
replicas) and handed to the handler registered for the question's kind. Handlers are code
registered at import time (e.g. bot.approvals.reasons), so every replica has the same ones.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from bot.errors import Deferred
from bot.runtime import Runtime
from storage import questions as store
from storage.outbox import Priority, put_message

log = logging.getLogger(__name__)

# Telegram shows at most 64 characters of a ForceReply placeholder.
MAX_PLACEHOLDER = 64


@dataclass(frozen=True)
class Answer:
    """A reply that answered an open question: who, what, and about what."""

    question: store.QuestionRecord
    text: str
    chat_id: int
    message_id: int  # the reply's own message id (to answer it in turn)
    user_id: int


AnswerHandler = Callable[[Runtime, AsyncSession, Answer], Awaitable[None]]
_HANDLERS: dict[str, AnswerHandler] = {}


def on_answer(kind: str) -> Callable[[AnswerHandler], AnswerHandler]:
    """Register the handler for answers to questions of `kind` (≤ 32 characters)."""
    if not 0 < len(kind) <= 32:
        raise ValueError("a question kind is 1-32 characters")

    def register(handler: AnswerHandler) -> AnswerHandler:
        _HANDLERS[kind] = handler
        return handler

    return register


def force_reply_markup(placeholder: str | None = None) -> dict[str, Any]:
    """A ForceReply for the people @mentioned in the text and the author of the replied-to
    message (`selective`), so the rest of a group keeps its keyboard."""
    markup: dict[str, Any] = {"force_reply": True, "selective": True}
    if placeholder:
        markup["input_field_placeholder"] = placeholder[:MAX_PLACEHOLDER]
    return markup


async def ask(
    session: AsyncSession,
    *,
    kind: str,
    chat_id: int,
    user_id: int,
    text_html: str,
    subject: dict[str, Any],
    ttl_seconds: float,
    placeholder: str | None = None,
    reply_to: int | None = None,
    thread_id: int | None = None,
) -> int:
    """Queue the question (in this transaction) for `user_id` in `chat_id`; returns its id.

    `text_html` should mention the person (bot.rendering's mention) so `selective` reaches
    them in a group; `reply_to` and `thread_id` place it under a card or in a forum topic."""
    if kind not in _HANDLERS:
        raise ValueError(f"no handler registered for questions of kind {kind!r}")
    row_id = await put_message(
        session,
        chat_id=chat_id,
        purpose="question",
        text_html=text_html,
        reply_markup=force_reply_markup(placeholder),
        priority=Priority.REPLY,
        thread_id=thread_id,
        reply_to=reply_to,
    )
    return await store.add(
        session,
        kind=kind,
        message_row_id=row_id,
        chat_id=chat_id,
        asked_telegram_id=user_id,
        subject=subject,
        ttl_seconds=ttl_seconds,
    )


async def route_reply(
    rt: Runtime,
    session: AsyncSession,
    *,
    chat_id: int,
    replied_message_id: int,
    message_id: int,
    user_id: int,
    text: str,
) -> bool:
    """A reply to one of the bot's messages: if it answers an open question put to this
    user, store it and call the kind's handler; True when it was such an answer."""
    question = await store.asked_by_message(session, chat_id, replied_message_id)
    if question is None and await store.being_sent(session, chat_id, user_id):
        # Perhaps its answer: held until the sender has recorded the question's message id.
        raise Deferred(f"a question to {user_id} in chat {chat_id} is being sent")
    if question is None or question.asked_telegram_id != user_id:
        return False  # someone else's question, or not a question: an ordinary reply
    taken = await store.take_answer(session, question.id, text)
    if taken is None:
        return False  # too late, or already answered
    handler = _HANDLERS.get(taken.kind)
    if handler is None:
        log.warning("no handler for answered question %s of kind %s", taken.id, taken.kind)
        return True
    await handler(rt, session, Answer(taken, text, chat_id, message_id, user_id))
    return True
