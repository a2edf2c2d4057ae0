"""Control routes that act as users: messages, /start, blocking, button taps, membership."""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any, cast

from aiohttp import web

from sandbox.emulator.errors import JSON, ControlError
from sandbox.emulator.html import utf16_len
from sandbox.emulator.state import Bot, CallbackQuery, Chat
from sandbox.emulator.topics import Topics

# Telegram's deep-link payload: https://t.me/<bot>?start=<payload>.
_START_PAYLOAD = re.compile(r"[A-Za-z0-9_-]{1,64}")


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


async def answered(query: CallbackQuery, wait: float) -> None:
    """Wait up to `wait` seconds for the bot to answer the query."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(wait):
            await query.event.wait()


async def _start_on_schedule(
    one: Callable[[int], Awaitable[None]], n: int, rate: float, started: float
) -> list[asyncio.Task[None]]:
    """Open loop: start tap i at `started + i / rate`, answered or not; return them all."""
    tasks = []
    for i in range(n):
        delay = started + i / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.ensure_future(one(i)))
    return tasks


async def _closed_loop(one: Callable[[int], Awaitable[None]], n: int, concurrency: int) -> None:
    """Closed loop: `concurrency` users, each tapping again once answered (or given up)."""
    pending = iter(range(n))

    async def worker() -> None:
        for i in pending:
            await one(i)

    await asyncio.gather(*(worker() for _ in range(min(concurrency, n))))


_ADMIN_RIGHTS = (
    "can_manage_chat",
    "can_delete_messages",
    "can_manage_video_chats",
    "can_restrict_members",
    "can_promote_members",
    "can_change_info",
    "can_invite_users",
    "can_post_stories",
    "can_edit_stories",
    "can_delete_stories",
    "can_send_welcome_messages",
)


def _member(bot: Bot, status: str, can_pin: bool = False) -> JSON:
    out: JSON = {"status": status, "user": bot.user.to_api()}
    if status == "kicked":
        out["until_date"] = 0
    if status == "administrator":
        rights = dict.fromkeys(_ADMIN_RIGHTS, False)
        out.update(rights, can_be_edited=False, is_anonymous=False, can_pin_messages=can_pin)
    return out


class Users(Topics):
    """What people do in Telegram, played through the control API (``_c_<name>`` routes)."""

    def _ctl_chat(self, request: web.Request) -> Chat:
        chat = self.chats.get(int(request.match_info["chat_id"]))
        if chat is None:
            raise ControlError(404, f"unknown chat {request.match_info['chat_id']}")
        return chat

    # ------------------------------------------------------------------ acting as users

    async def _c_send(self, request: web.Request, body: JSON) -> Any:
        return self._send_as_user(self._ctl_chat(request), body)

    async def _c_reply(self, request: web.Request, body: JSON) -> Any:
        """The user answers a message (a ForceReply question): `reply_to_message` is set."""
        reply_to = int(request.match_info["message_id"])
        return self._send_as_user(
            self._ctl_chat(request), {**body, "reply_to_message_id": reply_to}
        )

    def _send_as_user(self, chat: Chat, body: JSON) -> JSON:
        from_id = int(body["from_id"])
        text = str(body["text"])
        thread = body.get("message_thread_id")
        reply = body.get("reply_to_message_id")
        thread_id, reply_to = self._place(
            chat,
            int(thread) if thread is not None else None,
            int(reply) if reply is not None else None,
        )
        self._user(from_id)
        chat.members.add(from_id)
        if chat.type == "private":
            self._open_private_chat(chat, body)
        entities: list[JSON] = []
        if text.startswith("/"):
            command = text.split(maxsplit=1)[0]
            entities.append({"type": "bot_command", "offset": 0, "length": utf16_len(command)})
        msg = self._store_message(
            chat, from_id, text, entities or None, thread_id=thread_id, reply_to=reply_to
        )
        ids = self._broadcast({"message": self._message_json(msg)}, body.get("bot_id"))
        return {
            "update_id": ids[0] if ids else None,
            "update_ids": ids,
            "message_id": msg.message_id,
        }

    def _open_private_chat(self, chat: Chat, body: JSON) -> None:
        """The user writes to the bot: from now on the bot may write back (a blocked bot is
        unblocked first, which Telegram reports as `my_chat_member` kicked → member)."""
        for bot in self._target_bots(body):
            old = chat.status_of(bot.id)
            chat.bot_status[bot.id] = "member"
            if old == "kicked":
                self._member_update(chat, bot, chat.id, "kicked", "member")

    async def _c_start(self, request: web.Request, body: JSON) -> Any:
        """The user opens the bot (or a `t.me/<bot>?start=<payload>` deep link): `/start`."""
        uid = int(request.match_info["user_id"])
        payload = body.get("payload")
        if payload is not None and not _START_PAYLOAD.fullmatch(str(payload)):
            raise ControlError(400, "a start payload is 1-64 characters of A-Za-z0-9_-")
        self._user(uid)
        text = "/start" if payload is None else f"/start {payload}"
        return self._send_as_user(self.chats[uid], {**body, "from_id": uid, "text": text})

    async def _c_block(self, request: web.Request, body: JSON) -> Any:
        """The user blocks the bot: `my_chat_member` member → kicked, then 403 on every send."""
        uid = int(request.match_info["user_id"])
        self._user(uid)
        chat = self.chats[uid]
        ids = []
        for bot in self._target_bots(body):
            old = chat.status_of(bot.id)
            chat.bot_status[bot.id] = "kicked"
            chat.can_pin.discard(bot.id)
            ids.append(self._member_update(chat, bot, uid, old, "kicked"))
        return {"update_ids": ids}

    def _tap(self, chat: Chat, message_id: int, body: JSON) -> CallbackQuery:
        """A user taps a button: the callback query update goes to the bot that sent it."""
        msg = chat.messages.get(message_id)
        if msg is None or msg.deleted:
            raise ControlError(404, "unknown message")
        if not ({"callback_data", "button_text"} & body.keys() or {"row", "col"} <= body.keys()):
            raise ControlError(400, "give callback_data, button_text or row+col")
        button = _find_button(msg.reply_markup, body)
        if button is None or "callback_data" not in button:
            raise ControlError(400, "message has no such callback button")
        bot = self.bots.get(msg.from_id or 0)
        if bot is None:
            raise ControlError(400, "message was not sent by a known bot")
        user = self._user(int(body["from_id"]))
        self._callback_seq += 1
        qid = str(4_200_000_000_000_000_000 + self._callback_seq * 7919)
        query = CallbackQuery(
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
            await answered(query, wait)
            out["answer"] = query.answer_json()
        return out

    async def _c_tap_newest(self, request: web.Request, body: JSON) -> Any:
        """Tap the newest message carrying the button (whose text holds `text_contains`, if
        given): what a person does without looking up a message id. The message may still be
        on its way from the bot: it is waited for up to `wait` seconds."""
        chat = self._ctl_chat(request)
        if not ({"callback_data", "button_text"} & body.keys() or {"row", "col"} <= body.keys()):
            raise ControlError(400, "give callback_data, button_text or row+col")
        wait = float(body.get("wait") or 0)
        needle = str(body.get("text_contains") or "")
        deadline = time.monotonic() + wait
        while (message_id := self._newest_with_button(chat, body, needle)) is None:
            if time.monotonic() >= deadline:
                raise ControlError(404, "no message with such a button")
            await asyncio.sleep(0.05)
        query = self._tap(chat, message_id, body)
        out: JSON = {
            "update_id": query.update_id,
            "callback_query_id": query.id,
            "message_id": message_id,
        }
        if wait > 0:
            await answered(query, max(0.5, deadline - time.monotonic()))
            out["answer"] = query.answer_json()
        return out

    def _newest_with_button(self, chat: Chat, body: JSON, needle: str) -> int | None:
        for msg in reversed(chat.messages.values()):
            if msg.deleted or needle not in (msg.text or ""):
                continue
            button = _find_button(msg.reply_markup, body)
            if button is not None and "callback_data" in button:
                return msg.message_id
        return None

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
            raise ControlError(400, "taps must be a non-empty list")
        rate = float(body.get("rate") or 0)
        concurrency = max(1, int(body.get("concurrency") or 1))
        wait = float(body.get("wait") or 10)
        answers: list[JSON | None] = [None] * len(taps)

        async def one(i: int) -> None:
            t = taps[i]
            chat = self.chats.get(int(t["chat_id"]))
            if chat is None:
                raise ControlError(404, f"unknown chat {t['chat_id']}")
            query = self._tap(chat, int(t["message_id"]), t)
            await answered(query, wait)
            answers[i] = query.answer_json()

        started = time.monotonic()
        if rate > 0:
            tasks = await _start_on_schedule(one, len(taps), rate, started)
            issued = time.monotonic() - started
            await asyncio.gather(*tasks)
        else:
            await _closed_loop(one, len(taps), concurrency)
            issued = time.monotonic() - started
        return {
            "answers": answers,
            "issued_seconds": round(issued, 6),
            "elapsed_seconds": round(time.monotonic() - started, 6),
        }

    # ------------------------------------------------------------------ membership

    def _member_update(
        self,
        chat: Chat,
        bot: Bot,
        by_user_id: int | None,
        old: str,
        new: str,
        can_pin: bool = False,
    ) -> int:
        by = (
            self._user(by_user_id)
            if by_user_id is not None
            else self._user(min(chat.members) if chat.members else 1)
        )
        payload = {
            "my_chat_member": {
                "chat": chat.api,
                "from": by.to_api(),
                "date": int(time.time()),
                "old_chat_member": _member(bot, old),
                "new_chat_member": _member(bot, new, can_pin),
            }
        }
        return self._broadcast(payload, bot.id)[0]

    def _target_bots(self, body: JSON) -> list[Bot]:
        if body.get("bot_id") is not None:
            bot = self.bots.get(int(body["bot_id"]))
            if bot is None:
                raise ControlError(404, f"unknown bot {body['bot_id']}")
            return [bot]
        return list(self.bots.values())

    async def _c_kick(self, request: web.Request, body: JSON) -> Any:
        chat = self._ctl_chat(request)
        by = body.get("by_user_id")
        ids = []
        for bot in self._target_bots(body):
            old = chat.status_of(bot.id)
            chat.bot_status[bot.id] = "kicked"
            chat.can_pin.discard(bot.id)
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
            chat.can_pin.discard(bot.id)
            ids.append(self._member_update(chat, bot, by, old, "member"))
        return {"update_ids": ids}

    async def _c_promote(self, request: web.Request, body: JSON) -> Any:
        """A user makes the bot an administrator (`can_pin_messages` as given, default true)."""
        chat = self._ctl_chat(request)
        can_pin = bool(body.get("can_pin_messages", True))
        ids = []
        for bot in self._target_bots(body):
            old = chat.status_of(bot.id)
            chat.bot_status[bot.id] = "administrator"
            (chat.can_pin.add if can_pin else chat.can_pin.discard)(bot.id)
            by = body.get("by_user_id")
            ids.append(self._member_update(chat, bot, by, old, "administrator", can_pin))
        return {"update_ids": ids}

    async def _c_migrate(self, request: web.Request, body: JSON) -> Any:
        chat = self._ctl_chat(request)
        if chat.type != "group" or chat.migrated_to is not None:
            raise ControlError(400, "only a non-migrated group can be migrated")
        by = body.get("by_user_id")
        return {"new_chat_id": self._migrate(chat, int(by) if by is not None else None)}
