"""The outbox sender: claims due rows, paces them through Redis, calls Telegram, records it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import re
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Literal, cast

import aiogram.methods
import aiohttp
import asyncpg
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
from aiogram.methods.base import Response
from aiogram.types import InlineKeyboardMarkup, Message
from pydantic import ValidationError
from sqlalchemy.exc import IntegrityError

from bot import chats
from bot.rendering import fit_html, fit_plain
from bot.runtime import Runtime
from storage import audit, keys
from storage import outbox as store
from storage.db import to_sync_dsn, transaction

log = logging.getLogger(__name__)

CHANNEL = "quorum_outbox"
POLL_SECONDS = 1.0
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
RATE_MARGIN = 0.97
# Not counted against Telegram's message budgets.
UNPACED = frozenset({"answerCallbackQuery", "getMe", "getChat", "deleteWebhook", "setWebhook"})
_TOKEN_RE = re.compile(r"\d{3,20}:[A-Za-z0-9_-]{30,}")
# pydantic caches parametrized generic models only weakly, so aiogram's Response[T], built to
# parse every answer, is rebuilt (milliseconds of CPU) after each garbage collection unless
# something holds it; at full send rate that was a tenth of this process's time.
_RESPONSE_TYPES: dict[type[TelegramMethod[Any]], Any] = {}


def build_method(method: str, payload: dict[str, Any]) -> TelegramMethod[Any]:
    """An aiogram method object from an outbox row's method name and JSON payload."""
    cls = getattr(aiogram.methods, method[0].upper() + method[1:])
    if not (isinstance(cls, type) and issubclass(cls, TelegramMethod)):
        raise TypeError(f"{method} is not a Bot API method")
    result: TelegramMethod[Any] = cls(**payload)
    return result


def sanitize(text: str, token: str = "") -> str:
    """Error text fit to store or log: the bot token (aiogram puts it in URLs) is masked."""
    if token:
        text = text.replace(token, "<token>")
    return _TOKEN_RE.sub("<token>", text)[:1000]


def _fit_payload(method: str, payload: dict[str, Any]) -> dict[str, Any]:
    text = payload.get("text")
    if method not in {"sendMessage", "editMessageText"} or not isinstance(text, str):
        return payload
    html_mode = str(payload.get("parse_mode") or "").lower() == "html"
    fitted = fit_html(text) if html_mode else fit_plain(text)
    return payload if fitted is text else {**payload, "text": fitted}


# ---------------------------------------------------------------- pacing

# Returns "0" after charging every budget, else the seconds to wait (nothing charged).
# KEYS: pause:bot, pause:<chat>, pace:bot, pace:chat:<id>, pace:group:<id>
# ARGV: bot rate, bot capacity, chat rate, chat capacity, group limit, group window,
#       is group, has chat, unique member
_PACE_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local wait = 0
local p = redis.call('PTTL', KEYS[1])
if p > 0 then wait = p / 1000 end
if ARGV[8] == '1' then
  p = redis.call('PTTL', KEYS[2])
  if p > 0 and p / 1000 > wait then wait = p / 1000 end
end
if wait > 0 then return tostring(wait) end
local function level(key, rate, cap)
  local v = redis.call('HMGET', key, 't', 'ts')
  local tokens = tonumber(v[1])
  local ts = tonumber(v[2])
  if tokens == nil or ts == nil then return cap end
  if now > ts then tokens = math.min(cap, tokens + (now - ts) * rate) end
  return tokens
end
local br, bc = tonumber(ARGV[1]), tonumber(ARGV[2])
local bt = level(KEYS[3], br, bc)
if bt < 1 then wait = (1 - bt) / br end
local ct = 0
local window = tonumber(ARGV[6])
if ARGV[8] == '1' then
  local cr, cc = tonumber(ARGV[3]), tonumber(ARGV[4])
  ct = level(KEYS[4], cr, cc)
  if ct < 1 then wait = math.max(wait, (1 - ct) / cr) end
  if ARGV[7] == '1' then
    local limit = tonumber(ARGV[5])
    redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', now - window)
    local n = redis.call('ZCARD', KEYS[5])
    if n >= limit then
      local e = redis.call('ZRANGE', KEYS[5], n - limit, n - limit, 'WITHSCORES')
      wait = math.max(wait, tonumber(e[2]) + window - now)
    end
  end
end
if wait > 0 then return tostring(wait) end
redis.call('HSET', KEYS[3], 't', tostring(bt - 1), 'ts', tostring(now))
redis.call('EXPIRE', KEYS[3], 600)
if ARGV[8] == '1' then
  redis.call('HSET', KEYS[4], 't', tostring(ct - 1), 'ts', tostring(now))
  redis.call('EXPIRE', KEYS[4], 3600)
  if ARGV[7] == '1' then
    redis.call('ZADD', KEYS[5], now, ARGV[9])
    redis.call('EXPIRE', KEYS[5], math.ceil(window) + 60)
  end
