"""The emulated world: users, chats, messages, callback queries, updates, bots and webhooks."""

from __future__ import annotations

import asyncio
import time
from collections import Counter, deque
from collections.abc import Iterable
from dataclasses import dataclass, field

from sandbox.emulator.errors import JSON, ApiError, ControlError
from sandbox.emulator.faults import FaultRule
from sandbox.emulator.limits import FloodBudget


@dataclass
class User:
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
class Message:
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
    thread_id: int | None = None
    reply_to: int | None = None


# The six colours Telegram allows for a topic icon (createForumTopic's icon_color).
TOPIC_COLORS = frozenset({7322096, 16766590, 13338331, 9367192, 16749490, 16478047})
THREAD_NOT_FOUND = "Bad Request: message thread not found"


@dataclass
class Topic:
    """A forum topic: its id is the message id of the service message that created it."""

    id: int
    name: str
    icon_color: int
    closed: bool = False

    def to_api(self) -> JSON:
        return {"message_thread_id": self.id, "name": self.name, "icon_color": self.icon_color}


@dataclass
class Chat:
    id: int
    type: str
    title: str | None = None
    members: set[int] = field(default_factory=set)
    bot_status: dict[int, str] = field(default_factory=dict)
    migrated_to: int | None = None
    migrated_from: int | None = None
    next_message_id: int = 1
    messages: dict[int, Message] = field(default_factory=dict)
    api: JSON = field(default_factory=dict)
    is_forum: bool = False
    topics: dict[int, Topic] = field(default_factory=dict)

    def status_of(self, bot_id: int) -> str:
        # A bot cannot open a private chat: until the user writes to it, it may not send there.
        default = "not_started" if self.type == "private" else "member"
        return self.bot_status.get(bot_id, default)


@dataclass
class CallbackQuery:
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
class Update:
    update_id: int
    payload: JSON
    type: str
    key: str
    created: float


@dataclass
class Webhook:
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
class Bot:
    id: int
    token: str
    user: User
    next_update_id: int = 1
    pending: deque[Update] = field(default_factory=deque)
    update_event: asyncio.Event = field(default_factory=asyncio.Event)
    webhook: Webhook | None = None
    queues: dict[str, deque[Update]] = field(default_factory=dict)
    queued: int = 0
    budget: FloodBudget = field(default_factory=FloodBudget)
    commands: dict[str, list[JSON]] = field(default_factory=dict)
    allowed_updates: list[str] | None = None

    def webhook_info(self) -> JSON:
        """getWebhookInfo's answer: updates not yet fetched or delivered count as pending."""
        pending = len(self.pending) + self.queued
        if self.webhook is None:
            return {"url": "", "has_custom_certificate": False, "pending_update_count": pending}
        return self.webhook.info(pending)

    def wake_pollers(self) -> None:
        """Release every getUpdates waiting on this bot; later ones wait on a fresh event."""
        event = self.update_event
        self.update_event = asyncio.Event()
        event.set()


