"""The outbox sender: claims due rows, paces them, calls Telegram and records each outcome."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiogram.exceptions import (
    TelegramAPIError,
    TelegramBadRequest,
    TelegramForbiddenError,
    TelegramMigrateToChat,
    TelegramNetworkError,
    TelegramRetryAfter,
    TelegramServerError,
)
from aiogram.methods import EditMessageReplyMarkup, EditMessageText, SendMessage, TelegramMethod
from aiogram.types import Message, ReplyParameters
from pydantic import ValidationError
from sqlalchemy.exc import IntegrityError

from bot.outbox.methods import (
    build_method,
    fit_payload,
    hold_response_type,
    inline_only,
    reply_markup_model,
    sanitize,
    topic_gone,
)
from bot.outbox.pacing import UNPACED, Pacer, reraise_if_cancelled
from bot.outbox.recording import Outcome, SyncSent, apply_outcome
from bot.rendering import fit_html
from bot.runtime import Runtime
from bot.wakeups import BUSY_ELSEWHERE_SECONDS, FALLBACK_SECONDS
from storage import outbox_delivery as store
from storage import wakeups
from storage.db import transaction
from storage.outbox import NEW_ROWS_CHANNEL

log = logging.getLogger(__name__)

DEPTH_EVERY_SECONDS = 5.0
# Waits up to this long are slept through holding the claim; longer ones put the row back.
HOLD_MAX_SECONDS = 2.0
# NOTIFY wake-ups closer together than this share one claim: a vote storm notifies on every
# card edit, and each claim walks every chat's queue head, mostly finding paced chats.
NOTIFY_COALESCE_SECONDS = 0.05
# Pacing waits up to this long (the bot-wide budget's next token) are slept through holding
# this process's pacing turn: the senders queue here instead of all polling Redis each time
# a token comes due, which at full send rate cost more CPU than the sends themselves.
TURN_HOLD_SECONDS = 0.1
# How often a draining sender looks again at rows another sender holds.
DRAIN_POLL_SECONDS = 0.05


@dataclass
class _Rows:
    """Rows this process holds a claim on (so shutdown can hand them back)."""

    ids: set[int] = field(default_factory=set)


class Sender:
    """One process's sender. Several may run against one database and Redis."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        s = rt.settings
        self.pacer = Pacer(rt)
        self.wake = asyncio.Event()
        # Set while run() waits to be woken: nothing to claim, or every slot busy.
        self.waiting = asyncio.Event()
        self.tasks: set[asyncio.Task[None]] = set()
        self.held = _Rows()
        self.concurrency = s.outbox_concurrency
        self.lease = s.outbox_claim_lease_seconds
        self.call_timeout = s.outbox_call_timeout_seconds
        self.max_attempts = s.outbox_max_attempts
        self.retry_base = s.outbox_retry_base_seconds
        self.token = s.telegram_token.get_secret_value()
        self._next_due = math.inf
        # Chats whose pacing budget is spent, and until when (a hint for this process only:
        # the budgets themselves are shared in Redis). A vote storm re-queues a card's edit as
        # due now; claiming it before the budget returns would only put it back.
        self._chat_wait: dict[int, float] = {}
        self._depth_at = 0.0
        self._kinds: set[str] = set()
        self._claimed_at = 0.0
        self._pace_turn = asyncio.Lock()
        self._slot_freed = False  # set when a delivery ends: claim again at once

    # ---------------------------------------------------------------- loop

    async def run(self) -> None:
        """Deliver rows until cancelled, woken by NOTIFY, freed slots and due times."""
        unsubscribe = self.rt.wakeups.subscribe(NEW_ROWS_CHANNEL, self.wake.set)
        self.wake.set()  # rows may have been queued before this sender subscribed
        try:
            while True:
                free = self.concurrency - len(self.tasks)
                claimed: int | None = 0
                if free > 0:
                    since = time.monotonic() - self._claimed_at
                    if not self._slot_freed and since < NOTIFY_COALESCE_SECONDS:
                        await asyncio.sleep(NOTIFY_COALESCE_SECONDS - since)
                    claimed = await self._fill(free)
                    if claimed is None:
                        continue
                else:
                    # Every slot busy: sleep until one frees (_finished sets the event). Left
                    # set by new rows, the wait below would return at once, for ever, without
                    # yielding to the rest of the process.
                    self.wake.clear()
                await self._update_depth()
                if claimed and claimed == free:
                    continue  # there may be more, and a slot frees up soon
                await self._wait_for_work()
        finally:
            unsubscribe()
            await self._stop()

    async def drain(self) -> None:
        """Send everything due and return once nothing is left to send (arq's burst mode).

        Rows put back to wait for a pacing budget or a retry are waited for, and so are rows
        another sender holds; rows due later (not_before) or held for a chat the bot left are
        not. Bound it with asyncio.timeout: rows that keep failing keep it going until they are
        dead-lettered.
        """
        try:
            while True:
                free = self.concurrency - len(self.tasks)
                if free > 0 and await self._fill(free) is None:
                    continue
                if self.tasks:
                    await asyncio.wait(self.tasks, return_when=asyncio.FIRST_COMPLETED)
                    continue
                wait = self._next_due - time.monotonic()
                self._next_due = math.inf
                if wait < math.inf:
                    await asyncio.sleep(max(0.0, wait))  # a budget or a retry comes due
                    continue
                async with self.rt.sessions() as session:
                    if not await store.unsettled(session):
                        return
                await asyncio.sleep(DRAIN_POLL_SECONDS)  # another sender holds a row
        finally:
            await self._stop()

    async def _fill(self, free: int) -> int | None:
        """Claim up to `free` rows and start delivering them; None when the claim failed."""
        self.wake.clear()
        self._slot_freed = False
        self._claimed_at = time.monotonic()
        try:
            claimed = await self._claim(free)
        except Exception as exc:
            reraise_if_cancelled(exc)
            log.warning("outbox claim failed (%s); retrying", type(exc).__name__)
            await asyncio.sleep(0.5)
            return None
        for row in claimed:
            self.held.ids.add(row.id)
            task = asyncio.create_task(self._deliver(row), name=f"outbox-{row.id}")
            self.tasks.add(task)
            task.add_done_callback(self._finished)
        return len(claimed)

    async def _wait_for_work(self) -> None:
        """Until woken (NOTIFY, a freed slot) or the next row comes due: one this process put
        back, else the earliest in the database (another sender's, or queued for later)."""
        if self._next_due == math.inf and not self.tasks and not self.wake.is_set():
            due_in = await self._due_in()
            if due_in is not None:
                self._next_due = time.monotonic() + due_in
        timeout = min(FALLBACK_SECONDS, max(0.005, self._next_due - time.monotonic()))
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                self.waiting.set()
                try:
                    await self.wake.wait()
                finally:
                    self.waiting.clear()
        if time.monotonic() >= self._next_due:
            self._next_due = math.inf

    async def _due_in(self) -> float | None:
        try:
            async with self.rt.sessions() as session:
                due_in = await wakeups.outbox_due_in(session)
        except Exception as exc:
            reraise_if_cancelled(exc)
            return 1.0  # the database is away: look again soon
        # Due already but not claimed: held by another sender (or its chat is paced here).
        return None if due_in is None else max(due_in, BUSY_ELSEWHERE_SECONDS)

    async def _stop(self, *helpers: asyncio.Task[None]) -> None:
        """Cancel the deliveries in flight and hand their rows back to the queue."""
        for task in (*helpers, *self.tasks):
            task.cancel()
        await asyncio.gather(*helpers, *self.tasks, return_exceptions=True)
        await asyncio.shield(self._hand_back())

    def _finished(self, task: asyncio.Task[None]) -> None:
        self.tasks.discard(task)
        self._slot_freed = True
        self.wake.set()  # the chat is free again, and so is a slot

    async def _claim(self, limit: int) -> list[store.ClaimedRow]:
        now = time.monotonic()
        if self._chat_wait:
            self._chat_wait = {c: t for c, t in self._chat_wait.items() if t > now}
        async with transaction(self.rt.sessions) as session:
            return await store.claim_due(
                session,
                instance=self.rt.instance,
                lease_seconds=self.lease,
                limit=limit,
                skip_chats=list(self._chat_wait),
            )

    async def _hand_back(self) -> None:
        """Stopping: rows still claimed go back to the queue at once (not after the lease)."""
        if not self.held.ids:
            return
        with contextlib.suppress(Exception):
            async with asyncio.timeout(3), transaction(self.rt.sessions) as session:
                for row_id in list(self.held.ids):
                    await store.release(session, row_id, self.rt.instance, delay_seconds=0)

    async def _update_depth(self) -> None:
        now = time.monotonic()
        if now - self._depth_at < DEPTH_EVERY_SECONDS:
            return
        self._depth_at = now
        try:
            async with self.rt.sessions() as session:
                depth = await store.depth_by_kind(session)
        except Exception as exc:
            reraise_if_cancelled(exc)
            return
        gauge = self.rt.metrics.outbox_depth
        for kind in self._kinds - depth.keys():  # kinds that drained go to zero
            gauge.labels(kind).set(0)
        for kind, n in depth.items():
            gauge.labels(kind).set(n)
        self._kinds |= depth.keys()

    # ---------------------------------------------------------------- one row

    async def _deliver(self, row: store.ClaimedRow) -> None:
        """Deliver a row, then its chat's following rows for as long as they are due.

        The next row is claimed in the transaction that records this one, so a busy chat
        never waits for the claim loop and its budget stays in use.
        """
        current: store.ClaimedRow | None = row
        while current is not None:
            try:
                outcome = await self._outcome(current)
                following = await self._record(current, outcome)
            finally:
                self.held.ids.discard(current.id)
            current = following
            if current is not None:
                self.held.ids.add(current.id)

    async def _outcome(self, row: store.ClaimedRow) -> Outcome:
        chat_id = row.target.chat_id if row.target is not None else row.chat_id
        try:
            if row.method == "sync":
                return await self._send_sync(row)
            return await self._send_call(row)
        except TelegramRetryAfter as exc:
            self.rt.metrics.rate_limited.inc()
            await self.pacer.pause(chat_id, float(exc.retry_after))
            log.warning(
                "429 for outbox row %s (chat %s): paused %ss", row.id, chat_id, exc.retry_after
            )
            return Outcome("release", delay=float(exc.retry_after), error=self._err(exc))
        except TelegramMigrateToChat as exc:
            return Outcome("migrated", chat_id=chat_id, new_chat_id=exc.migrate_to_chat_id)
        except TelegramForbiddenError as exc:
            if chat_id is not None and chat_id > 0:
                # A person's private chat: not opened, or the bot blocked. Retrying cannot
                # help; it is recorded (bot.private) and the row is finished.
                return Outcome("refused", chat_id=chat_id, error=self._err(exc))
            return Outcome("removed", chat_id=chat_id, error=self._err(exc))
        except TelegramBadRequest as exc:
            if chat_id is not None and chat_id > 0 and "chat not found" in str(exc).lower():
                # A person Telegram does not know (a mistyped requested_by_telegram_id).
                return Outcome("refused", chat_id=chat_id, error=self._err(exc))
            return Outcome("dead", error=self._err(exc))
        except (TelegramServerError, TelegramNetworkError, TimeoutError, aiohttp.ClientError) as e:
            return self._retry(row, e)
        except TelegramAPIError as exc:  # 401, 404, 409, 413: odd; retried, then dead-lettered
            return self._retry(row, exc)
        except (ValidationError, TypeError, AttributeError, ValueError) as exc:
            return Outcome("dead", error=f"unsendable row: {self._err(exc)}")

    def _err(self, exc: BaseException) -> str:
        return sanitize(f"{type(exc).__name__}: {exc}", self.token)

    def _retry(self, row: store.ClaimedRow, exc: BaseException) -> Outcome:
        attempt = row.attempts + 1
        if attempt >= self.max_attempts:
            return Outcome("dead", error=self._err(exc))
        delay = self.retry_base * min(2 ** (attempt - 1), 16)
        delay *= random.uniform(0.75, 1.25)
        return Outcome("retry", delay=delay, error=self._err(exc))

    async def _call(
        self, row: store.ClaimedRow, chat_id: int | None, method: TelegramMethod[Any], first: bool
    ) -> Any:
        """Wait for the budgets, then call; an Outcome instead when the wait is too long."""
        name = method.__api_method__
        if name not in UNPACED:
            held = 0.0
            while True:
                async with self._pace_turn:
                    wait = await self.pacer.acquire(chat_id, row.priority)
                    while 0 < wait <= TURN_HOLD_SECONDS and held + wait <= self.lease / 3:
                        await asyncio.sleep(wait)
                        held += wait
                        wait = await self.pacer.acquire(chat_id, row.priority)
                if wait <= 0:
                    break
                if wait > HOLD_MAX_SECONDS or held + wait > self.lease / 3:
                    self.rt.metrics.outbox_paced.inc()
                    return Outcome("release", delay=wait)
                await asyncio.sleep(wait)  # a chat's budget: others may send meanwhile
                held += wait
        if first and row.attempts == 0:
            self.rt.metrics.send_latency.observe(max(0.0, time.time() - row.created_at.timestamp()))
        hold_response_type(method)
        outcome = "ok"
        try:
            async with asyncio.timeout(self.call_timeout):
                return await self.rt.bot(method, request_timeout=math.ceil(self.call_timeout) + 1)
        except BaseException as exc:
            outcome = type(exc).__name__
            raise
        finally:
            self.rt.metrics.telegram_calls.labels(name, outcome).inc()

    async def _send_call(self, row: store.ClaimedRow) -> Outcome:
        method = build_method(row.method, fit_payload(row.method, row.payload))
        try:
            result = await self._call(row, row.chat_id, method, first=True)
        except TelegramBadRequest as exc:
            text = str(exc).lower()
            if "message is not modified" in text or "message to delete not found" in text:
                return Outcome("done")
            if "query is too old" in text:
                log.info("callback answer %s came too late; only the toast is lost", row.id)
                return Outcome("done")
            raise
        return result if isinstance(result, Outcome) else Outcome("done")

    async def _send_sync(self, row: store.ClaimedRow) -> Outcome:
        t = row.target
        if t is None:
            return Outcome("done")  # the message row is gone
        sent = SyncSent(t.id, None, t.version, t.text, t.reply_markup)
        if t.up_to_date:
            return Outcome("done", sync=sent)  # 'message is not modified' avoided
        markup = reply_markup_model(t.reply_markup)
        text = fit_html(t.text)
        message_id = t.message_id
        thread_id = t.thread_id
        first = True
        while True:
            method: TelegramMethod[Any]
            if message_id is None:
                method = SendMessage(
                    chat_id=t.chat_id,
                    text=text,
                    parse_mode="HTML",
                    reply_markup=markup,
                    message_thread_id=thread_id,
                    reply_parameters=(
                        ReplyParameters(message_id=t.reply_to, allow_sending_without_reply=True)
                        if t.reply_to is not None
                        else None
                    ),
                )
            elif t.sent_text == t.text:
                method = EditMessageReplyMarkup(
                    chat_id=t.chat_id, message_id=message_id, reply_markup=inline_only(markup)
                )
            else:
                method = EditMessageText(
                    chat_id=t.chat_id,
                    message_id=message_id,
                    text=text,
                    parse_mode="HTML",
                    reply_markup=inline_only(markup),
                )
            try:
                result = await self._call(row, t.chat_id, method, first)
            except TelegramBadRequest as exc:
                desc = str(exc).lower()
                if "message is not modified" in desc:
                    return Outcome("done", sync=sent)
                if message_id is not None and "message to edit not found" in desc:
                    log.info(
                        "card %s vanished from chat %s; posting it again",
                        t.id,
                        t.chat_id,
                        extra={"chat_id": t.chat_id},
                    )
                    message_id, first = None, False
                    continue
                if message_id is None and thread_id is not None and topic_gone(desc):
                    log.info(
                        "topic %s of chat %s closed or gone; posting in General",
                        thread_id,
                        t.chat_id,
                    )
                    thread_id, first = None, False
                    continue
                raise
            if isinstance(result, Outcome):
                if message_id is None and t.message_id is not None:
                    # Re-post pending: make the next try send, not edit.
                    return Outcome("release", delay=result.delay, forget_message=True)
                return result
            new_id = result.message_id if isinstance(result, Message) else None
            return Outcome(
                "done",
                left_topic=t.thread_id if thread_id != t.thread_id else None,
                sync=SyncSent(
                    t.id,
                    new_id if message_id is None else None,
                    t.version,
                    t.text,
                    t.reply_markup,
                ),
            )

    # ---------------------------------------------------------------- recording

    async def _record(self, row: store.ClaimedRow, outcome: Outcome) -> store.ClaimedRow | None:
        """Store the outcome in a new short transaction, riding out database blips.

        When the row left its chat's queue, the same transaction claims the chat's next row if
        it is due (returned; first try only, so a failing claim never holds up the record).
        """
        for attempt in range(10):
            following: list[store.ClaimedRow] = []
            try:
                async with transaction(self.rt.sessions) as session:
                    action = await apply_outcome(session, self.rt.instance, row, outcome)
                    if attempt == 0 and row.chat_id is not None and action in ("done", "dead"):
                        following = await store.claim_due(
                            session,
                            instance=self.rt.instance,
                            lease_seconds=self.lease,
                            limit=1,
                            chat_id=row.chat_id,
                        )
            except IntegrityError:
                continue  # a concurrent edit queued a sibling sync: fold into it next time
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                reraise_if_cancelled(exc)
                log.warning(
                    "recording outbox row %s failed (%s); retrying", row.id, type(exc).__name__
                )
                await asyncio.sleep(min(0.1 * 2**attempt, 2.0))
                continue
            self._after(row, outcome, action)
            return following[0] if following else None
        log.error("outbox row %s: outcome not recorded; it is sent again after its lease", row.id)
        return None

    def _after(self, row: store.ClaimedRow, outcome: Outcome, action: str) -> None:
        m = self.rt.metrics
        if action == "retry":
            m.retries.inc()
            log.warning(
                "outbox row %s (chat %s) failed, retry in %.1fs: %s",
                row.id,
                row.chat_id,
                outcome.delay,
                outcome.error,
            )
        elif action == "dead":
            m.dead_letters.inc()
            log.error(
                "outbox row %s (chat %s) dead-lettered: %s",
                row.id,
                row.chat_id,
                outcome.error,
                extra={"chat_id": row.chat_id},
            )
        elif action == "refused":
            log.info(
                "private chat %s refused (not started or blocked); recorded, not retried",
                outcome.chat_id,
                extra={"chat_id": outcome.chat_id},
            )
        elif action == "removed":
            log.warning(
                "bot removed from chat %s; its rows wait",
                outcome.chat_id,
                extra={"chat_id": outcome.chat_id},
            )
        elif action == "migrated":
            log.info(
                "chat %s migrated to %s",
                outcome.chat_id,
                outcome.new_chat_id,
                extra={"chat_id": outcome.chat_id},
            )
        if outcome.delay > 0 and action in ("release", "retry"):
            self._next_due = min(self._next_due, time.monotonic() + outcome.delay)
            # Not for a count refresh held back by the group-window share it may use: the
            # chat's budget is still open to first appearances and resolves.
            reserved = self.pacer.reserve_for(row.priority) > 0
            if action == "release" and row.chat_id is not None and not reserved:
                self._chat_wait[row.chat_id] = time.monotonic() + outcome.delay
        elif action in ("release", "migrated", "removed"):
            self._next_due = time.monotonic()


async def run_sender(rt: Runtime) -> None:
    """Deliver outbox rows until cancelled."""
    await Sender(rt).run()
