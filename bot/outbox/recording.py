"""The outbox's recording of a delivery: its outcome, stored with the row and the chat."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Literal

from bot import chats, private
from storage import audit
from storage import outbox_delivery as store
from storage.outbox import enqueue_text

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SyncSent:
    message_row_id: int
    message_id: int | None  # set when Telegram gave a new message its id
    version: int
    text: str
    markup: dict[str, Any] | None


@dataclass(frozen=True)
class Outcome:
    action: Literal["done", "release", "retry", "dead", "removed", "migrated", "refused"]
    delay: float = 0.0
    error: str | None = None
    sync: SyncSent | None = None
    chat_id: int | None = None
    new_chat_id: int | None = None
    forget_message: bool = False  # the card is gone from Telegram: post it again
    left_topic: int | None = None  # the forum topic it was sent outside of (closed or gone)


async def apply_outcome(session: Any, me: str, row: store.ClaimedRow, outcome: Outcome) -> str:
    """Store a delivery's outcome as instance `me`; returns what was done: the outcome's
    action, or 'dead' when it had to give up."""
    action = outcome.action
    if action == "done":
        if outcome.sync is not None:
            s = outcome.sync
            await store.record_sent(
                session,
                s.message_row_id,
                message_id=s.message_id,
                version=s.version,
                sent_text=s.text,
                sent_markup=s.markup,
            )
            if outcome.left_topic is not None:
                await _note_topic_left(session, row, s, outcome.left_topic)
        if not await store.complete(session, row.id, me):
            log.warning("outbox row %s: claim lost before completion", row.id)
        return action
    if action in ("release", "retry"):
        if outcome.forget_message and row.telegram_message_id is not None:
            await store.forget_message_id(session, row.telegram_message_id)
        await store.release(
            session,
            row.id,
            me,
            delay_seconds=outcome.delay,
            count_attempt=action == "retry",
            error=outcome.error,
        )
        return action
    if action == "removed" and outcome.chat_id is not None:
        if await chats.bot_removed(session, outcome.chat_id, reason=outcome.error or "403"):
            # Held while the chat is inactive; bot_added makes it due again.
            await store.release(session, row.id, me, delay_seconds=0, error=outcome.error)
            return action
        action = "dead"  # not a chat we hold rows for
    if action == "refused" and outcome.chat_id is not None:
        if await store.refused(session, row.id, me, outcome.error or "403"):
            await private.refused(
                session, outcome.chat_id, error=outcome.error or "403", outbox_id=row.id
            )
        return action
    if action == "migrated" and outcome.chat_id is not None and outcome.new_chat_id:
        await chats.chat_migrated(session, outcome.chat_id, outcome.new_chat_id)
        await store.move_to_chat(session, row.id, outcome.chat_id, outcome.new_chat_id)
        await store.release(session, row.id, me, delay_seconds=0)
        return action
    error = outcome.error or action
    if await store.dead_letter(session, row.id, me, error):
        await audit.record(
            session,
            "outbox.dead_letter",
            chat_id=row.chat_id,
            outbox_id=row.id,
            method=row.method,
            kind=row.kind,
            attempts=row.attempts + 1,
            error=error,
        )
    return "dead"


async def _note_topic_left(
    session: Any, row: store.ClaimedRow, sent: SyncSent, thread_id: int
) -> None:
    """The message went to General because its topic is closed or gone: keep it there,
    say so under it, and audit it."""
    chat_id = row.target.chat_id if row.target is not None else row.chat_id
    await store.leave_topic(session, sent.message_row_id)
    await audit.record(
        session,
        "topic.fallback",
        chat_id=chat_id,
        thread_id=thread_id,
        message_row_id=sent.message_row_id,
    )
    if chat_id is not None:
        await enqueue_text(
            session,
            chat_id,
            f"ℹ️ Topic {thread_id} is closed or deleted, so this was posted in General. "
            "Point the route's thread_id at an open topic in the policy.",
            reply_to=sent.message_id,
        )
