"""Token buckets for API callers, shared by every replica in Redis; in-process without it."""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field

from redis.asyncio import Redis

from bot.errors import RateLimited
from bot.policy import ApiKey
from storage import keys

log = logging.getLogger(__name__)

# How long to leave Redis alone after a failure: each try can cost a socket timeout.
REDIS_RETRY_SECONDS = 1.0

# Returns "0" after taking a token, else the seconds until one is there (nothing taken).
# KEYS: the bucket; ARGV: tokens per second, capacity
_BUCKET_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local rate, cap = tonumber(ARGV[1]), tonumber(ARGV[2])
local v = redis.call('HMGET', KEYS[1], 't', 'ts')
local tokens, ts = tonumber(v[1]), tonumber(v[2])
if tokens == nil or ts == nil then tokens = cap; ts = now end
if now > ts then tokens = math.min(cap, tokens + (now - ts) * rate) end
if tokens < 1 then return tostring((1 - tokens) / rate) end
redis.call('HSET', KEYS[1], 't', tostring(tokens - 1), 'ts', tostring(now))
redis.call('EXPIRE', KEYS[1], math.ceil(cap / rate) + 60)
return '0'
"""


@dataclass(slots=True)
class LocalBucket:
    """The same bucket in this process's memory (monotonic clock)."""

    rate: float
    capacity: float
    tokens: float
    last: float = field(default_factory=time.monotonic)

    def take(self, now: float) -> float:
        """0 after taking a token, else the seconds until one is there."""
        if now > self.last:
            self.tokens = min(self.capacity, self.tokens + (now - self.last) * self.rate)
            self.last = now
        if self.tokens < 1:
            return (1 - self.tokens) / self.rate
        self.tokens -= 1
        return 0.0


class CreationLimits:
    """How many approval requests each API key may create: `burst` at once, then
    `rate_per_minute`. A Redis fault degrades to per-process buckets, never to an error."""

    def __init__(self, redis: Redis) -> None:
        self._script = redis.register_script(_BUCKET_LUA)
        self._local: dict[bytes, LocalBucket] = {}
        self._redis_retry_at = 0.0

    async def take(self, key: ApiKey) -> None:
        """Charge one creation to the key; raises RateLimited when its bucket is empty."""
        wait = await self._wait(key)
        if wait > 0:
            raise RateLimited(
                f"API key {key.name!r} may create {key.rate_per_minute} approval requests "
                f"a minute (bursts of {key.burst}); retry later",
                math.ceil(wait),
            )

    async def _wait(self, key: ApiKey) -> float:
        if time.monotonic() >= self._redis_retry_at:
            try:
                result = await self._script(
                    keys=[keys.approval_rate(key.sha256.hex()[:32])],
                    args=[key.rate_per_minute / 60, key.burst],
                )
                self._redis_retry_at = 0.0
                return float(result.decode() if isinstance(result, bytes) else result)
            except Exception as exc:  # any Redis fault: limit in this process instead
                if self._redis_retry_at == 0.0:
                    log.warning("API rate limits fall back to this process: %s", type(exc).__name__)
                self._redis_retry_at = time.monotonic() + REDIS_RETRY_SECONDS
        bucket = self._local.get(key.sha256)
        if bucket is None:
            bucket = LocalBucket(key.rate_per_minute / 60, key.burst, float(key.burst))
            self._local[key.sha256] = bucket
        return bucket.take(time.monotonic())
