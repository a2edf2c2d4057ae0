"""Stateful Telegram Bot API emulator over real HTTP with Telegram's limits and faults."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import math
import re
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypedDict, cast

import aiohttp
from aiohttp import web

__all__ = [
    "EmulatorClient",
    "EmulatorError",
    "Limits",
    "TelegramEmulator",
]

JSON = dict[str, Any]

_TOKEN_RE = re.compile(r"^(\d+):([A-Za-z0-9_-]{30,})$")
_TOKEN_PREFIX_RE = re.compile(r"^\d+:")
_SECRET_RE = re.compile(r"^[A-Za-z0-9_-]{1,256}$")
_COMMAND_RE = re.compile(r"^[a-z0-9_]{1,32}$")
_ENTITY_RE = re.compile(r"&(#[0-9]{1,8}|#x[0-9a-fA-F]{1,8}|lt|gt|amp|quot);")
_TAG_NAME_RE = re.compile(r"[A-Za-z0-9-]*")
_ATTR_RE = re.compile(r"\s*([A-Za-z_-]+)\s*(?:=\s*(\"[^\"]*\"|'[^']*'|[^\s>\"']+))?")

MAX_TEXT = 4096
MAX_CALLBACK_DATA = 64
MAX_CALLBACK_ANSWER = 200
GROUP_TYPES = frozenset({"group", "supergroup"})
DEFAULT_UPDATE_TYPES = frozenset(
    {
        "message",
        "edited_message",
        "channel_post",
        "edited_channel_post",
        "business_connection",
        "business_message",
        "edited_business_message",
        "deleted_business_messages",
        "inline_query",
        "chosen_inline_result",
        "callback_query",
        "shipping_query",
        "pre_checkout_query",
        "purchased_paid_media",
        "poll",
        "poll_answer",
        "my_chat_member",
        "chat_join_request",
        "chat_boost",
        "removed_chat_boost",
    }
)
_HTML_TAGS = frozenset(
    {
        "b",
        "strong",
        "i",
        "em",
        "u",
        "ins",
        "s",
        "strike",
        "del",
        "span",
        "tg-spoiler",
        "a",
        "code",
        "pre",
        "blockquote",
        "tg-emoji",
    }
)
_TAG_ENTITY = {
    "b": "bold",
    "strong": "bold",
    "i": "italic",
    "em": "italic",
    "u": "underline",
    "ins": "underline",
    "s": "strikethrough",
    "strike": "strikethrough",
    "del": "strikethrough",
    "span": "spoiler",
    "tg-spoiler": "spoiler",
    "a": "text_link",
    "code": "code",
    "pre": "pre",
    "blockquote": "blockquote",
    "tg-emoji": "custom_emoji",
}
_BUTTON_ACTIONS = (
    "callback_data",
    "url",
    "web_app",
    "login_url",
    "switch_inline_query",
    "switch_inline_query_current_chat",
    "switch_inline_query_chosen_chat",
    "copy_text",
    "callback_game",
    "pay",
)
_NOT_MODIFIED = (
    "Bad Request: message is not modified: specified new message content and reply markup "
    "are exactly the same as a current content and reply markup of the message"
)
_QUERY_TOO_OLD = "Bad Request: query is too old and response timeout expired or query ID is invalid"
_WEBHOOK_CONFLICT = (
    "Conflict: can't use getUpdates method while webhook is active; "
    "use deleteWebhook to delete the webhook first"
)
_FAULT_KINDS = frozenset(
    {
        "server_error",
        "timeout",
        "reset",
        "kicked",
        "migrate",
        "not_modified",
        "not_found",
        "too_many_requests",
        "callback_too_old",
        "bad_request",
    }
)


# --------------------------------------------------------------------------- limits


@dataclass(frozen=True)
class Limits:
    """Telegram's (approximate) flood limits; `group_window_seconds` exists for fast tests."""

    per_bot_per_second: float = 30
    per_chat_per_second: float = 1
    per_chat_burst: int = 3
    per_group_per_minute: int = 20
    group_window_seconds: float = 60.0


class _Bucket:
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


class _Window:
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


# --------------------------------------------------------------------------- state


class _ApiError(Exception):
    def __init__(self, status: int, description: str, parameters: JSON | None = None) -> None:
        super().__init__(description)
        self.status = status
        self.description = description
        self.parameters = parameters


class _ControlError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class _User:
    id: int
    first_name: str
    username: str | None = None
    is_bot: bool = False

    def to_api(self) -> JSON:
        out: JSON = {"id": self.id, "is_bot": self.is_bot, "first_name": self.first_name}
        if self.username:
            out["username"] = self.username
        return out


@dataclass
class _Message:
    message_id: int
    chat_id: int
    from_id: int | None
    date: int
    text: str | None = None
    entities: list[JSON] | None = None
    reply_markup: JSON | None = None
    edit_date: int | None = None
    edits: int = 0
    deleted: bool = False
    extra: JSON = field(default_factory=dict)


@dataclass
class _Chat:
    id: int
    type: str
    title: str | None = None
    members: set[int] = field(default_factory=set)
    bot_status: dict[int, str] = field(default_factory=dict)
    migrated_to: int | None = None
    migrated_from: int | None = None
    next_message_id: int = 1
    messages: dict[int, _Message] = field(default_factory=dict)
    api: JSON = field(default_factory=dict)

    def status_of(self, bot_id: int) -> str:
        return self.bot_status.get(bot_id, "member")


@dataclass
class _CallbackQuery:
    id: str
    bot_id: int
    from_id: int
    chat_id: int
    message_id: int
    data: str
    created: float
    answered: bool = False
    text: str | None = None
    show_alert: bool = False
    url: str | None = None
    answered_at: float | None = None
    update_id: int = 0
    event: asyncio.Event = field(default_factory=asyncio.Event)

    def answer_json(self) -> JSON | None:
        if not self.answered or self.answered_at is None:
            return None
        return {
            "text": self.text,
            "show_alert": self.show_alert,
            "url": self.url,
            "latency_ms": round((self.answered_at - self.created) * 1000, 3),
        }


@dataclass
class _FaultRule:
    kind: str
    method: str = "*"
    chat_id: int | None = None
    count: int = 1
    after: int = 0
    status: int | None = None
    delay: float = 10.0
    retry_after: int = 5
    description: str | None = None
    seen: int = 0

    def to_json(self) -> JSON:
        return {k: v for k, v in dataclasses.asdict(self).items() if k != "seen" and v is not None}


@dataclass
class _Update:
    update_id: int
    payload: JSON
    type: str
    key: str
    created: float


@dataclass
class _Webhook:
    url: str
    secret_token: str | None
    max_connections: int
    allowed_updates: list[str] | None
    semaphore: asyncio.Semaphore
    ip_address: str = "127.0.0.1"
    last_error_date: int | None = None
    last_error_message: str | None = None

    def info(self, pending: int) -> JSON:
        out: JSON = {
            "url": self.url,
            "has_custom_certificate": False,
            "pending_update_count": pending,
            "max_connections": self.max_connections,
            "ip_address": self.ip_address,
        }
        if self.allowed_updates is not None:
            out["allowed_updates"] = self.allowed_updates
        if self.last_error_date is not None:
            out["last_error_date"] = self.last_error_date
            out["last_error_message"] = self.last_error_message
        return out


@dataclass
class _Bot:
    id: int
    token: str
    user: _User
    next_update_id: int = 1
    pending: deque[_Update] = field(default_factory=deque)
    update_event: asyncio.Event = field(default_factory=asyncio.Event)
    webhook: _Webhook | None = None
    queues: dict[str, deque[_Update]] = field(default_factory=dict)
    queued: int = 0
    bot_bucket: _Bucket | None = None
    chat_buckets: dict[int, _Bucket] = field(default_factory=dict)
    group_windows: dict[int, _Window] = field(default_factory=dict)
    commands: dict[str, list[JSON]] = field(default_factory=dict)
    allowed_updates: list[str] | None = None


# --------------------------------------------------------------------------- HTML


def _utf16_len(s: str) -> int:
    n = len(s)
    for ch in s:
        if ord(ch) > 0xFFFF:
            n += 1
    return n


def _parse_error(msg: str) -> _ApiError:
    return _ApiError(400, f"Bad Request: can't parse entities: {msg}")


