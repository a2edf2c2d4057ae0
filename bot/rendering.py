"""Card and message rendering shared by every feature: escaping, clipping, times, plurals.

Every text Quorum sends is HTML parse mode and must stay within Telegram's 4096 visible
characters; untrusted text is always escaped here before it reaches a template.
"""

from __future__ import annotations

import re
from datetime import datetime
from functools import lru_cache
from html import escape
from zoneinfo import ZoneInfo

MAX_TEXT = 4096  # Telegram's limit on a message's text after entity parsing
ELLIPSIS = "…"


def esc(value: object) -> str:
    """Escape untrusted text for Telegram's HTML parse mode."""
    return escape(str(value), quote=False)


def href(url: str) -> str:
    return escape(url, quote=True)


def card_link(chat_id: int, message_id: int) -> str | None:
    """t.me link to a message; only supergroups and channels (-100…) have one."""
    raw = str(chat_id)
    if raw.startswith("-100"):
        return f"https://t.me/c/{raw[4:]}/{message_id}"
    return None


def mention(telegram_id: int, name: str) -> str:
    return f'<a href="{href(f"tg://user?id={telegram_id}")}">{esc(name)}</a>'


def clip(value: object, limit: int) -> str:
    """Visibly shorten untrusted text to `limit` characters, then escape it.

    Clipping happens before escaping, so an entity like &amp; is never cut in half.
    """
    text = str(value)
    if len(text) > limit:
        text = text[: max(0, limit - 1)] + ELLIPSIS
    return esc(text)


def fit(value: object, limit: int) -> str:
    """Escaped text no longer than `limit` characters of HTML, visibly clipped if needed."""
    raw = str(value)
    out = clip(raw, limit)
    n = limit
    while len(out) > limit and n > 1:
        n = max(1, min(n - 1, n * limit // len(out)))
        out = clip(raw, n)
    return out


def plural(count: int, singular: str, plural_form: str | None = None) -> str:
    """`1 hit`, `2 hits`: a count with its noun."""
    word = singular if count == 1 else (plural_form or singular + "s")
    return f"{count} {word}"


def join_lines(lines: list[str], limit: int = MAX_TEXT - 40) -> str:
    """Whole lines of HTML up to `limit` characters; an ellipsis line marks what was left out."""
    out: list[str] = []
    size = 0
    for line in lines:
        if size + len(line) + 1 > limit:
            out.append(ELLIPSIS)
            break
        out.append(line)
        size += len(line) + 1
    return "\n".join(out)


# ---------------------------------------------------------------- times


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


# ---------------------------------------------------------------- HTML-safe truncation

_HTML_TOKEN = re.compile(r"<[^<>]*>|&#?[0-9A-Za-z]{1,32};|[^<&]+|[<&]")
_TAG_NAME = re.compile(r"</?\s*([A-Za-z0-9-]*)")


def _is_tag(tok: str) -> bool:
    return len(tok) > 1 and tok[0] == "<" and tok[-1] == ">"


def _is_entity(tok: str) -> bool:
    return len(tok) > 2 and tok[0] == "&" and tok[-1] == ";"


def visible_length(text: str) -> int:
    """Characters Telegram counts after parsing the HTML (tags are free, an entity is one)."""
    n = 0
    for m in _HTML_TOKEN.finditer(text):
        tok = m.group()
        if _is_tag(tok):
            continue
        n += 1 if _is_entity(tok) else len(tok)
    return n


def fit_html(text: str, limit: int = MAX_TEXT, ellipsis: str = ELLIPSIS) -> str:
    """Cut HTML to at most `limit` visible characters without breaking a tag or an entity.

    Tags left open at the cut are closed (innermost first) and tags that would enclose nothing
    are dropped; the ellipsis marks the cut.
    """
    if len(text) <= limit or visible_length(text) <= limit:
        return text
    budget = max(0, limit - len(ellipsis))
    out: list[str] = []
    # (tag name, index of its opening tag in out, visible count when opened)
    stack: list[tuple[str, int, int]] = []
    used = 0
    for m in _HTML_TOKEN.finditer(text):
        tok = m.group()
        if _is_tag(tok):
            _track_tag(tok, stack, out, used)
            continue
        size = 1 if _is_entity(tok) else len(tok)
        if used + size <= budget:
            out.append(tok)
            used += size
            continue
        if not _is_entity(tok):
            out.append(tok[: budget - used])
            used = budget
        break
    for name, index, opened_at in reversed(stack):
        if opened_at == used:
            out[index] = ""  # opened right at the cut: would enclose nothing
        else:
            out.append(f"</{name}>")
    return "".join(out) + escape(ellipsis, quote=False)


def _track_tag(tok: str, stack: list[tuple[str, int, int]], out: list[str], used: int) -> None:
    name_match = _TAG_NAME.match(tok)
    name = (name_match.group(1) if name_match else "").lower()
    if tok.startswith("</"):
        for i in range(len(stack) - 1, -1, -1):
            if stack[i][0] == name:
                del stack[i:]
                break
    else:
        stack.append((name, len(out), used))
    out.append(tok)


def fit_plain(text: str, limit: int = MAX_TEXT) -> str:
    return text if len(text) <= limit else text[: limit - 1] + ELLIPSIS