end
return '0'
"""


class _Bucket:
    __slots__ = ("capacity", "last", "rate", "tokens")

    def __init__(self, rate: float, capacity: float) -> None:
        self.rate, self.capacity = rate, capacity
        self.tokens, self.last = 1.0, time.monotonic()

    def wait(self, now: float) -> float:
        if now > self.last:
            self.tokens = min(self.capacity, self.tokens + (now - self.last) * self.rate)
            self.last = now
        return 0.0 if self.tokens >= 1 else (1 - self.tokens) / self.rate


class _Window:
    __slots__ = ("events", "limit", "window")

    def __init__(self, limit: int, window: float) -> None:
        self.limit, self.window = limit, window
        self.events: deque[float] = deque()

    def wait(self, now: float) -> float:
        while self.events and self.events[0] <= now - self.window:
            self.events.popleft()
        if len(self.events) < self.limit:
            return 0.0
        return self.events[len(self.events) - self.limit] + self.window - now


@dataclass(frozen=True)
class Rates:
    bot_per_second: float
    bot_capacity: float
    chat_per_second: float
    chat_capacity: float
    group_limit: int
    group_window: float


class Pacer:
    """Telegram's budgets shared by every process in Redis; in-process at half rate without it.

    The shared budgets keep a margin under the configured limits (a few percent slower, a
    smaller burst, a slightly longer group window): Telegram's buckets then refill faster than
    we drain them, so jitter between our clock and its arrival times never tips into a 429.
    """

    def __init__(self, rt: Runtime) -> None:
        s = rt.settings
        self.redis = rt.redis
        self.metrics = rt.metrics
        self.shared = Rates(
            bot_per_second=s.pace_bot_per_second * RATE_MARGIN,
            bot_capacity=max(1.0, s.pace_bot_per_second / 2),
            chat_per_second=s.pace_chat_per_second * RATE_MARGIN,
            chat_capacity=float(max(1, s.pace_chat_burst - 1)),
            group_limit=s.pace_group_per_minute,
            group_window=s.pace_group_window_seconds * 1.02 + 0.5,
        )
        self.local = Rates(
            bot_per_second=s.pace_bot_per_second / 2,
            bot_capacity=max(1.0, s.pace_bot_per_second / 4),
            chat_per_second=s.pace_chat_per_second / 2,
            chat_capacity=1.0,
            group_limit=max(1, s.pace_group_per_minute // 2),
            group_window=s.pace_group_window_seconds * 1.02 + 0.5,
        )
        self._script = self.redis.register_script(_PACE_LUA)
        self._redis_retry_at = 0.0
        self._seq = 0
        self._bot = _Bucket(self.local.bot_per_second, self.local.bot_capacity)
        self._chats: dict[int, _Bucket] = {}
        self._groups: dict[int, _Window] = {}
        # Pauses seen by this process, kept even with Redis up (a 429 applies at once here).
        self._paused: dict[str, float] = {}

    def _local_pause(self, chat_id: int | None) -> float:
        now = time.monotonic()
        wait = self._paused.get("bot", 0.0) - now
        if chat_id is not None:
            wait = max(wait, self._paused.get(str(chat_id), 0.0) - now)
        return max(0.0, wait)

    async def acquire(self, chat_id: int | None) -> float:
        """Charge one call against the budgets; 0 means go now, else seconds to wait."""
        paused = self._local_pause(chat_id)
        if paused > 0:
            return paused
        if time.monotonic() >= self._redis_retry_at:
            try:
                return await self._acquire_shared(chat_id)
            except Exception as exc:  # any Redis fault: degrade, never stop sending
                _reraise_if_cancelled(exc)
                if self._redis_retry_at == 0.0 or time.monotonic() - self._redis_retry_at > 5:
                    log.warning("pacing falls back to in-process limits: %s", type(exc).__name__)
                self._redis_retry_at = time.monotonic() + 1.0
        self.metrics.pacing_fallback.inc()
        return self._acquire_local(chat_id)

    async def _acquire_shared(self, chat_id: int | None) -> float:
        r = self.shared
        self._seq += 1
        has_chat = chat_id is not None
        cid = chat_id or 0
        scope = str(cid)
        result = await self._script(
            keys=[
                keys.pause("bot"),
                keys.pause(scope),
                keys.pace_bot(),
                keys.pace_chat(cid),
                keys.pace_group(cid),
            ],
            args=[
                r.bot_per_second,
                r.bot_capacity,
                r.chat_per_second,
                r.chat_capacity,
                r.group_limit,
                r.group_window,
                "1" if has_chat and cid < 0 else "0",
                "1" if has_chat else "0",
                f"{id(self)}:{self._seq}:{random.random()}",
            ],
        )
        if self._redis_retry_at:
            log.info("pacing back on shared Redis budgets")
            self._redis_retry_at = 0.0
        return float(result.decode() if isinstance(result, bytes) else result)

    def _acquire_local(self, chat_id: int | None) -> float:
        r = self.local
        now = time.monotonic()
        wait = self._bot.wait(now)
        chat_bucket: _Bucket | None = None
        window: _Window | None = None
        if chat_id is not None:
            chat_bucket = self._chats.get(chat_id)
            if chat_bucket is None:
                chat_bucket = self._chats[chat_id] = _Bucket(r.chat_per_second, r.chat_capacity)
            wait = max(wait, chat_bucket.wait(now))
            if chat_id < 0:
                window = self._groups.get(chat_id)
                if window is None:
                    window = self._groups[chat_id] = _Window(r.group_limit, r.group_window)
                wait = max(wait, window.wait(now))
        if wait > 0:
            return wait
        self._bot.tokens -= 1
        if chat_bucket is not None:
            chat_bucket.tokens -= 1
        if window is not None:
            window.events.append(now)
        return 0.0

    async def pause(self, chat_id: int | None, seconds: float) -> None:
        """Telegram said 429: nothing goes to that scope (the chat, or the bot) for a while."""
        scope = "bot" if chat_id is None else str(chat_id)
        self._paused[scope] = time.monotonic() + seconds
        with contextlib.suppress(Exception):
            await self.redis.set(keys.pause(scope), b"1", px=max(1, int(seconds * 1000)))


# ---------------------------------------------------------------- outcomes


@dataclass(frozen=True)
class SyncSent:
    message_row_id: int
    message_id: int | None  # set when Telegram gave a new message its id
    version: int
    text: str
    markup: dict[str, Any] | None


@dataclass(frozen=True)
class Outcome:
    action: Literal["done", "release", "retry", "dead", "removed", "migrated"]
    delay: float = 0.0
    error: str | None = None
    sync: SyncSent | None = None
    chat_id: int | None = None
    new_chat_id: int | None = None
    forget_message: bool = False  # the card is gone from Telegram: post it again


def _reraise_if_cancelled(exc: Exception) -> None:
    """A cancelled unit of work can fail in its rollback (the connection is still busy with
    the cancelled statement): that error must not turn the cancellation into a retry."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError from exc


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
        listener = asyncio.create_task(self._listen(), name="outbox-listen")
        try:
            while True:
                free = self.concurrency - len(self.tasks)
                claimed: list[store.ClaimedRow] = []
                if free > 0:
                    since = time.monotonic() - self._claimed_at
                    if not self._slot_freed and since < NOTIFY_COALESCE_SECONDS:
                        await asyncio.sleep(NOTIFY_COALESCE_SECONDS - since)
                    self.wake.clear()
                    self._slot_freed = False
                    self._claimed_at = time.monotonic()
                    try:
                        claimed = await self._claim(free)
                    except Exception as exc:
                        _reraise_if_cancelled(exc)
                        log.warning("outbox claim failed (%s); retrying", type(exc).__name__)
                        await asyncio.sleep(0.5)
                        continue
                    for row in claimed:
                        self.held.ids.add(row.id)
                        task = asyncio.create_task(self._deliver(row), name=f"outbox-{row.id}")
                        self.tasks.add(task)
                        task.add_done_callback(self._finished)
                else:
                    # Every slot busy: sleep until one frees (_finished sets the event). Left
                    # set by new rows, the wait below would return at once, for ever, without
                    # yielding to the rest of the process.
                    self.wake.clear()
                await self._update_depth()
                if claimed and len(claimed) == free:
                    continue  # there may be more, and a slot frees up soon
                now = time.monotonic()
                timeout = min(POLL_SECONDS, max(0.005, self._next_due - now))
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(timeout):
                        await self.wake.wait()
                if time.monotonic() >= self._next_due:
                    self._next_due = math.inf
        finally:
            listener.cancel()
            for task in list(self.tasks):
                task.cancel()
            await asyncio.gather(listener, *self.tasks, return_exceptions=True)
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
            _reraise_if_cancelled(exc)
            return
        gauge = self.rt.metrics.outbox_depth
        for kind in self._kinds - depth.keys():  # kinds that drained go to zero
            gauge.labels(kind).set(0)
        for kind, n in depth.items():
            gauge.labels(kind).set(n)
        self._kinds |= depth.keys()

    async def _listen(self) -> None:
        """LISTEN on a dedicated connection; reconnects after losing it (polling meanwhile)."""
        dsn = to_sync_dsn(self.rt.engine.url.render_as_string(hide_password=False))
        backoff = 0.2
        while True:
            conn: Any = None
            try:
                conn = await asyncpg.connect(dsn, timeout=5)
                await conn.add_listener(CHANNEL, lambda *_: self.wake.set())
                backoff = 0.2
                self.wake.set()  # rows may have arrived while we were not listening
                while True:
                    await asyncio.sleep(2)
                    await conn.fetchval("SELECT 1", timeout=2)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                _reraise_if_cancelled(exc)
                log.info("outbox LISTEN connection lost (%s); reconnecting", type(exc).__name__)
                self.wake.set()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
            finally:
                if conn is not None:
                    with contextlib.suppress(Exception):
                        async with asyncio.timeout(1):
                            await conn.close()

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
            return Outcome("removed", chat_id=chat_id, error=self._err(exc))
        except TelegramBadRequest as exc:
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
                    wait = await self.pacer.acquire(chat_id)
                    while 0 < wait <= TURN_HOLD_SECONDS and held + wait <= self.lease / 3:
                        await asyncio.sleep(wait)
                        held += wait
                        wait = await self.pacer.acquire(chat_id)
                if wait <= 0:
                    break
                if wait > HOLD_MAX_SECONDS or held + wait > self.lease / 3:
                    self.rt.metrics.outbox_paced.inc()
                    return Outcome("release", delay=wait)
                await asyncio.sleep(wait)  # a chat's budget: others may send meanwhile
                held += wait
        if first and row.attempts == 0:
            self.rt.metrics.send_latency.observe(max(0.0, time.time() - row.created_at.timestamp()))
        if type(method) not in _RESPONSE_TYPES:
            _RESPONSE_TYPES[type(method)] = cast(Any, Response)[method.__returning__]
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
        method = build_method(row.method, _fit_payload(row.method, row.payload))
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
        markup = InlineKeyboardMarkup.model_validate(t.reply_markup) if t.reply_markup else None
        text = fit_html(t.text)
        message_id = t.message_id
        first = True
        while True:
            method: TelegramMethod[Any]
            if message_id is None:
                method = SendMessage(
                    chat_id=t.chat_id, text=text, parse_mode="HTML", reply_markup=markup
                )
            elif t.sent_text == t.text:
                method = EditMessageReplyMarkup(
                    chat_id=t.chat_id, message_id=message_id, reply_markup=markup
                )
            else:
                method = EditMessageText(
                    chat_id=t.chat_id,
                    message_id=message_id,
                    text=text,
                    parse_mode="HTML",
                    reply_markup=markup,
                )
            try:
                result = await self._call(row, t.chat_id, method, first)
            except TelegramBadRequest as exc:
                desc = str(exc).lower()
                if "message is not modified" in desc:
                    return Outcome("done", sync=sent)
                if message_id is not None and "message to edit not found" in desc:
                    log.info("card %s vanished from chat %s; posting it again", t.id, t.chat_id)
                    message_id, first = None, False
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
                    action = await self._apply(session, row, outcome)
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
                _reraise_if_cancelled(exc)
                log.warning(
                    "recording outbox row %s failed (%s); retrying", row.id, type(exc).__name__
                )
                await asyncio.sleep(min(0.1 * 2**attempt, 2.0))
                continue
            self._after(row, outcome, action)
            return following[0] if following else None
        log.error("outbox row %s: outcome not recorded; it is sent again after its lease", row.id)
        return None

    async def _apply(self, session: Any, row: store.ClaimedRow, outcome: Outcome) -> str:
        """Returns what was done: the outcome's action, or 'dead' when it had to give up."""
        me = self.rt.instance
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
                "outbox row %s (chat %s) dead-lettered: %s", row.id, row.chat_id, outcome.error
            )
        elif action == "removed":
            log.warning("bot removed from chat %s; its rows wait", outcome.chat_id)
        elif action == "migrated":
            log.info("chat %s migrated to %s", outcome.chat_id, outcome.new_chat_id)
        if outcome.delay > 0 and action in ("release", "retry"):
            self._next_due = min(self._next_due, time.monotonic() + outcome.delay)
            if action == "release" and row.chat_id is not None:
                self._chat_wait[row.chat_id] = time.monotonic() + outcome.delay
        elif action in ("release", "migrated", "removed"):
            self._next_due = time.monotonic()


async def run_sender(rt: Runtime) -> None:
    """Deliver outbox rows until cancelled."""
    await Sender(rt).run()
