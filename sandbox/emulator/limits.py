"""Telegram's flood limits: per-bot and per-chat token buckets and the per-group window."""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Limits:
    """Telegram's (approximate) flood limits; `group_window_seconds` exists for fast tests."""

    per_bot_per_second: float = 30
    per_chat_per_second: float = 1
    per_chat_burst: int = 3
    per_group_per_minute: int = 20
    group_window_seconds: float = 60.0


class Bucket:
    """Token bucket: `rate` tokens per second, at most `capacity`."""

    __slots__ = ("capacity", "last", "rate", "tokens")

    def __init__(self, rate: float, capacity: float, now: float) -> None:
        self.rate = rate
        self.capacity = capacity
        self.tokens = capacity
        self.last = now

    def wait_time(self, now: float) -> float:
        """Refill, then return 0 if a token is available, else seconds until one is."""
        if now > self.last:
            self.tokens = min(self.capacity, self.tokens + (now - self.last) * self.rate)
            self.last = now
        if self.tokens >= 1:
            return 0.0
        if self.rate <= 0:
            return 3600.0
        return (1 - self.tokens) / self.rate

    def take(self) -> None:
        self.tokens -= 1


class Window:
    """Sliding window: at most `limit` events within `window` seconds."""

    __slots__ = ("events", "limit", "window")

    def __init__(self, limit: int, window: float) -> None:
        self.limit = limit
        self.window = window
        self.events: deque[float] = deque()

    def wait_time(self, now: float) -> float:
        events = self.events
        cutoff = now - self.window
        while events and events[0] <= cutoff:
            events.popleft()
        if len(events) < self.limit:
            return 0.0
        if self.limit <= 0:
            return self.window
        return events[len(events) - self.limit] + self.window - now

    def take(self, now: float) -> None:
        self.events.append(now)


@dataclass
class FloodBudget:
    """One bot's budgets, made on first use: the whole bot, each chat, each group."""

    bot: Bucket | None = None
    chats: dict[int, Bucket] = field(default_factory=dict)
    groups: dict[int, Window] = field(default_factory=dict)

    def clear(self) -> None:
        """Forget every budget (the limits changed)."""
        self.bot = None
        self.chats.clear()
        self.groups.clear()

    def charge(self, lim: Limits, chat_id: int, is_group: bool, now: float) -> int:
        """Take one send from every budget it counts against and return 0; or, when one
        is spent, take nothing and return the whole seconds to wait (at least 1)."""
        bot_bucket = self.bot
        if bot_bucket is None:
            bot_bucket = self.bot = Bucket(
                lim.per_bot_per_second, max(1.0, lim.per_bot_per_second), now
            )
        chat_bucket = self.chats.get(chat_id)
        if chat_bucket is None:
            chat_bucket = self.chats[chat_id] = Bucket(
                lim.per_chat_per_second, max(1, lim.per_chat_burst), now
            )
        wait = max(bot_bucket.wait_time(now), chat_bucket.wait_time(now))
        window: Window | None = None
        if is_group:
            window = self.groups.get(chat_id)
            if window is None:
                window = self.groups[chat_id] = Window(
                    lim.per_group_per_minute, lim.group_window_seconds
                )
            wait = max(wait, window.wait_time(now))
        if wait > 0:
            return max(1, math.ceil(wait))
        bot_bucket.take()
        chat_bucket.take()
        if window is not None:
            window.take(now)
        return 0