class World:
    """The emulator's state and the lookups every part of it shares."""

    _call_log_size: int

    def _init_state(self) -> None:
        self.bots: dict[int, Bot] = {}
        self._tokens: dict[int, str] = {}
        self.users: dict[int, User] = {}
        self.chats: dict[int, Chat] = {}
        self.callbacks: dict[str, CallbackQuery] = {}
        self.faults: list[FaultRule] = []
        self.call_log: deque[JSON] = deque(maxlen=self._call_log_size)
        self._call_seq = 0
        self._backlog: list[Update] = []
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
        self.long_polls_waiting = 0

    def _add_user(self, uid: int, first_name: str, username: str | None, is_bot: bool) -> User:
        user = User(id=uid, first_name=first_name, username=username, is_bot=is_bot)
        self.users[uid] = user
        if not is_bot and uid > 0 and uid not in self.chats:
            self._add_chat(uid, "private", None, [uid])
        return user

    def _user(self, uid: int) -> User:
        user = self.users.get(uid)
        if user is None:
            user = self._add_user(uid, f"User {uid}", None, False)
        return user

    def _add_chat(
        self,
        cid: int,
        ctype: str,
        title: str | None,
        members: Iterable[int],
        is_forum: bool = False,
    ) -> Chat:
        if ctype not in {"private", "group", "supergroup", "channel"}:
            raise ControlError(400, f"unknown chat type {ctype!r}")
        if is_forum and ctype != "supergroup":
            raise ControlError(400, "only a supergroup can be a forum")
        chat = Chat(id=cid, type=ctype, title=title, members=set(members), is_forum=is_forum)
        self._refresh_chat_api(chat)
        self.chats[cid] = chat
        return chat

    def _refresh_chat_api(self, chat: Chat) -> None:
        api: JSON = {"id": chat.id, "type": chat.type}
        if chat.type == "private":
            user = self.users.get(chat.id)
            api["first_name"] = user.first_name if user else f"User {chat.id}"
            if user and user.username:
                api["username"] = user.username
        else:
            api["title"] = chat.title or f"Chat {chat.id}"
        if chat.is_forum:
            api["is_forum"] = True
        chat.api = api

    def _check_chat(self, bot: Bot, chat_id: int) -> Chat:
        """The chat `bot` may write to, or the error Telegram gives for it."""
        chat = self.chats.get(chat_id)
        if chat is None:
            raise ApiError(400, "Bad Request: chat not found")
        if chat.migrated_to is not None:
            raise migrated_error(chat.migrated_to)
        status = chat.status_of(bot.id)
        if status != "member":
            raise forbidden(chat, status)
        return chat

    def _message_json(self, msg: Message, *, nested: bool = False) -> JSON:
        chat = self.chats[msg.chat_id]
        out: JSON = {"message_id": msg.message_id, "date": msg.date, "chat": chat.api}
        if msg.thread_id is not None:
            out["message_thread_id"] = msg.thread_id
            out["is_topic_message"] = True
        replied = chat.messages.get(msg.reply_to) if msg.reply_to is not None else None
        # Telegram nests one level: the replied-to message comes without its own reply.
        if replied is not None and not replied.deleted and not nested:
            out["reply_to_message"] = self._message_json(replied, nested=True)
        if msg.from_id is not None:
            out["from"] = self._user(msg.from_id).to_api()
        if msg.text is not None:
            out["text"] = msg.text
        if msg.entities:
            out["entities"] = msg.entities
        # Message.reply_markup is only ever an inline keyboard: a ForceReply or reply keyboard
        # is shown to users but never returned (the control API still lists it).
        if msg.reply_markup is not None and "inline_keyboard" in msg.reply_markup:
            out["reply_markup"] = msg.reply_markup
        if msg.edit_date is not None:
            out["edit_date"] = msg.edit_date
        if msg.extra:
            out.update(msg.extra)
        return out

    def _store_message(
        self,
        chat: Chat,
        from_id: int | None,
        text: str | None,
        entities: list[JSON] | None = None,
        reply_markup: JSON | None = None,
        extra: JSON | None = None,
        thread_id: int | None = None,
        reply_to: int | None = None,
    ) -> Message:
        mid = chat.next_message_id
        chat.next_message_id += 1
        msg = Message(
            message_id=mid,
            chat_id=chat.id,
            from_id=from_id,
            date=int(time.time()),
            text=text,
            entities=entities,
            reply_markup=reply_markup,
            extra=extra or {},
            thread_id=thread_id,
            reply_to=reply_to,
        )
        chat.messages[mid] = msg
        return msg

    def _place(
        self, chat: Chat, thread_id: int | None, reply_to: int | None, without_reply: bool = False
    ) -> tuple[int | None, int | None]:
        """Where a new message goes: its topic and the message it replies to, or Telegram's
        error. A reply without a topic lands in the topic of the message it answers."""
        if reply_to is not None:
            replied = chat.messages.get(reply_to)
            if replied is None or replied.deleted:
                if not without_reply:
                    raise ApiError(400, "Bad Request: message to be replied not found")
                reply_to = None
            elif thread_id is None:
                thread_id = replied.thread_id
        if thread_id is None:
            return None, reply_to
        topic = chat.topics.get(thread_id) if chat.is_forum else None
        if topic is None:
            raise ApiError(400, THREAD_NOT_FOUND)
        if topic.closed:
            raise ApiError(400, "Bad Request: TOPIC_CLOSED")
        return thread_id, reply_to

    def _new_supergroup_id(self, old_id: int) -> int:
        base = abs(old_id) % 10_000_000_000
        new_id = -(1_000_000_000_000 + base)
        while new_id in self.chats:
            self._chat_seq += 1
            new_id = -(1_000_000_000_000 + (base + self._chat_seq) % 10_000_000_000)
        return new_id


def forbidden(chat: Chat | None, status: str) -> ApiError:
    """Telegram's 403 for a bot that may not write to `chat` (not started, blocked, kicked)."""
    ctype = chat.type if chat else "group"
    if ctype == "private" and status == "not_started":
        return ApiError(403, "Forbidden: bot can't initiate conversation with a user")
    if ctype == "private":
        return ApiError(403, "Forbidden: bot was blocked by the user")
    if ctype == "supergroup":
        return ApiError(403, "Forbidden: bot is not a member of the supergroup chat")
    if ctype == "channel":
        return ApiError(403, "Forbidden: bot is not a member of the channel chat")
    if status == "kicked":
        return ApiError(403, "Forbidden: bot was kicked from the group chat")
    return ApiError(403, "Forbidden: bot is not a member of the group chat")


def migrated_error(new_chat_id: int) -> ApiError:
    """Telegram's 400 for a group that became a supergroup."""
    return ApiError(
        400,
        "Bad Request: group chat was upgraded to a supergroup chat",
        {"migrate_to_chat_id": new_chat_id},
    )