def parse_html(source: str) -> tuple[str, list[JSON]]:
    """Parse Telegram-flavoured HTML into (plain text, entities with UTF-16 offsets)."""
    if "<" not in source and "&" not in source:
        return source, []
    out: list[str] = []
    pos16 = 0
    entities: list[JSON] = []
    stack: list[tuple[str, int, JSON]] = []
    i = 0
    n = len(source)
    while i < n:
        ch = source[i]
        if ch == "&":
            m = _ENTITY_RE.match(source, i)
            if m is None:
                piece = "&"
                i += 1
            else:
                name = m.group(1)
                if name == "lt":
                    piece = "<"
                elif name == "gt":
                    piece = ">"
                elif name == "amp":
                    piece = "&"
                elif name == "quot":
                    piece = '"'
                else:
                    code = int(name[2:], 16) if name[1] in "xX" else int(name[1:])
                    bad = code > 0x10FFFF or 0xD800 <= code <= 0xDFFF
                    piece = "\ufffd" if bad else chr(code)
                i = m.end()
            out.append(piece)
            pos16 += _utf16_len(piece)
            continue
        if ch != "<":
            j = i
            while j < n and source[j] not in "<&":
                j += 1
            piece = source[i:j]
            out.append(piece)
            pos16 += _utf16_len(piece)
            i = j
            continue
        offset = len(source[:i].encode("utf-8"))
        end = source.find(">", i)
        if source.startswith("</", i):
            if end < 0:
                raise _parse_error(f"Unclosed end tag at byte offset {offset}")
            name = source[i + 2 : end].strip().lower()
            if not stack:
                raise _parse_error(f"Unexpected end tag at byte offset {offset}")
            open_name, start16, open_attrs = stack.pop()
            if name != open_name:
                raise _parse_error(
                    f'Unmatched end tag at byte offset {offset}, expected "</{open_name}>", '
                    f'found "</{name}>"'
                )
            if pos16 > start16:
                entity: JSON = {
                    "type": _TAG_ENTITY[open_name],
                    "offset": start16,
                    "length": pos16 - start16,
                }
                entity.update(open_attrs)
                entities.append(entity)
            i = end + 1
            continue
        m = _TAG_NAME_RE.match(source, i + 1)
        name = m.group(0).lower() if m else ""
        if not name:
            raise _parse_error(f'Unsupported start tag "" at byte offset {offset}')
        if end < 0:
            raise _parse_error(f"Unclosed start tag at byte offset {offset}")
        if name not in _HTML_TAGS:
            raise _parse_error(f'Unsupported start tag "{name}" at byte offset {offset}')
        attr_src = source[i + 1 + len(name) : end]
        attrs_raw: dict[str, str] = {}
        for am in _ATTR_RE.finditer(attr_src):
            if not am.group(1):
                continue
            value = am.group(2) or ""
            if value[:1] in {'"', "'"}:
                value = value[1:-1]
            attrs_raw[am.group(1).lower()] = html_unescape(value)
        attrs: JSON = {}
        if name == "span" and attrs_raw.get("class") != "tg-spoiler":
            raise _parse_error(f'Tag "span" must have class "tg-spoiler" at byte offset {offset}')
        if name == "a":
            href = attrs_raw.get("href", "")
            if not href:
                raise _parse_error(f'Empty href in tag "a" at byte offset {offset}')
            attrs["url"] = href
        if name == "tg-emoji":
            emoji_id = attrs_raw.get("emoji-id", "")
            if not emoji_id.isdigit():
                raise _parse_error(f"Invalid custom emoji identifier at byte offset {offset}")
            attrs["custom_emoji_id"] = emoji_id
        if name == "pre" and "language" in attrs_raw:
            attrs["language"] = attrs_raw["language"]
        if name == "code" and stack and stack[-1][0] == "pre":
            cls = attrs_raw.get("class", "")
            if cls.startswith("language-"):
                stack[-1][2]["language"] = cls[len("language-") :]
        if name == "blockquote" and "expandable" in attrs_raw:
            attrs["type"] = "expandable_blockquote"
        stack.append((name, pos16, attrs))
        i = end + 1
    if stack:
        raise _parse_error(f'Can\'t find end tag corresponding to start tag "{stack[-1][0]}"')
    entities.sort(key=lambda e: (e["offset"], -e["length"]))
    return "".join(out), entities


def html_unescape(value: str) -> str:
    """Decode the HTML entities Telegram understands."""
    if "&" not in value:
        return value
    text, _ = parse_html(value.replace("<", "&lt;"))
    return text


# --------------------------------------------------------------------------- param coercion


def _get_int(p: JSON, key: str, *, required: bool = True, default: int | None = None) -> int:
    value = p.get(key)
    if value is None or value == "":
        if required:
            raise _ApiError(400, f"Bad Request: {key} is empty")
        return cast(int, default)
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            pass
    if key == "chat_id":
        raise _ApiError(400, "Bad Request: chat not found")
    raise _ApiError(400, f"Bad Request: invalid {key} specified")


def _get_opt_int(p: JSON, key: str) -> int | None:
    value = p.get(key)
    if value is None or value == "":
        return None
    return _get_int(p, key)


def _get_float(p: JSON, key: str, default: float) -> float:
    value = p.get(key)
    if value is None or value == "":
        return default
    try:
        return float(value)
    except (TypeError, ValueError):
        raise _ApiError(400, f"Bad Request: invalid {key} specified") from None


def _get_str(p: JSON, key: str) -> str | None:
    value = p.get(key)
    if value is None:
        return None
    if isinstance(value, str):
        return value
    return str(value)


def _get_bool(p: JSON, key: str) -> bool:
    value = p.get(key)
    if isinstance(value, str):
        return value.strip().lower() in {"true", "1", "yes"}
    return bool(value)


def _get_json(p: JSON, key: str) -> Any:
    value = p.get(key)
    if isinstance(value, str):
        if value == "":
            return None
        try:
            return json.loads(value)
        except ValueError:
            raise _ApiError(400, f"Bad Request: can't parse {key} JSON object") from None
    return value


# --------------------------------------------------------------------------- emulator

_Handler = Callable[[_Bot, JSON], Awaitable[Any]]


