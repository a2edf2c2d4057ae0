"""Updates to bots: who gets each one, getUpdates queues, and webhook delivery with retries."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from collections import deque
from collections.abc import Awaitable

import aiohttp

from sandbox.emulator.errors import JSON, ApiError, ControlError
from sandbox.emulator.state import Bot, Chat, Update, User, Webhook, World

TOKEN_RE = re.compile(r"^(\d+):([A-Za-z0-9_-]{30,})$")
_TOKEN_PREFIX_RE = re.compile(r"^\d+:")

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


def wants_update(allowed: list[str] | None, utype: str) -> bool:
    """Whether a bot's allowed_updates (None or empty = Telegram's default) take `utype`."""
    if not allowed:
        return utype in DEFAULT_UPDATE_TYPES or utype == "unknown"
    return utype in allowed


def _update_type_key(payload: JSON) -> tuple[str, str]:
    """The update's type and its ordering key: one webhook queue per chat or per user."""
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


def _chat_of(payload: JSON) -> int | None:
    for body in payload.values():
        if isinstance(body, dict) and isinstance(body.get("chat"), dict):
            cid = body["chat"].get("id")
            return cid if isinstance(cid, int) else None
    return None


class Updates(World):
    """Bots, the updates they are given, and the background tasks that deliver them."""

    webhook_retry_base: float
    webhook_retry_cap: float
    webhook_timeout: float
    callback_update_max_age: float
    message_update_max_age: float
    _session: aiohttp.ClientSession | None
    _tasks: set[asyncio.Task[None]]

    async def _call(
        self, bot: Bot, method_name: str, params: JSON, via_webhook_reply: bool
    ) -> tuple[int, JSON]:
        """Run one Bot API call (a webhook's reply is one); the server's dispatcher does it."""
        raise NotImplementedError

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

    # ------------------------------------------------------------------ bots

    def _bot_for_token(self, token: str) -> Bot:
        """The bot a token belongs to; an unseen well-formed token registers a new bot."""
        m = TOKEN_RE.match(token)
        if m is None:
            if _TOKEN_PREFIX_RE.match(token):
                raise ApiError(401, "Unauthorized")
            raise ApiError(404, "Not Found")
        bot_id = int(m.group(1))
        bot = self.bots.get(bot_id)
        if bot is not None:
            if bot.token != token:
                raise ApiError(401, "Unauthorized")
            return bot
        known = self._tokens.get(bot_id)
        if known is not None and known != token:
            raise ApiError(401, "Unauthorized")
        return self._register_bot(token)

    def _register_bot(
        self, token: str, username: str | None = None, first_name: str | None = None
    ) -> Bot:
        bot_id = int(token.split(":", 1)[0])
        user = User(
            id=bot_id,
            first_name=first_name or f"Quorum Test Bot {bot_id}",
            username=username or f"test{bot_id}_bot",
            is_bot=True,
        )
        bot = Bot(id=bot_id, token=token, user=user)
        self.bots[bot_id] = bot
        self._tokens[bot_id] = token
        self.users[bot_id] = user
        if self._backlog:
            backlog, self._backlog = self._backlog, []
            for upd in backlog:
                self._deliver(bot, upd.payload, upd.type, upd.key)
        return bot

    # ------------------------------------------------------------------ updates

    def _broadcast(self, payload: JSON, bot_id: int | None = None) -> list[int]:
        """Give an update to one bot or to every known bot; returns the update ids."""
        utype, key = _update_type_key(payload)
        if bot_id is not None:
            bot = self.bots.get(bot_id)
            if bot is None:
                raise ControlError(404, f"unknown bot {bot_id}")
            return [self._deliver(bot, payload, utype, key)]
        if not self.bots:
            self._backlog.append(Update(0, payload, utype, key, time.monotonic()))
            return [0]
        chat_id = _chat_of(payload)
        ids = []
        for bot in self.bots.values():
            chat = self.chats.get(chat_id) if chat_id is not None else None
            if chat is not None and utype != "my_chat_member" and not chat.has_bot(bot.id):
                continue
            ids.append(self._deliver(bot, payload, utype, key))
        return ids

    def _deliver(self, bot: Bot, payload: JSON, utype: str, key: str) -> int:
        update_id = bot.next_update_id
        bot.next_update_id += 1
        body = {"update_id": update_id, **payload}
        upd = Update(update_id, body, utype, key, time.monotonic())
        if bot.webhook is not None:
            allowed = bot.webhook.allowed_updates
            if not wants_update(allowed, utype):
                return update_id
            self._enqueue_webhook(bot, upd)
        else:
            bot.pending.append(upd)
            bot.wake_pollers()
        return update_id

    def _migrate(self, chat: Chat, by_user_id: int | None) -> int:
        """Upgrade a group to a new supergroup, with the service messages both chats get."""
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

    # ------------------------------------------------------------------ webhook delivery

    def _enqueue_webhook(self, bot: Bot, upd: Update) -> None:
        """Queue for the webhook; one worker per key keeps a chat's updates in order."""
        bot.queued += 1
        queue = bot.queues.get(upd.key)
        if queue is not None:
            queue.append(upd)
            return
        queue = deque([upd])
        bot.queues[upd.key] = queue
        self._spawn(self._queue_worker(bot, upd.key, queue))

    async def _queue_worker(self, bot: Bot, key: str, queue: deque[Update]) -> None:
        try:
            while queue:
                await self._deliver_with_retry(bot, queue[0])
                queue.popleft()
                bot.queued -= 1
        finally:
            if bot.queues.get(key) is queue:
                del bot.queues[key]

    async def _deliver_with_retry(self, bot: Bot, upd: Update) -> None:
        """Post until accepted or too old, backing off as Telegram does (or as Retry-After
        says); a webhook removed meanwhile hands the update back to getUpdates."""
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
                bot.wake_pollers()
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
        self, bot: Bot, webhook: Webhook, upd: Update
    ) -> tuple[bool, float | None]:
        """One POST to the webhook: (accepted, Retry-After seconds if the bot gave any)."""
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

    async def _webhook_reply(self, bot: Bot, body: bytes) -> None:
        """A webhook's response body may itself be a Bot API call, as Telegram allows."""
        try:
            reply = json.loads(body)
        except ValueError:
            return
        if not isinstance(reply, dict) or not isinstance(reply.get("method"), str):
            return
        params = {k: v for k, v in reply.items() if k != "method"}
        self.webhook_replies += 1
        await self._call(bot, reply["method"], params, via_webhook_reply=True)
