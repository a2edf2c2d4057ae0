"""The Bot API methods the emulator serves, with Telegram's validation and error texts."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from sandbox.emulator.errors import JSON, ApiError, too_many_requests
from sandbox.emulator.faults import NOT_MODIFIED, QUERY_TOO_OLD
from sandbox.emulator.html import parse_html
from sandbox.emulator.limits import Limits
from sandbox.emulator.params import get_bool, get_float, get_int, get_json, get_opt_int, get_str
from sandbox.emulator.state import Bot, Chat, Message, Webhook, forbidden
from sandbox.emulator.updates import Updates, wants_update

Handler = Callable[[Bot, JSON], Awaitable[Any]]

_SECRET_RE = re.compile(r"^[A-Za-z0-9_-]{1,256}$")
_COMMAND_RE = re.compile(r"^[a-z0-9_]{1,32}$")

MAX_TEXT = 4096
MAX_CALLBACK_DATA = 64
MAX_CALLBACK_ANSWER = 200
GROUP_TYPES = frozenset({"group", "supergroup"})
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
_WEBHOOK_CONFLICT = (
    "Conflict: can't use getUpdates method while webhook is active; "
    "use deleteWebhook to delete the webhook first"
)
_BAD_SECRET = "Bad Request: secret token contains unallowed characters"


def _validate_button(button: Any) -> None:
    if not isinstance(button, dict):
        raise ApiError(400, "Bad Request: can't parse inline keyboard button")
    text = button.get("text")
    if not isinstance(text, str) or not text:
        raise ApiError(
            400,
            'Bad Request: can\'t parse inline keyboard button: Field "text" must be of type String',
        )
    if not any(a in button for a in _BUTTON_ACTIONS):
        raise ApiError(
            400,
            "Bad Request: can't parse inline keyboard button: "
            "Text buttons are unallowed in the inline keyboard",
        )
    if "callback_data" in button:
        data = button["callback_data"]
        if not isinstance(data, str):
            raise ApiError(400, "Bad Request: BUTTON_DATA_INVALID")
        size = len(data.encode("utf-8"))
        if size < 1 or size > MAX_CALLBACK_DATA:
            raise ApiError(400, "Bad Request: BUTTON_DATA_INVALID")
    if "url" in button and (not isinstance(button["url"], str) or not button["url"]):
        raise ApiError(400, "Bad Request: BUTTON_URL_INVALID")


_BAD_MARKUP = "Bad Request: can't parse reply keyboard markup JSON object"
# tdlib keeps at most this many characters of a ForceReply placeholder (the docs say 1-64).
MAX_PLACEHOLDER = 64


def _field_error(name: str, kind: str) -> ApiError:
    return ApiError(400, f'{_BAD_MARKUP}: Field "{name}" must be of type {kind}')


def _force_reply(raw: JSON) -> JSON:
    """A ForceReply as the Bot API server reads it: booleans checked, the placeholder a
    string, cut to 64 characters as tdlib does."""
    if not isinstance(raw["force_reply"], bool):
        raise _field_error("force_reply", "Boolean")
    if not raw["force_reply"]:
        raise ApiError(400, _BAD_MARKUP)
    out: JSON = {"force_reply": True}
    if "selective" in raw:
        if not isinstance(raw["selective"], bool):
            raise _field_error("selective", "Boolean")
        out["selective"] = raw["selective"]
    placeholder = raw.get("input_field_placeholder")
    if placeholder is not None:
        if not isinstance(placeholder, str):
            raise _field_error("input_field_placeholder", "String")
        if placeholder.strip():
            out["input_field_placeholder"] = placeholder[:MAX_PLACEHOLDER]
    return out


def validate_markup(raw: Any, *, inline_only: bool = False) -> JSON | None:
    """A reply_markup as Telegram checks it (inline keyboards and ForceReply in detail), or
    None. Edits take only inline keyboards (`inline_only`)."""
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise ApiError(400, _BAD_MARKUP)
    if inline_only and raw and "inline_keyboard" not in raw:
        raise ApiError(400, "Bad Request: inline keyboard expected")
    if "force_reply" in raw:
        return _force_reply(raw)
    if "inline_keyboard" not in raw:
        return raw
    rows = raw["inline_keyboard"]
    if not isinstance(rows, list):
        raise ApiError(400, 'Bad Request: field "inline_keyboard" must be an Array')
    for row in rows:
        if not isinstance(row, list):
            raise ApiError(400, 'Bad Request: field "inline_keyboard" must be an Array of Arrays')
        for button in row:
            _validate_button(button)
    return raw


def _placement(params: JSON) -> tuple[int | None, int | None, bool]:
    """sendMessage's topic and reply: `message_thread_id`, then `reply_parameters` (or the
    older `reply_to_message_id` / `allow_sending_without_reply`)."""
    thread_id = get_opt_int(params, "message_thread_id")
    reply = get_json(params, "reply_parameters")
    if reply is not None:
        if not isinstance(reply, dict):
            raise ApiError(400, "Bad Request: can't parse reply parameters JSON object")
        if reply.get("chat_id") is not None and get_int(reply, "chat_id") != get_int(
            params, "chat_id"
        ):
            raise ApiError(400, "Bad Request: message to be replied not found")
        return (
            thread_id,
            get_int(reply, "message_id"),
            bool(reply.get("allow_sending_without_reply")),
        )
    return (
        thread_id,
        get_opt_int(params, "reply_to_message_id"),
        get_bool(params, "allow_sending_without_reply"),
    )


def parse_text(params: JSON, key: str = "text") -> tuple[str, list[JSON] | None]:
    """A message text after its parse_mode, with its entities; empty or too long fails."""
    raw = params.get(key)
    text = raw if isinstance(raw, str) else ("" if raw is None else str(raw))
    parse_mode = get_str(params, "parse_mode")
    entities: list[JSON] | None = None
    if parse_mode and parse_mode.lower() == "html":
        text, entities = parse_html(text)
    elif parse_mode and parse_mode.lower() not in {"markdown", "markdownv2"}:
        raise ApiError(400, f"Bad Request: unsupported parse_mode {parse_mode!r}")
    else:
        given = get_json(params, "entities")
        if isinstance(given, list):
            entities = given
    if not text.strip():
        raise ApiError(400, "Bad Request: message text is empty")
    if len(text) > MAX_TEXT:
        raise ApiError(400, "Bad Request: message is too long")
    return text, entities or None


def _commands_key(params: JSON) -> str:
    scope = get_json(params, "scope") or {"type": "default"}
    lang = get_str(params, "language_code") or ""
    return json.dumps(scope, sort_keys=True) + "|" + lang


def _clean_commands(commands: Any) -> list[JSON]:
    if not isinstance(commands, list) or len(commands) > 100:
        raise ApiError(400, "Bad Request: commands is empty")
    clean: list[JSON] = []
    for cmd in commands:
        if not isinstance(cmd, dict):
            raise ApiError(400, "Bad Request: BOT_COMMAND_INVALID")
        name = str(cmd.get("command", "")).lstrip("/").lower()
        desc = str(cmd.get("description", ""))
        if not _COMMAND_RE.match(name):
            raise ApiError(400, "Bad Request: BOT_COMMAND_INVALID")
        if not 1 <= len(desc) <= 256:
            raise ApiError(400, "Bad Request: command description is empty")
        clean.append({"command": name, "description": desc})
    return clean


def _webhook_secret(params: JSON) -> str | None:
    secret = get_str(params, "secret_token")
    if secret is not None and secret != "" and not _SECRET_RE.match(secret):
        raise ApiError(400, _BAD_SECRET)
    if secret == "" and "secret_token" in params:
        raise ApiError(400, _BAD_SECRET)
    return secret


class BotApi(Updates):
    """Bot API method implementations: ``_m_<method>(bot, params) -> result``."""

    enforce_limits: bool
    limits: Limits
    flood_clock: Callable[[], float]
    callback_answer_timeout: float | None
    _closing: asyncio.Event

    def _bot_api_methods(self) -> dict[str, tuple[str, Handler]]:
        """Lower-cased method name -> (Telegram's spelling, implementation)."""
        methods: dict[str, tuple[str, Handler]] = {}
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
            methods[name.lower()] = (name, handler)
        return methods

    def _charge(self, bot: Bot, chat: Chat) -> None:
        """Count one send/edit against the budgets, or raise 429 without consuming."""
        self.sends_by_chat[chat.id] += 1
        if not self.enforce_limits:
            return
        is_group = chat.type in GROUP_TYPES or chat.id < 0
        retry = bot.budget.charge(self.limits, chat.id, is_group, self.flood_clock())
        if retry:
            self.sends_by_chat[chat.id] -= 1
            raise too_many_requests(retry)

    def _find_message(self, bot: Bot, params: JSON, verb: str) -> tuple[Chat, Message]:
        chat = self._check_chat(bot, get_int(params, "chat_id"))
        mid = get_int(params, "message_id")
        msg = chat.messages.get(mid)
        if msg is None or msg.deleted:
            raise ApiError(400, f"Bad Request: message to {verb} not found")
        if verb == "edit" and msg.from_id != bot.id:
            raise ApiError(400, "Bad Request: message can't be edited")
        return chat, msg

    # ------------------------------------------------------------------ messages

    async def _m_get_me(self, bot: Bot, params: JSON) -> Any:
        out = bot.user.to_api()
        out.update(
            {
                "can_join_groups": True,
                "can_read_all_group_messages": False,
                "supports_inline_queries": False,
            }
        )
        return out

    async def _m_send_message(self, bot: Bot, params: JSON) -> Any:
        chat = self._check_chat(bot, get_int(params, "chat_id"))
        text, entities = parse_text(params)
        markup = validate_markup(get_json(params, "reply_markup"))
        thread_id, reply_to = self._place(chat, *_placement(params))
        self._charge(bot, chat)
        msg = self._store_message(
            chat, bot.id, text, entities, markup, thread_id=thread_id, reply_to=reply_to
        )
        return self._message_json(msg)

    async def _m_edit_message_text(self, bot: Bot, params: JSON) -> Any:
        text, entities = parse_text(params)
        markup = validate_markup(get_json(params, "reply_markup"), inline_only=True)
        if params.get("inline_message_id"):
            return True
        chat, msg = self._find_message(bot, params, "edit")
        if msg.text == text and msg.entities == entities and msg.reply_markup == markup:
            raise ApiError(400, NOT_MODIFIED)
        self._charge(bot, chat)
        msg.text, msg.entities, msg.reply_markup = text, entities, markup
        msg.edit_date = int(time.time())
        msg.edits += 1
        return self._message_json(msg)

    async def _m_edit_message_reply_markup(self, bot: Bot, params: JSON) -> Any:
        markup = validate_markup(get_json(params, "reply_markup"), inline_only=True)
        if params.get("inline_message_id"):
            return True
        chat, msg = self._find_message(bot, params, "edit")
        if msg.reply_markup == markup or (
            not markup and not (msg.reply_markup or {}).get("inline_keyboard")
        ):
            raise ApiError(400, NOT_MODIFIED)
        self._charge(bot, chat)
        msg.reply_markup = markup
        msg.edit_date = int(time.time())
        msg.edits += 1
        return self._message_json(msg)

    async def _m_delete_message(self, bot: Bot, params: JSON) -> Any:
        _, msg = self._find_message(bot, params, "delete")
        msg.deleted = True
        return True

    async def _m_answer_callback_query(self, bot: Bot, params: JSON) -> Any:
        qid = get_str(params, "callback_query_id") or ""
        query = self.callbacks.get(qid)
        now = time.monotonic()
        if query is None or query.answered or query.bot_id != bot.id:
            raise ApiError(400, QUERY_TOO_OLD)
        if (
            self.callback_answer_timeout is not None
            and now - query.created > self.callback_answer_timeout
        ):
            raise ApiError(400, QUERY_TOO_OLD)
        text = get_str(params, "text")
        if text is not None and len(text) > MAX_CALLBACK_ANSWER:
            raise ApiError(400, "Bad Request: MESSAGE_TOO_LONG")
        query.answered = True
        query.text = text
        query.show_alert = get_bool(params, "show_alert")
        query.url = get_str(params, "url")
        query.answered_at = now
        query.event.set()
        return True

    # ------------------------------------------------------------------ updates and webhooks

    async def _m_set_webhook(self, bot: Bot, params: JSON) -> Any:
        url = get_str(params, "url") or ""
        if not url:
            return await self._m_delete_webhook(bot, params)
        if not (url.startswith("https://") or url.startswith("http://")) or len(url) < 10:
            raise ApiError(400, "Bad Request: bad webhook: invalid webhook URL specified")
        secret = _webhook_secret(params)
        max_conn = get_int(params, "max_connections", required=False, default=40)
        max_conn = min(100, max(1, max_conn))
        allowed = get_json(params, "allowed_updates")
        if allowed is not None and not isinstance(allowed, list):
            raise ApiError(400, "Bad Request: can't parse allowed_updates JSON object")
        if get_bool(params, "drop_pending_updates"):
            bot.pending.clear()
        old = bot.webhook
        bot.webhook = Webhook(
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
            if wants_update(bot.webhook.allowed_updates, upd.type):
                self._enqueue_webhook(bot, upd)
        return True

    async def _m_delete_webhook(self, bot: Bot, params: JSON) -> Any:
        bot.webhook = None
        if get_bool(params, "drop_pending_updates"):
            bot.pending.clear()
        return True

    async def _m_get_webhook_info(self, bot: Bot, params: JSON) -> Any:
        return bot.webhook_info()

    async def _m_get_updates(self, bot: Bot, params: JSON) -> Any:
        if bot.webhook is not None:
            raise ApiError(409, _WEBHOOK_CONFLICT)
        offset = get_int(params, "offset", required=False, default=0)
        limit = min(100, max(1, get_int(params, "limit", required=False, default=100)))
        timeout = max(0.0, get_float(params, "timeout", 0.0))
        allowed = get_json(params, "allowed_updates")
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
            await self._wait_for_updates(bot, timeout)
            if bot.webhook is not None:
                raise ApiError(409, _WEBHOOK_CONFLICT)
        result = []
        for upd in pending:
            if offset > 0 and upd.update_id < offset:
                continue
            if bot.allowed_updates is not None and not wants_update(bot.allowed_updates, upd.type):
                continue
            result.append(upd.payload)
            if len(result) >= limit:
                break
        return result

    async def _wait_for_updates(self, bot: Bot, seconds: float) -> None:
        """Long polling: until an update arrives, the emulator stops, or `seconds` pass."""
        closing = asyncio.ensure_future(self._closing.wait())
        waiter = asyncio.ensure_future(bot.update_event.wait())
        self.long_polls_waiting += 1  # in stats: a test sees the poll wait, not a guess
        try:
            await asyncio.wait(
                {closing, waiter}, timeout=seconds, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            self.long_polls_waiting = max(0, self.long_polls_waiting - 1)  # a reset zeroed it
            closing.cancel()
            waiter.cancel()

    # ------------------------------------------------------------------ chats and commands

    async def _m_get_chat(self, bot: Bot, params: JSON) -> Any:
        chat = self.chats.get(get_int(params, "chat_id"))
        if chat is None:
            raise ApiError(400, "Bad Request: chat not found")
        if chat.type != "private" and chat.status_of(bot.id) == "kicked":
            raise forbidden(chat, "kicked")
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

    async def _m_send_chat_action(self, bot: Bot, params: JSON) -> Any:
        self._check_chat(bot, get_int(params, "chat_id"))
        if not get_str(params, "action"):
            raise ApiError(400, "Bad Request: action is empty")
        return True

    async def _m_set_my_commands(self, bot: Bot, params: JSON) -> Any:
        clean = _clean_commands(get_json(params, "commands"))
        bot.commands[_commands_key(params)] = clean
        return True

    async def _m_get_my_commands(self, bot: Bot, params: JSON) -> Any:
        return bot.commands.get(_commands_key(params), [])

    async def _m_delete_my_commands(self, bot: Bot, params: JSON) -> Any:
        bot.commands.pop(_commands_key(params), None)
        return True

    async def _m_leave_chat(self, bot: Bot, params: JSON) -> Any:
        chat = self._check_chat(bot, get_int(params, "chat_id"))
        if chat.type == "private":
            raise ApiError(400, "Bad Request: chat member status can't be changed in private chats")
        chat.bot_status[bot.id] = "left"
        return True
