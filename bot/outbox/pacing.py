"""Telegram's send budgets: token buckets and the group window, shared by every process in Redis."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from bot.runtime import Runtime
from storage import keys
from storage.outbox import Priority

log = logging.getLogger(__name__)

RATE_MARGIN = 0.97
# Count refreshes may use only this share of a group's per-minute window: the rest stays for
# first appearances and resolves, so a storm's refreshes never make a resolve wait a minute.
REFRESH_SHARE = 0.5
# Not counted against Telegram's message budgets.
UNPACED = frozenset({"answerCallbackQuery", "getMe", "getChat", "deleteWebhook", "setWebhook"})


def reraise_if_cancelled(exc: Exception) -> None:
    """A cancelled unit of work can fail in its rollback (the connection is still busy with
    the cancelled statement): that error must not turn the cancellation into a retry."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError from exc


# Returns "0" after charging every budget, else the seconds to wait (nothing charged).
# KEYS: pause:bot, pause:<chat>, pace:bot, pace:chat:<id>, pace:group:<id>
# ARGV: bot rate, bot capacity, chat rate, chat capacity, group limit, group window,
#       is group, has chat, unique member, reserve (window slots this call must leave free)
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
    local limit = tonumber(ARGV[5]) - tonumber(ARGV[10])
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

    def wait(self, now: float, reserve: int = 0) -> float:
        while self.events and self.events[0] <= now - self.window:
            self.events.popleft()
        limit = self.limit - reserve
        if len(self.events) < limit:
            return 0.0
        return self.events[len(self.events) - limit] + self.window - now


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

    def __init__(self, rt: Runtime, clock: Callable[[], float] = time.monotonic) -> None:
        s = rt.settings
        # When to try Redis again (tests move it instead of waiting).
        self.clock = clock
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
        # In-process Redis (one process, no Lua): the in-process limits are the budgets.
        self._redis_retry_at = 0.0 if s.redis_url else math.inf
        # Whether the shared budgets failed last time; the log says each change once.
        self.degraded = False
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

    def reserve_for(self, priority: int) -> int:
        """Group-window slots a call of this priority must leave free: count refreshes leave
        some for first appearances and resolves, so a storm of refreshes never makes a resolve
        wait for the window to turn."""
        if priority < Priority.ALERT_EDIT:
            return 0
        return int(self.shared.group_limit * (1 - REFRESH_SHARE))

    async def acquire(self, chat_id: int | None, priority: int = 0) -> float:
        """Charge one call against the budgets; 0 means go now, else seconds to wait."""
        reserve = self.reserve_for(priority)
        paused = self._local_pause(chat_id)
        if paused > 0:
            return paused
        if self.clock() >= self._redis_retry_at:
            try:
                return await self._acquire_shared(chat_id, reserve)
            except Exception as exc:  # any Redis fault: degrade, never stop sending
                reraise_if_cancelled(exc)
                if not self.degraded:  # said once; again only after a recovery
                    log.warning(
                        "pacing falls back to in-process limits (shared Redis budgets "
                        "unavailable: %s): this process sends at half Telegram's rates, and "
                        "several processes together may exceed them; retried every second, "
                        "logged again when it recovers",
                        type(exc).__name__,
                    )
                self.degraded = True
                self._redis_retry_at = self.clock() + 1.0
        self.metrics.pacing_fallback.inc()
        return self._acquire_local(chat_id, reserve)

    async def _acquire_shared(self, chat_id: int | None, reserve: int) -> float:
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
                reserve,
            ],
        )
        if self.degraded:
            log.warning("pacing back on shared Redis budgets (recovered)")
            self.degraded = False
        return float(result.decode() if isinstance(result, bytes) else result)

    def _acquire_local(self, chat_id: int | None, reserve: int) -> float:
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
                held = int(r.group_limit * (1 - REFRESH_SHARE)) if reserve else 0
                wait = max(wait, window.wait(now, held))
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
