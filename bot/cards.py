"""Shared pieces of card rendering: escaping, clipping, times; cards stay under 4096 chars."""

from __future__ import annotations

from datetime import datetime
from functools import lru_cache
from html import escape
from zoneinfo import ZoneInfo

MAX_TEXT = 4096  # Telegram's limit on a message's text after entity parsing
ELLIPSIS = "…"


def esc(value: object) -> str:
    """Escape untrusted text for Telegram's HTML parse mode."""
    return escape(str(value), quote=False)


def clip(value: object, limit: int) -> str:
    """Visibly shorten untrusted text to `limit` characters, then escape it.

    Clipping happens before escaping, so an entity like &amp; is never cut in half.
    """
    text = str(value)
    if len(text) > limit:
        text = text[: max(0, limit - 1)] + ELLIPSIS
    return esc(text)


def href(url: str) -> str:
    return escape(url, quote=True)


def fmt_time(moment: datetime | None, tz: ZoneInfo) -> str:
    if moment is None:
        return "—"
    return _fmt_minute(int(moment.timestamp()) // 60, tz)


@lru_cache(maxsize=4096)
def _fmt_minute(minute: int, tz: ZoneInfo) -> str:
    # Cards show minutes, and a card under votes (up to 15 vote lines) is re-rendered often.
    return datetime.fromtimestamp(minute * 60, tz).strftime("%Y-%m-%d %H:%M %Z")


def fmt_duration(seconds: float) -> str:
    seconds = int(max(0, seconds))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    if minutes:
        return f"{minutes}m {secs}s"
    return f"{secs}s"