class TelegramEmulator:
    """Telegram Bot API emulator: ``/bot<token>/<method>`` plus a JSON control API.

    Text length is counted in Unicode code points after HTML parsing (entity offsets and
    lengths are UTF-16 units, as Telegram sends them). Chats and users are shared by every
    bot token; updates, webhooks, rate budgets and commands are per bot. User-originated
    updates go to every known bot (a bot becomes known on its first API call or via
    ``POST /_emulator/bots``); updates arriving before any bot is known wait in a backlog
    that the first bot adopts. Callback queries go to the bot that sent the tapped message.
    Adding a user also creates the private chat with that user (chat id = user id).

    Control routes (JSON bodies; errors are ``{"ok": false, "error": "..."}`` 400/404):

    ====== ============================================ ==========================================
    method route                                        body / result
    ====== ============================================ ==========================================
    POST   /_emulator/reset                             clear state, faults, logs, counters
    POST   /_emulator/config                            {enforce_limits?, limits?{...}} -> config
    GET    /_emulator/config                            -> {enforce_limits, limits}
    POST   /_emulator/bots                              {token, username?, first_name?} -> bot
    POST   /_emulator/users                             {id, first_name, username?, is_bot?}
    POST   /_emulator/chats                             {id, type, title?, members?[ids]}
    POST   /_emulator/chats/{chat_id}/send              {from_id, text} -> {update_id, message_id}
    POST   /_emulator/chats/{chat_id}/messages/{mid}/tap {from_id, callback_data? | button_text?
                                                        | row+col?, wait?} -> {update_id,
                                                        callback_query_id, answer?}
    POST   /_emulator/updates                           {update, bot_id?} -> {update_id}
    POST   /_emulator/chats/{chat_id}/kick              {by_user_id?, bot_id?} -> {update_ids}
    POST   /_emulator/chats/{chat_id}/add               {by_user_id?, bot_id?} -> {update_ids}
    POST   /_emulator/chats/{chat_id}/migrate           {by_user_id?} -> {new_chat_id}
    GET    /_emulator/chats/{chat_id}                   -> chat state
    GET    /_emulator/chats/{chat_id}/messages          -> [{message_id, from_id, text, ...}]
    GET    /_emulator/calls?method=&since=&limit=       -> [{seq, method, params, status, ...}]
    GET    /_emulator/stats                             -> counters
    GET    /_emulator/callback_answers/{query_id}       -> {answered, text, show_alert, ...}
    POST   /_emulator/faults                            rule -> {faults}
    GET    /_emulator/faults                            -> {faults}
    DELETE /_emulator/faults                            -> {faults: []}
    GET    /_emulator/webhook?bot_id=                   -> {bot_id: webhook info}
    ====== ============================================ ==========================================

    ``since`` in ``/calls`` is a call sequence number (each entry has ``seq``); entries with
    ``seq > since`` are returned.
    """

    def __init__(
        self,
        *,
        enforce_limits: bool = True,
        limits: Limits | None = None,
        webhook_retry_base: float = 2.0,
        webhook_retry_cap: float = 60.0,
        webhook_timeout: float = 10.0,
        callback_update_max_age: float = 150.0,
        message_update_max_age: float = 86400.0,
        callback_answer_timeout: float | None = None,
        call_log_size: int = 200_000,
    ) -> None:
        self.enforce_limits = enforce_limits
        self.limits = limits or Limits()
        # What a reset goes back to: tests that change limits must not leak into later ones.
        self._initial_limits = (self.enforce_limits, self.limits)
        self.webhook_retry_base = webhook_retry_base
        self.webhook_retry_cap = webhook_retry_cap
        self.webhook_timeout = webhook_timeout
        self.callback_update_max_age = callback_update_max_age
        self.message_update_max_age = message_update_max_age
        self.callback_answer_timeout = callback_answer_timeout
        self._call_log_size = call_log_size
        self._methods: dict[str, tuple[str, _Handler]] = {}
        for name, handler in (
            ("getMe", self._m_get_me),
            ("sendMessage", self._m_send_message),
            ("editMessageText", self._m_edit_message_text),
            ("editMessageReplyMarkup", self._m_edit_message_reply_markup),
            ("deleteMessage", self._m_delete_message),
            ("answerCallbackQuery", self._m_answer_callback_query),
            ("setWebhook", self._m_set_webhook),
            ("deleteWebhook", self._m_delete_webhook),
            ("getWebhookInfo", self._m_get_webhook_info),
            ("getUpdates", self._m_get_updates),
            ("getChat", self._m_get_chat),
            ("sendChatAction", self._m_send_chat_action),
            ("setMyCommands", self._m_set_my_commands),
            ("getMyCommands", self._m_get_my_commands),
            ("deleteMyCommands", self._m_delete_my_commands),
            ("leaveChat", self._m_leave_chat),
        ):
            self._methods[name.lower()] = (name, handler)
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self._closing = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._init_state()

    # ------------------------------------------------------------------ lifecycle

    def _init_state(self) -> None:
        self.bots: dict[int, _Bot] = {}
        self._tokens: dict[int, str] = {}
        self.users: dict[int, _User] = {}
        self.chats: dict[int, _Chat] = {}
        self.callbacks: dict[str, _CallbackQuery] = {}
        self.faults: list[_FaultRule] = []
        self.call_log: deque[JSON] = deque(maxlen=self._call_log_size)
        self._call_seq = 0
        self._backlog: list[_Update] = []
        self._callback_seq = 0
        self._chat_seq = 0
        self.calls_by_method: Counter[str] = Counter()
        self.too_many_requests_total = 0
        self.too_many_requests_by_chat: Counter[int] = Counter()
        self.sends_by_chat: Counter[int] = Counter()
        self.webhook_deliveries = 0
        self.webhook_failures = 0
        self.webhook_statuses: Counter[str] = Counter()
        self.webhook_expired = 0
        self.webhook_replies = 0

    def make_app(self) -> web.Application:
        """Build the aiohttp application (Bot API plus control routes)."""
        app = web.Application(client_max_size=64 * 1024 * 1024)
        r = app.router
        r.add_route("*", "/bot{token}/{method}", self._handle_api)
        c = "/_emulator"
        r.add_post(f"{c}/reset", self._ctl(self._c_reset))
        r.add_post(f"{c}/config", self._ctl(self._c_config))
        r.add_get(f"{c}/config", self._ctl(self._c_get_config))
        r.add_post(f"{c}/bots", self._ctl(self._c_bots))
        r.add_post(f"{c}/users", self._ctl(self._c_users))
        r.add_post(f"{c}/chats", self._ctl(self._c_chats))
        r.add_get(f"{c}/chats/{{chat_id}}", self._ctl(self._c_get_chat))
        r.add_post(f"{c}/chats/{{chat_id}}/send", self._ctl(self._c_send))
        r.add_post(f"{c}/chats/{{chat_id}}/messages/{{message_id}}/tap", self._ctl(self._c_tap))
        r.add_post(f"{c}/taps", self._ctl(self._c_taps))
        r.add_get(f"{c}/chats/{{chat_id}}/messages", self._ctl(self._c_messages))
        r.add_post(f"{c}/chats/{{chat_id}}/kick", self._ctl(self._c_kick))
        r.add_post(f"{c}/chats/{{chat_id}}/add", self._ctl(self._c_add))
        r.add_post(f"{c}/chats/{{chat_id}}/migrate", self._ctl(self._c_migrate))
        r.add_post(f"{c}/updates", self._ctl(self._c_updates))
        r.add_get(f"{c}/calls", self._ctl(self._c_calls))
        r.add_get(f"{c}/stats", self._ctl(self._c_stats))
        r.add_get(f"{c}/callback_answers/{{query_id}}", self._ctl(self._c_callback_answer))
        r.add_post(f"{c}/faults", self._ctl(self._c_add_fault))
        r.add_get(f"{c}/faults", self._ctl(self._c_get_faults))
        r.add_delete(f"{c}/faults", self._ctl(self._c_clear_faults))
        r.add_get(f"{c}/webhook", self._ctl(self._c_webhook))
        app.on_cleanup.append(self._on_cleanup)
        return app

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Serve on host:port (0 = any free port); return the base URL."""
        self._closing.clear()
        self._runner = web.AppRunner(
            self.make_app(), access_log=None, shutdown_timeout=0.5, handle_signals=False
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        actual = self._runner.addresses[0][1]
        return f"http://{host}:{actual}"

    async def stop(self) -> None:
        """Stop serving and cancel background deliveries."""
        self._closing.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        await self._on_cleanup(None)

    async def _on_cleanup(self, _app: web.Application | None) -> None:
        self._closing.set()
        await self._cancel_tasks()
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _cancel_tasks(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()

    def _spawn(self, coro: Awaitable[None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ------------------------------------------------------------------ bots, users, chats

    def _bot_for_token(self, token: str) -> _Bot:
        m = _TOKEN_RE.match(token)
        if m is None:
            if _TOKEN_PREFIX_RE.match(token):
                raise _ApiError(401, "Unauthorized")
            raise _ApiError(404, "Not Found")
        bot_id = int(m.group(1))
        bot = self.bots.get(bot_id)
        if bot is not None:
            if bot.token != token:
                raise _ApiError(401, "Unauthorized")
            return bot
        known = self._tokens.get(bot_id)
        if known is not None and known != token:
            raise _ApiError(401, "Unauthorized")
        return self._register_bot(token)

    def _register_bot(
        self, token: str, username: str | None = None, first_name: str | None = None
    ) -> _Bot:
        bot_id = int(token.split(":", 1)[0])
        user = _User(
            id=bot_id,
            first_name=first_name or f"Quorum Test Bot {bot_id}",
            username=username or f"test{bot_id}_bot",
            is_bot=True,
        )
        bot = _Bot(id=bot_id, token=token, user=user)
        self.bots[bot_id] = bot
        self._tokens[bot_id] = token
        self.users[bot_id] = user
        if self._backlog:
            backlog, self._backlog = self._backlog, []
            for upd in backlog:
                self._deliver(bot, upd.payload, upd.type, upd.key)
        return bot

    def _add_user(self, uid: int, first_name: str, username: str | None, is_bot: bool) -> _User:
        user = _User(id=uid, first_name=first_name, username=username, is_bot=is_bot)
        self.users[uid] = user
        if not is_bot and uid > 0 and uid not in self.chats:
            self._add_chat(uid, "private", None, [uid])
        return user

    def _user(self, uid: int) -> _User:
        user = self.users.get(uid)
        if user is None:
            user = self._add_user(uid, f"User {uid}", None, False)
        return user

    def _add_chat(self, cid: int, ctype: str, title: str | None, members: Iterable[int]) -> _Chat:
        if ctype not in {"private", "group", "supergroup", "channel"}:
            raise _ControlError(400, f"unknown chat type {ctype!r}")
        chat = _Chat(id=cid, type=ctype, title=title, members=set(members))
        self._refresh_chat_api(chat)
        self.chats[cid] = chat
        return chat

    def _refresh_chat_api(self, chat: _Chat) -> None:
        api: JSON = {"id": chat.id, "type": chat.type}
        if chat.type == "private":
            user = self.users.get(chat.id)
            api["first_name"] = user.first_name if user else f"User {chat.id}"
            if user and user.username:
                api["username"] = user.username
        else:
            api["title"] = chat.title or f"Chat {chat.id}"
        chat.api = api

    def _check_chat(self, bot: _Bot, chat_id: int) -> _Chat:
        chat = self.chats.get(chat_id)
        if chat is None:
            raise _ApiError(400, "Bad Request: chat not found")
        if chat.migrated_to is not None:
            raise _ApiError(
                400,
                "Bad Request: group chat was upgraded to a supergroup chat",
                {"migrate_to_chat_id": chat.migrated_to},
            )
        status = chat.status_of(bot.id)
        if status != "member":
            raise self._forbidden(chat, status)
        return chat

    @staticmethod
    def _forbidden(chat: _Chat | None, status: str) -> _ApiError:
        ctype = chat.type if chat else "group"
        if ctype == "private":
            return _ApiError(403, "Forbidden: bot was blocked by the user")
        if ctype == "supergroup":
            return _ApiError(403, "Forbidden: bot is not a member of the supergroup chat")
        if ctype == "channel":
            return _ApiError(403, "Forbidden: bot is not a member of the channel chat")
        if status == "kicked":
            return _ApiError(403, "Forbidden: bot was kicked from the group chat")
        return _ApiError(403, "Forbidden: bot is not a member of the group chat")

    def _message_json(self, msg: _Message) -> JSON:
        chat = self.chats[msg.chat_id]
        out: JSON = {"message_id": msg.message_id, "date": msg.date, "chat": chat.api}
        if msg.from_id is not None:
            out["from"] = self._user(msg.from_id).to_api()
        if msg.text is not None:
            out["text"] = msg.text
        if msg.entities:
            out["entities"] = msg.entities
        if msg.reply_markup is not None:
            out["reply_markup"] = msg.reply_markup
        if msg.edit_date is not None:
            out["edit_date"] = msg.edit_date
        if msg.extra:
            out.update(msg.extra)
        return out

    def _store_message(
        self,
        chat: _Chat,
        from_id: int | None,
        text: str | None,
        entities: list[JSON] | None = None,
        reply_markup: JSON | None = None,
        extra: JSON | None = None,
    ) -> _Message:
        mid = chat.next_message_id
        chat.next_message_id += 1
        msg = _Message(
            message_id=mid,
            chat_id=chat.id,
            from_id=from_id,
            date=int(time.time()),
            text=text,
            entities=entities,
            reply_markup=reply_markup,
            extra=extra or {},
        )
        chat.messages[mid] = msg
        return msg

    # ------------------------------------------------------------------ updates

    @staticmethod
    def _update_type_key(payload: JSON) -> tuple[str, str]:
        for utype, body in payload.items():
            if utype == "update_id" or not isinstance(body, dict):
                continue
            if utype == "callback_query":
                sender = body.get("from") or {}
                return utype, f"u{sender.get('id')}"
            chat = body.get("chat")
            if isinstance(chat, dict):
                return utype, f"c{chat.get('id')}"
            message = body.get("message")
            if isinstance(message, dict) and isinstance(message.get("chat"), dict):
                return utype, f"c{message['chat'].get('id')}"
            sender = body.get("from") or body.get("user") or {}
            return utype, f"u{sender.get('id') if isinstance(sender, dict) else None}"
        return "unknown", "u0"

    def _broadcast(self, payload: JSON, bot_id: int | None = None) -> list[int]:
        """Give an update to one bot or to every known bot; returns the update ids."""
        utype, key = self._update_type_key(payload)
        if bot_id is not None:
            bot = self.bots.get(bot_id)
            if bot is None:
                raise _ControlError(404, f"unknown bot {bot_id}")
            return [self._deliver(bot, payload, utype, key)]
        if not self.bots:
            self._backlog.append(_Update(0, payload, utype, key, time.monotonic()))
            return [0]
        chat_id = self._chat_of(payload)
        ids = []
        for bot in self.bots.values():
            chat = self.chats.get(chat_id) if chat_id is not None else None
            if (
                chat is not None
                and utype != "my_chat_member"
                and chat.status_of(bot.id) != "member"
            ):
                continue
            ids.append(self._deliver(bot, payload, utype, key))
        return ids

    @staticmethod
    def _chat_of(payload: JSON) -> int | None:
        for body in payload.values():
            if isinstance(body, dict) and isinstance(body.get("chat"), dict):
                cid = body["chat"].get("id")
                return cid if isinstance(cid, int) else None
        return None

    def _deliver(self, bot: _Bot, payload: JSON, utype: str, key: str) -> int:
        update_id = bot.next_update_id
        bot.next_update_id += 1
        body = {"update_id": update_id, **payload}
        upd = _Update(update_id, body, utype, key, time.monotonic())
        if bot.webhook is not None:
            allowed = bot.webhook.allowed_updates
            if not self._allowed(allowed, utype):
                return update_id
            self._enqueue_webhook(bot, upd)
        else:
            bot.pending.append(upd)
            event = bot.update_event
            bot.update_event = asyncio.Event()
            event.set()
        return update_id

    @staticmethod
    def _allowed(allowed: list[str] | None, utype: str) -> bool:
        if not allowed:
            return utype in DEFAULT_UPDATE_TYPES or utype == "unknown"
        return utype in allowed

    def _enqueue_webhook(self, bot: _Bot, upd: _Update) -> None:
        bot.queued += 1
        queue = bot.queues.get(upd.key)
        if queue is not None:
            queue.append(upd)
            return
        queue = deque([upd])
        bot.queues[upd.key] = queue
        self._spawn(self._queue_worker(bot, upd.key, queue))

    async def _queue_worker(self, bot: _Bot, key: str, queue: deque[_Update]) -> None:
        try:
            while queue:
                await self._deliver_with_retry(bot, queue[0])
                queue.popleft()
                bot.queued -= 1
        finally:
            if bot.queues.get(key) is queue:
                del bot.queues[key]

    async def _deliver_with_retry(self, bot: _Bot, upd: _Update) -> None:
        attempt = 0
        max_age = (
            self.callback_update_max_age
            if upd.type == "callback_query"
            else self.message_update_max_age
        )
        while True:
            webhook = bot.webhook
            if webhook is None:
                bot.pending.append(upd)
                event = bot.update_event
                bot.update_event = asyncio.Event()
                event.set()
                return
            ok, retry_after = await self._deliver_once(bot, webhook, upd)
            if ok:
                return
            age = time.monotonic() - upd.created
            if age >= max_age:
                self.webhook_expired += 1
                return
            if retry_after is not None:
                delay = retry_after
            elif attempt == 0:
                delay = 0.0
            else:
                delay = min(self.webhook_retry_base * 2 ** (attempt - 1), self.webhook_retry_cap)
            attempt += 1
            delay = min(delay, max(0.0, max_age - age))
            if delay > 0:
                await asyncio.sleep(delay)

    async def _deliver_once(
        self, bot: _Bot, webhook: _Webhook, upd: _Update
    ) -> tuple[bool, float | None]:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.webhook_timeout)
            )
        headers = {"Content-Type": "application/json"}
        if webhook.secret_token:
            headers["X-Telegram-Bot-Api-Secret-Token"] = webhook.secret_token
        data = json.dumps(upd.payload).encode()
        self.webhook_deliveries += 1
        try:
            async with (
                webhook.semaphore,
                self._session.post(webhook.url, data=data, headers=headers) as resp,
            ):
                status = resp.status
                body = await resp.read()
                retry_header = resp.headers.get("Retry-After")
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            self.webhook_failures += 1
            self.webhook_statuses["error"] += 1
            webhook.last_error_date = int(time.time())
            webhook.last_error_message = f"Connection error: {type(exc).__name__}"
            return False, None
        self.webhook_statuses[str(status)] += 1
        if 200 <= status < 300:
            if body:
                await self._webhook_reply(bot, body)
            return True, None
        self.webhook_failures += 1
        webhook.last_error_date = int(time.time())
        webhook.last_error_message = f"Wrong response from the webhook: {status}"
        retry_after: float | None = None
        if retry_header is not None:
            with contextlib.suppress(ValueError):
                retry_after = min(max(float(retry_header), 0.0), 3600.0)
        return False, retry_after

    async def _webhook_reply(self, bot: _Bot, body: bytes) -> None:
        try:
            reply = json.loads(body)
        except ValueError:
            return
        if not isinstance(reply, dict) or not isinstance(reply.get("method"), str):
            return
        params = {k: v for k, v in reply.items() if k != "method"}
        self.webhook_replies += 1
        await self._call(bot, reply["method"], params, via_webhook_reply=True)

    # ------------------------------------------------------------------ API dispatch

    async def _handle_api(self, request: web.Request) -> web.StreamResponse:
        token = request.match_info["token"]
        method_name = request.match_info["method"]
        try:
            params = await self._read_params(request)
        except _ApiError as exc:
            return self._error_response(exc)
        try:
            bot = self._bot_for_token(token)
        except _ApiError as exc:
            self._log(None, method_name, params, exc.status, exc.description, False)
            return self._error_response(exc)
        status, body, delay = await self._call_full(bot, method_name, params, False)
        if status == 0:
            transport = request.transport
            if transport is not None:
                transport.close()
            # Writing to the closed transport fails; aiohttp treats that as a quiet disconnect.
            return web.Response(status=500)
        if delay > 0:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._closing.wait()
        return web.json_response(body, status=status)

    async def _read_params(self, request: web.Request) -> JSON:
        params: JSON = dict(request.query)
        if request.method in {"GET", "HEAD"} or not request.body_exists:
            return params
        ctype = request.content_type
        if ctype == "application/json":
            try:
                data = await request.json()
            except ValueError:
                raise _ApiError(400, "Bad Request: can't parse JSON request body") from None
            if not isinstance(data, dict):
                raise _ApiError(400, "Bad Request: JSON request body must be an object")
            params.update(data)
        elif ctype in {"application/x-www-form-urlencoded", "multipart/form-data"}:
            form = await request.post()
            for key, value in form.items():
                if isinstance(value, str):
                    params[key] = value
        return params

    @staticmethod
    def _error_response(exc: _ApiError) -> web.Response:
        return web.json_response(_error_body(exc), status=exc.status)

    async def _call(
        self, bot: _Bot, method_name: str, params: JSON, via_webhook_reply: bool
    ) -> tuple[int, JSON]:
        status, body, _ = await self._call_full(bot, method_name, params, via_webhook_reply)
        return status, body

    async def _call_full(
        self, bot: _Bot, method_name: str, params: JSON, via_webhook_reply: bool
    ) -> tuple[int, JSON, float]:
        """Run one Bot API call; returns (status, body, delay). status 0 = drop connection."""
        entry = self._methods.get(method_name.lower())
        if entry is None:
            exc = _ApiError(404, "Not Found")
            self._log(bot, method_name, params, 404, exc.description, via_webhook_reply)
            return 404, _error_body(exc), 0.0
        name, handler = entry
        delay = 0.0
        try:
            fault = self._match_fault(name, params) if self.faults else None
            if fault is not None:
                if fault.kind == "timeout":
                    delay = fault.delay
                elif fault.kind == "reset":
                    self._log(bot, name, params, 0, "connection reset", via_webhook_reply)
                    return 0, {}, 0.0
                else:
                    self._raise_fault(bot, fault, params)
            result = await handler(bot, params)
        except _ApiError as exc:
            if exc.status == 429:
                self.too_many_requests_total += 1
                cid = params.get("chat_id")
                with contextlib.suppress(_ApiError):
                    if cid is not None:
                        self.too_many_requests_by_chat[_get_int(params, "chat_id")] += 1
            self._log(bot, name, params, exc.status, exc.description, via_webhook_reply)
            return exc.status, _error_body(exc), delay
        self._log(bot, name, params, 200, None, via_webhook_reply)
        return 200, {"ok": True, "result": result}, delay

    def _log(
        self,
        bot: _Bot | None,
        method: str,
        params: JSON,
        status: int,
        description: str | None,
        via_webhook_reply: bool,
    ) -> None:
        self._call_seq += 1
        self.calls_by_method[method] += 1
        entry: JSON = {
            "seq": self._call_seq,
            "bot_id": bot.id if bot else None,
            "method": method,
            "params": params,
            "status": status,
            "description": description,
            "ts": time.monotonic(),
            "wall": time.time(),
        }
        if via_webhook_reply:
            entry["via_webhook_reply"] = True
        self.call_log.append(entry)

    # ------------------------------------------------------------------ faults

    def _match_fault(self, method: str, params: JSON) -> _FaultRule | None:
        lower = method.lower()
        chat_id: int | None = None
        chat_known = False
        for rule in self.faults:
            if rule.method != "*" and rule.method != lower:
                continue
            if rule.chat_id is not None:
                if not chat_known:
                    chat_known = True
                    with contextlib.suppress(_ApiError):
                        chat_id = _get_opt_int(params, "chat_id")
                if chat_id != rule.chat_id:
                    continue
            rule.seen += 1
            if rule.seen <= rule.after:
                continue
            rule.count -= 1
            if rule.count <= 0:
                self.faults.remove(rule)
            return rule
        return None

    def _raise_fault(self, bot: _Bot, fault: _FaultRule, params: JSON) -> None:
        kind = fault.kind
        chat_id: int | None = None
        with contextlib.suppress(_ApiError):
            chat_id = _get_opt_int(params, "chat_id")
        chat = self.chats.get(chat_id) if chat_id is not None else None
        if kind == "server_error":
            status = fault.status or 500
            desc = fault.description or (
                "Bad Gateway" if status == 502 else "Internal Server Error"
            )
            raise _ApiError(status, desc)
        if kind == "kicked":
            if chat is not None:
                chat.bot_status[bot.id] = "kicked"
            raise self._forbidden(chat, "kicked")
        if kind == "migrate":
            if chat is not None and chat.migrated_to is None:
                new_id = self._migrate(chat, None)
            elif chat is not None and chat.migrated_to is not None:
                new_id = chat.migrated_to
            else:
                new_id = self._new_supergroup_id(chat_id or -1)
            raise _ApiError(
                400,
                "Bad Request: group chat was upgraded to a supergroup chat",
                {"migrate_to_chat_id": new_id},
            )
        if kind == "not_modified":
            raise _ApiError(400, _NOT_MODIFIED)
        if kind == "not_found":
            desc = "Bad Request: message to edit not found"
            if fault.method == "deletemessage":
                desc = "Bad Request: message to delete not found"
            raise _ApiError(400, fault.description or desc)
        if kind == "too_many_requests":
            ra = max(1, int(fault.retry_after))
            raise _ApiError(429, f"Too Many Requests: retry after {ra}", {"retry_after": ra})
        if kind == "callback_too_old":
            raise _ApiError(400, _QUERY_TOO_OLD)
        if kind == "bad_request":
            desc = fault.description or "Bad Request"
            if not desc.startswith("Bad Request"):
                desc = f"Bad Request: {desc}"
            raise _ApiError(fault.status or 400, desc)
        raise _ApiError(500, f"Internal Server Error: unknown fault {kind}")

    # ------------------------------------------------------------------ limits

    def _charge(self, bot: _Bot, chat: _Chat) -> None:
        """Count one send/edit against the budgets, or raise 429 without consuming."""
        self.sends_by_chat[chat.id] += 1
        if not self.enforce_limits:
            return
        lim = self.limits
        now = time.monotonic()
        bot_bucket = bot.bot_bucket
        if bot_bucket is None:
            bot_bucket = bot.bot_bucket = _Bucket(
                lim.per_bot_per_second, max(1.0, lim.per_bot_per_second), now
            )
        chat_bucket = bot.chat_buckets.get(chat.id)
        if chat_bucket is None:
            chat_bucket = bot.chat_buckets[chat.id] = _Bucket(
                lim.per_chat_per_second, max(1, lim.per_chat_burst), now
            )
        wait = max(bot_bucket.wait_time(now), chat_bucket.wait_time(now))
        window: _Window | None = None
        if chat.type in GROUP_TYPES or chat.id < 0:
            window = bot.group_windows.get(chat.id)
            if window is None:
                window = bot.group_windows[chat.id] = _Window(
                    lim.per_group_per_minute, lim.group_window_seconds
                )
            wait = max(wait, window.wait_time(now))
        if wait > 0:
            self.sends_by_chat[chat.id] -= 1
            retry = max(1, math.ceil(wait))
            raise _ApiError(429, f"Too Many Requests: retry after {retry}", {"retry_after": retry})
        bot_bucket.take()
        chat_bucket.take()
        if window is not None:
            window.take(now)

    # ------------------------------------------------------------------ validation

    @staticmethod
    def _validate_markup(raw: Any) -> JSON | None:
        if raw is None:
            return None
        if not isinstance(raw, dict):
            raise _ApiError(400, "Bad Request: can't parse reply keyboard markup JSON object")
        if "inline_keyboard" not in raw:
            return raw
        rows = raw["inline_keyboard"]
        if not isinstance(rows, list):
            raise _ApiError(400, 'Bad Request: field "inline_keyboard" must be an Array')
        for row in rows:
            if not isinstance(row, list):
                raise _ApiError(
                    400, 'Bad Request: field "inline_keyboard" must be an Array of Arrays'
                )
            for button in row:
                if not isinstance(button, dict):
                    raise _ApiError(400, "Bad Request: can't parse inline keyboard button")
                text = button.get("text")
                if not isinstance(text, str) or not text:
                    raise _ApiError(
                        400,
                        "Bad Request: can't parse inline keyboard button: "
                        'Field "text" must be of type String',
                    )
                actions = [a for a in _BUTTON_ACTIONS if a in button]
                if not actions:
                    raise _ApiError(
                        400,
                        "Bad Request: can't parse inline keyboard button: "
                        "Text buttons are unallowed in the inline keyboard",
                    )
                if "callback_data" in button:
                    data = button["callback_data"]
                    if not isinstance(data, str):
                        raise _ApiError(400, "Bad Request: BUTTON_DATA_INVALID")
                    size = len(data.encode("utf-8"))
                    if size < 1 or size > MAX_CALLBACK_DATA:
                        raise _ApiError(400, "Bad Request: BUTTON_DATA_INVALID")
                if "url" in button and (not isinstance(button["url"], str) or not button["url"]):
                    raise _ApiError(400, "Bad Request: BUTTON_URL_INVALID")
        return raw

    @staticmethod
    def _parse_text(params: JSON, key: str = "text") -> tuple[str, list[JSON] | None]:
        raw = params.get(key)
        text = raw if isinstance(raw, str) else ("" if raw is None else str(raw))
        parse_mode = _get_str(params, "parse_mode")
        entities: list[JSON] | None = None
        if parse_mode and parse_mode.lower() == "html":
            text, entities = parse_html(text)
        elif parse_mode and parse_mode.lower() not in {"markdown", "markdownv2"}:
            raise _ApiError(400, f"Bad Request: unsupported parse_mode {parse_mode!r}")
        else:
            given = _get_json(params, "entities")
            if isinstance(given, list):
                entities = given
        if not text.strip():
            raise _ApiError(400, "Bad Request: message text is empty")
        if len(text) > MAX_TEXT:
            raise _ApiError(400, "Bad Request: message is too long")
        return text, entities or None

    def _find_message(self, bot: _Bot, params: JSON, verb: str) -> tuple[_Chat, _Message]:
        chat = self._check_chat(bot, _get_int(params, "chat_id"))
        mid = _get_int(params, "message_id")
        msg = chat.messages.get(mid)
        if msg is None or msg.deleted:
            raise _ApiError(400, f"Bad Request: message to {verb} not found")
        if verb == "edit" and msg.from_id != bot.id:
            raise _ApiError(400, "Bad Request: message can't be edited")
        return chat, msg

    # ------------------------------------------------------------------ methods

    async def _m_get_me(self, bot: _Bot, params: JSON) -> Any:
        out = bot.user.to_api()
        out.update(
            {
                "can_join_groups": True,
                "can_read_all_group_messages": False,
                "supports_inline_queries": False,
            }
        )
        return out

    async def _m_send_message(self, bot: _Bot, params: JSON) -> Any:
        chat = self._check_chat(bot, _get_int(params, "chat_id"))
        text, entities = self._parse_text(params)
        markup = self._validate_markup(_get_json(params, "reply_markup"))
        self._charge(bot, chat)
        msg = self._store_message(chat, bot.id, text, entities, markup)
        return self._message_json(msg)

    async def _m_edit_message_text(self, bot: _Bot, params: JSON) -> Any:
        text, entities = self._parse_text(params)
        markup = self._validate_markup(_get_json(params, "reply_markup"))
        if params.get("inline_message_id"):
            return True
        chat, msg = self._find_message(bot, params, "edit")
        if msg.text == text and msg.entities == entities and msg.reply_markup == markup:
            raise _ApiError(400, _NOT_MODIFIED)
        self._charge(bot, chat)
        msg.text, msg.entities, msg.reply_markup = text, entities, markup
        msg.edit_date = int(time.time())
        msg.edits += 1
        return self._message_json(msg)

    async def _m_edit_message_reply_markup(self, bot: _Bot, params: JSON) -> Any:
        markup = self._validate_markup(_get_json(params, "reply_markup"))
        if params.get("inline_message_id"):
            return True
        chat, msg = self._find_message(bot, params, "edit")
        if msg.reply_markup == markup or (
            not markup and not (msg.reply_markup or {}).get("inline_keyboard")
        ):
            raise _ApiError(400, _NOT_MODIFIED)
        self._charge(bot, chat)
        msg.reply_markup = markup
        msg.edit_date = int(time.time())
        msg.edits += 1
        return self._message_json(msg)

    async def _m_delete_message(self, bot: _Bot, params: JSON) -> Any:
        _, msg = self._find_message(bot, params, "delete")
        msg.deleted = True
        return True

    async def _m_answer_callback_query(self, bot: _Bot, params: JSON) -> Any:
        qid = _get_str(params, "callback_query_id") or ""
        query = self.callbacks.get(qid)
        now = time.monotonic()
        if query is None or query.answered or query.bot_id != bot.id:
            raise _ApiError(400, _QUERY_TOO_OLD)
        if (
            self.callback_answer_timeout is not None
            and now - query.created > self.callback_answer_timeout
        ):
            raise _ApiError(400, _QUERY_TOO_OLD)
        text = _get_str(params, "text")
        if text is not None and len(text) > MAX_CALLBACK_ANSWER:
            raise _ApiError(400, "Bad Request: MESSAGE_TOO_LONG")
        query.answered = True
        query.text = text
        query.show_alert = _get_bool(params, "show_alert")
        query.url = _get_str(params, "url")
        query.answered_at = now
        query.event.set()
        return True

    async def _m_set_webhook(self, bot: _Bot, params: JSON) -> Any:
        url = _get_str(params, "url") or ""
        if not url:
            return await self._m_delete_webhook(bot, params)
        if not (url.startswith("https://") or url.startswith("http://")) or len(url) < 10:
            raise _ApiError(400, "Bad Request: bad webhook: invalid webhook URL specified")
        secret = _get_str(params, "secret_token")
        if secret is not None and secret != "" and not _SECRET_RE.match(secret):
            raise _ApiError(400, "Bad Request: secret token contains unallowed characters")
        if secret == "" and "secret_token" in params:
            raise _ApiError(400, "Bad Request: secret token contains unallowed characters")
        max_conn = _get_int(params, "max_connections", required=False, default=40)
        max_conn = min(100, max(1, max_conn))
        allowed = _get_json(params, "allowed_updates")
        if allowed is not None and not isinstance(allowed, list):
            raise _ApiError(400, "Bad Request: can't parse allowed_updates JSON object")
        if _get_bool(params, "drop_pending_updates"):
            bot.pending.clear()
        old = bot.webhook
        bot.webhook = _Webhook(
            url=url,
            secret_token=secret or None,
            max_connections=max_conn,
            allowed_updates=[str(a) for a in allowed] if allowed is not None else None,
            semaphore=(
                old.semaphore
                if old is not None and old.max_connections == max_conn
                else asyncio.Semaphore(max_conn)
            ),
        )
        pending, bot.pending = bot.pending, deque()
        for upd in pending:
            if self._allowed(bot.webhook.allowed_updates, upd.type):
                self._enqueue_webhook(bot, upd)
        return True

    async def _m_delete_webhook(self, bot: _Bot, params: JSON) -> Any:
        bot.webhook = None
        if _get_bool(params, "drop_pending_updates"):
            bot.pending.clear()
        return True

    async def _m_get_webhook_info(self, bot: _Bot, params: JSON) -> Any:
        pending = len(bot.pending) + bot.queued
        if bot.webhook is None:
            return {"url": "", "has_custom_certificate": False, "pending_update_count": pending}
        return bot.webhook.info(pending)

    async def _m_get_updates(self, bot: _Bot, params: JSON) -> Any:
        if bot.webhook is not None:
            raise _ApiError(409, _WEBHOOK_CONFLICT)
        offset = _get_int(params, "offset", required=False, default=0)
        limit = min(100, max(1, _get_int(params, "limit", required=False, default=100)))
        timeout = max(0.0, _get_float(params, "timeout", 0.0))
        allowed = _get_json(params, "allowed_updates")
        if isinstance(allowed, list):
            bot.allowed_updates = [str(a) for a in allowed]
        pending = bot.pending
        if offset < 0:
            while len(pending) > -offset:
                pending.popleft()
        elif offset > 0:
            while pending and pending[0].update_id < offset:
                pending.popleft()
        if not pending and timeout > 0:
            event = bot.update_event
            closing = asyncio.ensure_future(self._closing.wait())
            waiter = asyncio.ensure_future(event.wait())
            try:
                await asyncio.wait(
                    {closing, waiter}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                closing.cancel()
                waiter.cancel()
            if bot.webhook is not None:
                raise _ApiError(409, _WEBHOOK_CONFLICT)
        result = []
        for upd in pending:
            if offset > 0 and upd.update_id < offset:
                continue
            if bot.allowed_updates is not None and not self._allowed(bot.allowed_updates, upd.type):
                continue
            result.append(upd.payload)
            if len(result) >= limit:
                break
        return result

    async def _m_get_chat(self, bot: _Bot, params: JSON) -> Any:
        chat = self.chats.get(_get_int(params, "chat_id"))
        if chat is None:
            raise _ApiError(400, "Bad Request: chat not found")
        if chat.type != "private" and chat.status_of(bot.id) == "kicked":
            raise self._forbidden(chat, "kicked")
        out = dict(chat.api)
        out.update(
            {
                "accent_color_id": 0,
                "max_reaction_count": 11,
                "accepted_gift_types": {
                    "unlimited_gifts": False,
                    "limited_gifts": False,
                    "unique_gifts": False,
                    "premium_subscription": False,
                    "gifts_from_channels": False,
                },
            }
        )
        if chat.migrated_from is not None:
            out["migrated_from_chat_id"] = chat.migrated_from
        return out

    async def _m_send_chat_action(self, bot: _Bot, params: JSON) -> Any:
        self._check_chat(bot, _get_int(params, "chat_id"))
        if not _get_str(params, "action"):
            raise _ApiError(400, "Bad Request: action is empty")
        return True

    @staticmethod
    def _commands_key(params: JSON) -> str:
        scope = _get_json(params, "scope") or {"type": "default"}
        lang = _get_str(params, "language_code") or ""
        return json.dumps(scope, sort_keys=True) + "|" + lang

    async def _m_set_my_commands(self, bot: _Bot, params: JSON) -> Any:
        commands = _get_json(params, "commands")
        if not isinstance(commands, list) or len(commands) > 100:
            raise _ApiError(400, "Bad Request: commands is empty")
        clean: list[JSON] = []
        for cmd in commands:
            if not isinstance(cmd, dict):
                raise _ApiError(400, "Bad Request: BOT_COMMAND_INVALID")
            name = str(cmd.get("command", "")).lstrip("/").lower()
            desc = str(cmd.get("description", ""))
            if not _COMMAND_RE.match(name):
                raise _ApiError(400, "Bad Request: BOT_COMMAND_INVALID")
            if not 1 <= len(desc) <= 256:
                raise _ApiError(400, "Bad Request: command description is empty")
            clean.append({"command": name, "description": desc})
        bot.commands[self._commands_key(params)] = clean
        return True

    async def _m_get_my_commands(self, bot: _Bot, params: JSON) -> Any:
        return bot.commands.get(self._commands_key(params), [])

    async def _m_delete_my_commands(self, bot: _Bot, params: JSON) -> Any:
        bot.commands.pop(self._commands_key(params), None)
        return True

    async def _m_leave_chat(self, bot: _Bot, params: JSON) -> Any:
        chat = self._check_chat(bot, _get_int(params, "chat_id"))
        if chat.type == "private":
            raise _ApiError(
                400, "Bad Request: chat member status can't be changed in private chats"
            )
        chat.bot_status[bot.id] = "left"
        return True

    # ------------------------------------------------------------------ migration

    def _new_supergroup_id(self, old_id: int) -> int:
        base = abs(old_id) % 10_000_000_000
        new_id = -(1_000_000_000_000 + base)
        while new_id in self.chats:
            self._chat_seq += 1
            new_id = -(1_000_000_000_000 + (base + self._chat_seq) % 10_000_000_000)
        return new_id

    def _migrate(self, chat: _Chat, by_user_id: int | None) -> int:
        new_id = self._new_supergroup_id(chat.id)
        new_chat = self._add_chat(new_id, "supergroup", chat.title, chat.members)
        new_chat.bot_status = dict(chat.bot_status)
        new_chat.migrated_from = chat.id
        chat.migrated_to = new_id
        old_msg = self._store_message(chat, by_user_id, None, extra={"migrate_to_chat_id": new_id})
        new_msg = self._store_message(
            new_chat,
            by_user_id,
            None,
            extra={"migrate_from_chat_id": chat.id, "sender_chat": chat.api},
        )
        self._broadcast({"message": self._message_json(old_msg)})
        self._broadcast({"message": self._message_json(new_msg)})
        return new_id

    # ------------------------------------------------------------------ control API

    def _ctl(
        self, fn: Callable[[web.Request, JSON], Awaitable[Any]]
    ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def handler(request: web.Request) -> web.StreamResponse:
            body: JSON = {}
            if request.body_exists:
                try:
                    data = await request.json()
                except ValueError:
                    return web.json_response({"ok": False, "error": "invalid JSON"}, status=400)
                if data is not None and not isinstance(data, dict):
                    return web.json_response(
                        {"ok": False, "error": "body must be a JSON object"}, status=400
                    )
                body = data or {}
            try:
                result = await fn(request, body)
            except _ControlError as exc:
                return web.json_response({"ok": False, "error": exc.message}, status=exc.status)
            except _ApiError as exc:
                return web.json_response({"ok": False, "error": exc.description}, status=400)
            except (KeyError, TypeError, ValueError) as exc:
                return web.json_response(
                    {"ok": False, "error": f"bad request: {exc!r}"}, status=400
                )
            return web.json_response(result)

        return handler

    def _ctl_chat(self, request: web.Request) -> _Chat:
        chat = self.chats.get(int(request.match_info["chat_id"]))
        if chat is None:
            raise _ControlError(404, f"unknown chat {request.match_info['chat_id']}")
        return chat

    async def _c_reset(self, request: web.Request, body: JSON) -> Any:
        await self._cancel_tasks()
        self._init_state()
        self.enforce_limits, self.limits = self._initial_limits
        return {"ok": True}

    async def _c_config(self, request: web.Request, body: JSON) -> Any:
        if "enforce_limits" in body:
            self.enforce_limits = bool(body["enforce_limits"])
        if "limits" in body:
            changes = body["limits"] or {}
            valid = {f.name for f in dataclasses.fields(Limits)}
            unknown = set(changes) - valid
            if unknown:
                raise _ControlError(400, f"unknown limits: {sorted(unknown)}")
            self.limits = dataclasses.replace(self.limits, **changes)
        for bot in self.bots.values():
            bot.bot_bucket = None
            bot.chat_buckets.clear()
            bot.group_windows.clear()
        return await self._c_get_config(request, body)

    async def _c_get_config(self, request: web.Request, body: JSON) -> Any:
        return {"enforce_limits": self.enforce_limits, "limits": dataclasses.asdict(self.limits)}

    async def _c_bots(self, request: web.Request, body: JSON) -> Any:
        token = str(body["token"])
        if not _TOKEN_RE.match(token):
            raise _ControlError(400, "malformed token")
        bot_id = int(token.split(":", 1)[0])
        existing = self.bots.get(bot_id)
        if existing is not None and existing.token == token:
            if body.get("username"):
                existing.user.username = str(body["username"])
            if body.get("first_name"):
                existing.user.first_name = str(body["first_name"])
            return existing.user.to_api()
        bot = self._register_bot(token, body.get("username"), body.get("first_name"))
        return bot.user.to_api()

    async def _c_users(self, request: web.Request, body: JSON) -> Any:
        user = self._add_user(
            int(body["id"]),
            str(body.get("first_name") or f"User {body['id']}"),
            body.get("username"),
            bool(body.get("is_bot", False)),
        )
        return user.to_api()

    async def _c_chats(self, request: web.Request, body: JSON) -> Any:
        members = [int(m) for m in body.get("members") or []]
        for uid in members:
            self._user(uid)
        chat = self._add_chat(int(body["id"]), str(body["type"]), body.get("title"), members)
        return chat.api

    async def _c_get_chat(self, request: web.Request, body: JSON) -> Any:
        chat = self._ctl_chat(request)
        return {
            **chat.api,
            "members": sorted(chat.members),
            "bot_status": {str(k): v for k, v in chat.bot_status.items()},
            "migrated_to": chat.migrated_to,
            "migrated_from": chat.migrated_from,
        }

    async def _c_send(self, request: web.Request, body: JSON) -> Any:
        chat = self._ctl_chat(request)
        from_id = int(body["from_id"])
        text = str(body["text"])
        self._user(from_id)
        chat.members.add(from_id)
        entities: list[JSON] = []
        if text.startswith("/"):
            command = text.split(maxsplit=1)[0]
            entities.append({"type": "bot_command", "offset": 0, "length": _utf16_len(command)})
        msg = self._store_message(chat, from_id, text, entities or None)
        ids = self._broadcast({"message": self._message_json(msg)}, body.get("bot_id"))
        return {
            "update_id": ids[0] if ids else None,
            "update_ids": ids,
            "message_id": msg.message_id,
        }

    @staticmethod
    def _find_button(markup: JSON | None, body: JSON) -> JSON | None:
        rows = (markup or {}).get("inline_keyboard") or []
        if "row" in body and "col" in body:
            r, c = int(body["row"]), int(body["col"])
            if 0 <= r < len(rows) and 0 <= c < len(rows[r]):
                return cast(JSON, rows[r][c])
            return None
        for row in rows:
            for button in row:
                if "callback_data" in body and button.get("callback_data") == body["callback_data"]:
                    return cast(JSON, button)
                if "button_text" in body and button.get("text") == body["button_text"]:
                    return cast(JSON, button)
        return None

    def _tap(self, chat: _Chat, message_id: int, body: JSON) -> _CallbackQuery:
        """A user taps a button: the callback query update goes to the bot that sent it."""
        msg = chat.messages.get(message_id)
        if msg is None or msg.deleted:
            raise _ControlError(404, "unknown message")
        if not ({"callback_data", "button_text"} & body.keys() or {"row", "col"} <= body.keys()):
            raise _ControlError(400, "give callback_data, button_text or row+col")
        button = self._find_button(msg.reply_markup, body)
        if button is None or "callback_data" not in button:
            raise _ControlError(400, "message has no such callback button")
        bot = self.bots.get(msg.from_id or 0)
        if bot is None:
            raise _ControlError(400, "message was not sent by a known bot")
        user = self._user(int(body["from_id"]))
        self._callback_seq += 1
        qid = str(4_200_000_000_000_000_000 + self._callback_seq * 7919)
        query = _CallbackQuery(
            id=qid,
            bot_id=bot.id,
            from_id=user.id,
            chat_id=chat.id,
            message_id=msg.message_id,
            data=str(button["callback_data"]),
            created=time.monotonic(),
        )
        self.callbacks[qid] = query
        payload = {
            "callback_query": {
                "id": qid,
                "from": user.to_api(),
                "message": self._message_json(msg),
                "chat_instance": str(abs(chat.id) * 31 + 17),
                "data": query.data,
            }
        }
        query.update_id = self._broadcast(payload, bot.id)[0]
        return query

    async def _c_tap(self, request: web.Request, body: JSON) -> Any:
        chat = self._ctl_chat(request)
        query = self._tap(chat, int(request.match_info["message_id"]), body)
        out: JSON = {"update_id": query.update_id, "callback_query_id": query.id}
        wait = float(body.get("wait") or 0)
        if wait > 0:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await query.event.wait()
            out["answer"] = query.answer_json()
        return out

    async def _c_taps(self, request: web.Request, body: JSON) -> Any:
        """Many users tap, played by the emulator itself (a load generator).

        Each tap is {chat_id, message_id, from_id, button_text | callback_data | row+col}.
        With "rate", taps start on a fixed schedule whether or not earlier ones were answered
        (open loop); otherwise at most "concurrency" taps are unanswered at once (closed
        loop). Answers: one per tap, in order, {latency_ms, text} or null when unanswered
        after "wait" seconds.
        """
        taps = body.get("taps")
        if not isinstance(taps, list) or not taps:
            raise _ControlError(400, "taps must be a non-empty list")
        rate = float(body.get("rate") or 0)
        concurrency = max(1, int(body.get("concurrency") or 1))
        wait = float(body.get("wait") or 10)
        answers: list[JSON | None] = [None] * len(taps)

        async def one(i: int) -> None:
            t = taps[i]
            chat = self.chats.get(int(t["chat_id"]))
            if chat is None:
                raise _ControlError(404, f"unknown chat {t['chat_id']}")
            query = self._tap(chat, int(t["message_id"]), t)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await query.event.wait()
            answers[i] = query.answer_json()

        started = time.monotonic()
        if rate > 0:
            tasks = []
            for i in range(len(taps)):
                delay = started + i / rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                tasks.append(asyncio.ensure_future(one(i)))
            issued = time.monotonic() - started
            await asyncio.gather(*tasks)
        else:
            pending = iter(range(len(taps)))

            async def worker() -> None:
                for i in pending:
                    await one(i)

            await asyncio.gather(*(worker() for _ in range(min(concurrency, len(taps)))))
            issued = time.monotonic() - started
        return {
            "answers": answers,
            "issued_seconds": round(issued, 6),
            "elapsed_seconds": round(time.monotonic() - started, 6),
        }

    async def _c_messages(self, request: web.Request, body: JSON) -> Any:
        chat = self._ctl_chat(request)
        return [
            {
                "message_id": m.message_id,
                "from_id": m.from_id,
                "text": m.text,
                "entities": m.entities,
                "reply_markup": m.reply_markup,
                "edits": m.edits,
                "edit_date": m.edit_date,
                "deleted": m.deleted,
                "date": m.date,
                **m.extra,
            }
            for m in chat.messages.values()
        ]

    def _member_update(
        self, chat: _Chat, bot: _Bot, by_user_id: int | None, old: str, new: str
    ) -> int:
        by = (
            self._user(by_user_id)
            if by_user_id is not None
            else self._user(min(chat.members) if chat.members else 1)
        )

        def member(status: str) -> JSON:
            out: JSON = {"status": status, "user": bot.user.to_api()}
            if status == "kicked":
                out["until_date"] = 0
            return out

        payload = {
            "my_chat_member": {
                "chat": chat.api,
                "from": by.to_api(),
                "date": int(time.time()),
                "old_chat_member": member(old),
                "new_chat_member": member(new),
            }
        }
        return self._broadcast(payload, bot.id)[0]

    def _target_bots(self, body: JSON) -> list[_Bot]:
        if body.get("bot_id") is not None:
            bot = self.bots.get(int(body["bot_id"]))
            if bot is None:
                raise _ControlError(404, f"unknown bot {body['bot_id']}")
            return [bot]
        return list(self.bots.values())

    async def _c_kick(self, request: web.Request, body: JSON) -> Any:
        chat = self._ctl_chat(request)
        by = body.get("by_user_id")
        ids = []
        for bot in self._target_bots(body):
            old = chat.status_of(bot.id)
            chat.bot_status[bot.id] = "kicked"
            ids.append(self._member_update(chat, bot, by, old, "kicked"))
        return {"update_ids": ids}

    async def _c_add(self, request: web.Request, body: JSON) -> Any:
        chat = self._ctl_chat(request)
        by = body.get("by_user_id")
        ids = []
        for bot in self._target_bots(body):
            old = chat.status_of(bot.id)
            if old == "member":
                old = "left"
            chat.bot_status[bot.id] = "member"
            ids.append(self._member_update(chat, bot, by, old, "member"))
        return {"update_ids": ids}

    async def _c_migrate(self, request: web.Request, body: JSON) -> Any:
        chat = self._ctl_chat(request)
        if chat.type != "group" or chat.migrated_to is not None:
            raise _ControlError(400, "only a non-migrated group can be migrated")
        by = body.get("by_user_id")
        return {"new_chat_id": self._migrate(chat, int(by) if by is not None else None)}

    async def _c_updates(self, request: web.Request, body: JSON) -> Any:
        update = body["update"]
        if not isinstance(update, dict) or not update:
            raise _ControlError(400, "update must be a non-empty object")
        update = {k: v for k, v in update.items() if k != "update_id"}
        cq = update.get("callback_query")
        if isinstance(cq, dict) and "id" in cq and cq["id"] not in self.callbacks:
            msg = cq.get("message") or {}
            bot_id = body.get("bot_id")
            if bot_id is None and isinstance(msg.get("from"), dict):
                bot_id = msg["from"].get("id")
            if bot_id is None and len(self.bots) == 1:
                bot_id = next(iter(self.bots))
            self.callbacks[str(cq["id"])] = _CallbackQuery(
                id=str(cq["id"]),
                bot_id=int(bot_id or 0),
                from_id=int((cq.get("from") or {}).get("id", 0)),
                chat_id=int((msg.get("chat") or {}).get("id", 0)),
                message_id=int(msg.get("message_id", 0)),
                data=str(cq.get("data", "")),
                created=time.monotonic(),
            )
        bot_id = body.get("bot_id")
        ids = self._broadcast(update, int(bot_id) if bot_id is not None else None)
        return {"update_id": ids[0] if ids else None, "update_ids": ids}

    async def _c_calls(self, request: web.Request, body: JSON) -> Any:
        method = request.query.get("method", "").lower()
        since = int(request.query.get("since", "0") or 0)
        limit = int(request.query.get("limit", "0") or 0)
        out: list[JSON] = []
        log = self.call_log
        # Walk backwards from the newest entry so `since` costs O(new entries).
        for entry in reversed(log):
            if entry["seq"] <= since:
                break
            if method and entry["method"].lower() != method:
                continue
            out.append(entry)
        out.reverse()
        if limit > 0:
            out = out[-limit:]
        return out

    async def _c_stats(self, request: web.Request, body: JSON) -> Any:
        pending = sum(len(b.pending) + b.queued for b in self.bots.values()) + len(self._backlog)
        return {
            "calls_by_method": dict(self.calls_by_method),
            "calls_total": self._call_seq,
            "too_many_requests_total": self.too_many_requests_total,
            "too_many_requests_by_chat": {
                str(k): v for k, v in self.too_many_requests_by_chat.items()
            },
            "webhook_deliveries": self.webhook_deliveries,
            "webhook_failures": self.webhook_failures,
            "webhook_statuses": dict(self.webhook_statuses),
            "webhook_expired": self.webhook_expired,
            "webhook_replies": self.webhook_replies,
            "sends_by_chat": {str(k): v for k, v in self.sends_by_chat.items() if v},
            "pending_updates": pending,
            "callback_queries": len(self.callbacks),
            "callback_answers": sum(1 for q in self.callbacks.values() if q.answered),
        }

    async def _c_callback_answer(self, request: web.Request, body: JSON) -> Any:
        qid = request.match_info["query_id"]
        query = self.callbacks.get(qid)
        if query is None:
            raise _ControlError(404, f"unknown callback query {qid}")
        wait = float(request.query.get("wait", "0") or 0)
        if wait > 0 and not query.answered:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await query.event.wait()
        return {
            "callback_query_id": qid,
            "answered": query.answered,
            "data": query.data,
            "from_id": query.from_id,
            "chat_id": query.chat_id,
            "message_id": query.message_id,
            "answer": query.answer_json(),
        }

    async def _c_add_fault(self, request: web.Request, body: JSON) -> Any:
        kind = str(body["kind"])
        if kind not in _FAULT_KINDS:
            raise _ControlError(400, f"unknown fault kind {kind!r}")
        default_method = "answercallbackquery" if kind == "callback_too_old" else "*"
        chat_id = body.get("chat_id")
        rule = _FaultRule(
            kind=kind,
            method=str(body.get("method") or default_method).lower(),
            chat_id=int(chat_id) if chat_id is not None else None,
            count=int(body.get("count", 1)),
            after=int(body.get("after", 0)),
            status=int(body["status"]) if body.get("status") is not None else None,
            delay=float(body.get("delay", 10.0)),
            retry_after=int(body.get("retry_after", 5)),
            description=body.get("description"),
        )
        if rule.count > 0:
            self.faults.append(rule)
        return {"faults": [f.to_json() for f in self.faults]}

    async def _c_get_faults(self, request: web.Request, body: JSON) -> Any:
        return {"faults": [f.to_json() for f in self.faults]}

    async def _c_clear_faults(self, request: web.Request, body: JSON) -> Any:
        self.faults.clear()
        return {"faults": []}

    async def _c_webhook(self, request: web.Request, body: JSON) -> Any:
        wanted = request.query.get("bot_id")
        out: JSON = {}
        for bot in self.bots.values():
            if wanted and str(bot.id) != wanted:
                continue
            out[str(bot.id)] = await self._m_get_webhook_info(bot, {})
        return out


def _error_body(exc: _ApiError) -> JSON:
    body: JSON = {"ok": False, "error_code": exc.status, "description": exc.description}
    if exc.parameters:
        body["parameters"] = exc.parameters
    return body


# --------------------------------------------------------------------------- client


class EmulatorError(Exception):
    """A control API call failed."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message


