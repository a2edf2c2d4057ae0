"""Durable inbound updates: stored, deduplicated and handled in one transaction."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from aiogram import Dispatcher
from aiogram.methods import AnswerCallbackQuery, TelegramMethod
from aiogram.types import Update
from sqlalchemy.ext.asyncio import AsyncSession

from bot.errors import Deferred
from bot.outages import storage_outage
from bot.runtime import Runtime
from storage import audit, updates
from storage.outbox import Priority, enqueue_call

log = logging.getLogger(__name__)

# What handlers read of the message under a tapped button. Telegram sends the whole card back
# with every tap (text, entities, keyboard): validating it was most of an update's cost.
_TAPPED_MESSAGE_KEYS = ("message_id", "date", "chat", "from", "message_thread_id")


def lean_update(raw: dict[str, Any]) -> dict[str, Any]:
    """The update without the parts of a tapped message that no handler reads."""
    query = raw.get("callback_query")
    if not isinstance(query, dict) or not isinstance(query.get("message"), dict):
        return raw
    msg = query["message"]
    lean_msg = {k: msg[k] for k in _TAPPED_MESSAGE_KEYS if k in msg}
    return {**raw, "callback_query": {**query, "message": lean_msg}}


def _log_failure(exc: Exception, message: str, update_id: int) -> None:
    """A failed handling with its traceback; a deferred one (expected, retried) without."""
    extra = {"update_id": update_id}
    if isinstance(exc, Deferred):
        log.info(message + " (deferred: %s)", update_id, exc, extra=extra)
    else:
        log.exception(message, update_id, extra=extra)


# A handler that takes some updates straight from their JSON, ahead of the dispatcher (the vote
# buttons: handlers.approvals.press_vote_fast). It returns None for an update it does not
# take, which then goes through aiogram's models and routers.
FastLane = Callable[[dict[str, Any], AsyncSession, Runtime], Awaitable[TelegramMethod[Any]] | None]


# A handler that takes some webhook updates (the JSON and its text) before any session is
# opened, as one autocommit statement that stores the update with what it does (the approval
# taps: handlers.taps.count_vote_plainly). Its awaitable returns the webhook reply, or None
# when it wrote nothing: the update then goes the ordinary way. Webhook only: its answer
# rides in the webhook reply, where polling would need the outbox (a session).
PlainLane = Callable[[dict[str, Any], str, Runtime], Awaitable[TelegramMethod[Any] | None] | None]


class Inbound:
    def __init__(
        self,
        runtime: Runtime,
        dispatcher: Dispatcher,
        fast_lanes: Sequence[FastLane] = (),
        plain_lanes: Sequence[PlainLane] = (),
    ) -> None:
        self.rt = runtime
        self.dp = dispatcher
        self.fast_lanes = tuple(fast_lanes)
        self.plain_lanes = tuple(plain_lanes)

    async def receive(
        self, raw: dict[str, Any], *, source: str, body: str | None = None
    ) -> TelegramMethod[Any] | None:
        """Handle one update exactly once. Returns a method to answer in the webhook reply.

        `body` is the update's JSON as received, stored as it is (serialising the parsed
        update again cost more than storing it).

        Deduplication is PostgreSQL's unique update_id alone: a Redis check before it cost two
        round trips on every update to save one statement on the rare redelivery.

        Raises when the database is unavailable (`storage_outage`): the caller answers 503
        so Telegram delivers the update again. Any other failure of handling is stored as a
        failed update for `retry_failed`, so it is never lost.
        """
        rt = self.rt
        rt.metrics.updates_received.labels(source).inc()
        update_id = int(raw["update_id"])
        reply: TelegramMethod[Any] | None = None
        text = json.dumps(raw) if body is None else body
        if source == "webhook":
            for plain in self.plain_lanes:
                if (taken := plain(raw, text, rt)) is not None and (done := await taken):
                    return done
        try:
            async with rt.sessions() as session, session.begin():
                if not await updates.store_done(session, update_id, text):
                    rt.metrics.updates_deduplicated.inc()
                    return None
                reply = await self._dispatch(raw, session, webhook_reply=source == "webhook")
        except Exception as exc:
            if storage_outage(exc):
                raise
            # A bug in handling must not lose the update: store it for the retry loop.
            _log_failure(exc, "update %s failed; stored for retry", update_id)
            if not isinstance(exc, Deferred):
                rt.metrics.updates_failed.inc()
            await self._store_failed(update_id, raw, text, repr(exc)[:500])
            return None
        return reply

    async def refuse_undecodable(self, data: bytes) -> None:
        """Audit an update whose bytes are not UTF-8 (Telegram never sends one) as a security
        event, naming what it claims (update id, sender, chat) as far as it can be read;
        nothing of it is handled or stored."""
        update_id, sender, chat = _claimed_ids(data)
        async with self.rt.sessions() as session, session.begin():
            await audit.record(
                session,
                "security.invalid_update",
                actor_telegram_id=sender,
                chat_id=chat,
                reason="not_utf8",
                update_id=update_id,
                size=len(data),
            )

    async def _store_failed(
        self, update_id: int, raw: dict[str, Any], body: str, error: str
    ) -> None:
        try:
            async with self.rt.sessions() as session, session.begin():
                await updates.store_failed(session, update_id, raw, error)
            return
        except Exception as exc:
            if storage_outage(exc):
                raise
            refused = repr(exc)[:200]
        # PostgreSQL refuses some valid JSON in jsonb (\u0000): keep the update's text as a
        # string for an operator, never retried (it could only fail the same way).
        kept = {"update_id": update_id, "unstorable_update": body}
        async with self.rt.sessions() as session, session.begin():
            await updates.store_unretried(
                session, update_id, kept, f"{error[:290]}; kept as text: {refused}"
            )

    async def retry_failed(self, limit: int = 20) -> int:
        """Handle stored updates whose first handling failed (safe with several processes)."""
        done = 0
        for _ in range(limit):
            async with self.rt.sessions() as session, session.begin():
                row = await updates.claim_retry(session)
                if row is None:
                    return done
                try:
                    async with session.begin_nested():
                        await self._dispatch(row.payload, session, webhook_reply=False)
                    await updates.mark_done(session, row.id)
                except Exception as exc:
                    _log_failure(exc, "retry of update %s failed", row.update_id)
                    await updates.mark_failed(session, row.id, repr(exc)[:500])
                done += 1
        return done

    async def _dispatch(
        self, raw: dict[str, Any], session: AsyncSession, *, webhook_reply: bool
    ) -> TelegramMethod[Any] | None:
        result: Any = None
        for lane in self.fast_lanes:
            if (taken := lane(raw, session, self.rt)) is not None:
                result = await taken
                break
        else:
            upd = Update.model_validate(lean_update(raw), context={"bot": self.rt.bot})
            result = await self.dp.feed_update(self.rt.bot, upd, session=session, runtime=self.rt)
        if not isinstance(result, TelegramMethod):
            return None
        if webhook_reply and isinstance(result, AnswerCallbackQuery):
            return result
        # No webhook reply to carry it (polling, or a retry): the outbox makes the call.
        payload = json.loads(result.model_dump_json(exclude_none=True))
        is_answer = isinstance(result, AnswerCallbackQuery)
        await enqueue_call(
            session,
            result.__api_method__,
            payload,
            chat_id=payload.get("chat_id"),
            priority=Priority.CALLBACK if is_answer else Priority.REPLY,
            kind="callback_answer" if is_answer else "reply",
        )
        return None


def _claimed_ids(data: bytes) -> tuple[int | None, int | None, int | None]:
    """The update id, sender and chat an undecodable update claims, where they can be read."""
    try:
        update = json.loads(data.decode(errors="replace"))
    except ValueError:
        return None, None, None

    def field(*path: str) -> int | None:
        value: Any = update
        for key in path:
            value = value.get(key) if isinstance(value, dict) else None
        # An id as the audit columns take it: a JSON integer in bigint range.
        ok = isinstance(value, int) and not isinstance(value, bool) and abs(value) < 2**63
        return value if ok else None

    return (
        field("update_id"),
        field("callback_query", "from", "id") or field("message", "from", "id"),
        field("callback_query", "message", "chat", "id") or field("message", "chat", "id"),
    )


async def prune_updates(rt: Runtime, older_than_days: int = 7) -> int:
    """Forget handled updates after a while; ids restart after a week without updates."""
    async with rt.sessions() as session, session.begin():
        return await updates.prune(session, older_than_days)