class TapResult(TypedDict, total=False):
    update_id: int
    callback_query_id: str
    answer: JSON | None


class SendResult(TypedDict, total=False):
    update_id: int
    update_ids: list[int]
    message_id: int


class EmulatorClient:
    """Async client for the emulator's control API (``/_emulator/...``)."""

    def __init__(self, base_url: str, session: aiohttp.ClientSession | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self._session = session
        self._own_session = session is None

    async def __aenter__(self) -> EmulatorClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._own_session and self._session is not None:
            await self._session.close()
            self._session = None

    async def _request(
        self,
        method: str,
        path: str,
        body: JSON | None = None,
        params: dict[str, str] | None = None,
    ) -> Any:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        async with self._session.request(
            method, f"{self.base_url}/_emulator{path}", json=body, params=params
        ) as resp:
            try:
                data = await resp.json(content_type=None)
            except ValueError:
                data = None
            if resp.status >= 400:
                message = data.get("error") if isinstance(data, dict) else None
                raise EmulatorError(resp.status, str(message or resp.reason))
            return data

    async def reset(self) -> None:
        await self._request("POST", "/reset", {})

    async def configure(
        self, *, enforce_limits: bool | None = None, limits: dict[str, float] | None = None
    ) -> JSON:
        body: JSON = {}
        if enforce_limits is not None:
            body["enforce_limits"] = enforce_limits
        if limits is not None:
            body["limits"] = limits
        return cast(JSON, await self._request("POST", "/config", body))

    async def add_bot(
        self, token: str, *, username: str | None = None, first_name: str | None = None
    ) -> JSON:
        body: JSON = {"token": token}
        if username:
            body["username"] = username
        if first_name:
            body["first_name"] = first_name
        return cast(JSON, await self._request("POST", "/bots", body))

    async def add_user(
        self, user_id: int, first_name: str, *, username: str | None = None, is_bot: bool = False
    ) -> JSON:
        body: JSON = {"id": user_id, "first_name": first_name, "is_bot": is_bot}
        if username:
            body["username"] = username
        return cast(JSON, await self._request("POST", "/users", body))

    async def add_chat(
        self,
        chat_id: int,
        chat_type: str,
        *,
        title: str | None = None,
        members: list[int] | None = None,
    ) -> JSON:
        body: JSON = {"id": chat_id, "type": chat_type, "members": members or []}
        if title is not None:
            body["title"] = title
        return cast(JSON, await self._request("POST", "/chats", body))

    async def chat(self, chat_id: int) -> JSON:
        return cast(JSON, await self._request("GET", f"/chats/{chat_id}"))

    async def send_text(self, chat_id: int, from_id: int, text: str) -> SendResult:
        body = {"from_id": from_id, "text": text}
        return cast(SendResult, await self._request("POST", f"/chats/{chat_id}/send", body))

    async def tap(
        self,
        chat_id: int,
        message_id: int,
        from_id: int,
        *,
        callback_data: str | None = None,
        button_text: str | None = None,
        row: int | None = None,
        col: int | None = None,
        wait: float = 0.0,
    ) -> TapResult:
        body: JSON = {"from_id": from_id, "wait": wait}
        if callback_data is not None:
            body["callback_data"] = callback_data
        if button_text is not None:
            body["button_text"] = button_text
        if row is not None and col is not None:
            body["row"], body["col"] = row, col
        path = f"/chats/{chat_id}/messages/{message_id}/tap"
        return cast(TapResult, await self._request("POST", path, body))

    async def taps(
        self, taps: list[JSON], *, rate: float = 0.0, concurrency: int = 1, wait: float = 10.0
    ) -> JSON:
        """Let the emulator play many users tapping (see `_c_taps`); returns their answers."""
        body: JSON = {"taps": taps, "rate": rate, "concurrency": concurrency, "wait": wait}
        return cast(JSON, await self._request("POST", "/taps", body))

    async def inject_update(self, update: JSON, *, bot_id: int | None = None) -> int:
        body: JSON = {"update": update}
        if bot_id is not None:
            body["bot_id"] = bot_id
        result = await self._request("POST", "/updates", body)
        return int(result["update_id"])

    async def kick(self, chat_id: int, by_user_id: int | None = None) -> list[int]:
        body: JSON = {} if by_user_id is None else {"by_user_id": by_user_id}
        result = await self._request("POST", f"/chats/{chat_id}/kick", body)
        return [int(i) for i in result["update_ids"]]

    async def add_back(self, chat_id: int, by_user_id: int | None = None) -> list[int]:
        body: JSON = {} if by_user_id is None else {"by_user_id": by_user_id}
        result = await self._request("POST", f"/chats/{chat_id}/add", body)
        return [int(i) for i in result["update_ids"]]

    async def migrate(self, chat_id: int, by_user_id: int | None = None) -> int:
        body: JSON = {} if by_user_id is None else {"by_user_id": by_user_id}
        result = await self._request("POST", f"/chats/{chat_id}/migrate", body)
        return int(result["new_chat_id"])

    async def messages(self, chat_id: int) -> list[JSON]:
        return cast(list[JSON], await self._request("GET", f"/chats/{chat_id}/messages"))

    async def calls(self, method: str | None = None, since: int = 0) -> list[JSON]:
        params = {"since": str(since)}
        if method:
            params["method"] = method
        return cast(list[JSON], await self._request("GET", "/calls", params=params))

    async def stats(self) -> JSON:
        return cast(JSON, await self._request("GET", "/stats"))

    async def callback_answer(self, callback_query_id: str, wait: float = 0.0) -> JSON:
        params = {"wait": str(wait)} if wait > 0 else None
        path = f"/callback_answers/{callback_query_id}"
        return cast(JSON, await self._request("GET", path, params=params))

    async def add_fault(
        self,
        kind: str,
        *,
        method: str = "*",
        chat_id: int | None = None,
        count: int = 1,
        after: int = 0,
        status: int | None = None,
        delay: float | None = None,
        retry_after: int | None = None,
        description: str | None = None,
    ) -> JSON:
        body: JSON = {"kind": kind, "method": method, "count": count, "after": after}
        if kind == "callback_too_old" and method == "*":
            body["method"] = "answerCallbackQuery"
        for key, value in (
            ("chat_id", chat_id),
            ("status", status),
            ("delay", delay),
            ("retry_after", retry_after),
            ("description", description),
        ):
            if value is not None:
                body[key] = value
        return cast(JSON, await self._request("POST", "/faults", body))

    async def faults(self) -> list[JSON]:
        result = await self._request("GET", "/faults")
        return cast(list[JSON], result["faults"])

    async def clear_faults(self) -> None:
        await self._request("DELETE", "/faults")

    async def webhook(self) -> JSON:
        return cast(JSON, await self._request("GET", "/webhook"))
