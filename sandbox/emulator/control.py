"""The ``/_emulator/`` control API: set up the world, act as users, read calls, add faults."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any, cast

from aiohttp import web

from sandbox.emulator.errors import JSON, ApiError, ControlError
from sandbox.emulator.faults import FAULT_KINDS, FaultRule
from sandbox.emulator.html import utf16_len
from sandbox.emulator.limits import Limits
from sandbox.emulator.state import Bot, CallbackQuery, Chat
from sandbox.emulator.topics import Topics
from sandbox.emulator.updates import TOKEN_RE

_ControlHandler = Callable[[web.Request, JSON], Awaitable[Any]]

# Telegram's deep-link payload: https://t.me/<bot>?start=<payload>.
_START_PAYLOAD = re.compile(r"[A-Za-z0-9_-]{1,64}")


async def _read_body(request: web.Request) -> JSON | web.Response:
    """The JSON object body (empty if none), or the 400 to answer a malformed one with."""
    if not request.body_exists:
        return {}
    try:
        data = await request.json()
    except ValueError:
        return web.json_response({"ok": False, "error": "invalid JSON"}, status=400)
    if data is not None and not isinstance(data, dict):
        return web.json_response({"ok": False, "error": "body must be a JSON object"}, status=400)
    return data or {}


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


async def _answered(query: CallbackQuery, wait: float) -> None:
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


def _member(bot: Bot, status: str) -> JSON:
    out: JSON = {"status": status, "user": bot.user.to_api()}
    if status == "kicked":
        out["until_date"] = 0
    return out


class Control(Topics):
    """Control routes: ``_c_<name>(request, body) -> JSON``, wrapped by `_ctl`."""

    _initial_limits: tuple[bool, Limits]

    def _add_control_routes(self, r: web.UrlDispatcher) -> None:
        c = "/_emulator"
        r.add_post(f"{c}/reset", self._ctl(self._c_reset))
        r.add_post(f"{c}/config", self._ctl(self._c_config))
        r.add_get(f"{c}/config", self._ctl(self._c_get_config))
        r.add_post(f"{c}/bots", self._ctl(self._c_bots))
        r.add_post(f"{c}/users", self._ctl(self._c_users))
        r.add_post(f"{c}/users/{{user_id}}/start", self._ctl(self._c_start))
        r.add_post(f"{c}/users/{{user_id}}/block", self._ctl(self._c_block))
        r.add_post(f"{c}/chats", self._ctl(self._c_chats))
        r.add_get(f"{c}/chats/{{chat_id}}", self._ctl(self._c_get_chat))
        r.add_post(f"{c}/chats/{{chat_id}}/send", self._ctl(self._c_send))
        r.add_post(f"{c}/chats/{{chat_id}}/messages/{{message_id}}/reply", self._ctl(self._c_reply))
        self._add_topic_routes(r, self._ctl, c)
        r.add_post(f"{c}/chats/{{chat_id}}/messages/{{message_id}}/tap", self._ctl(self._c_tap))
        r.add_post(f"{c}/chats/{{chat_id}}/tap", self._ctl(self._c_tap_newest))
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

    def _ctl(self, fn: _ControlHandler) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        """An aiohttp handler: JSON body in, JSON out, every failure as {"ok": false, "error"}."""

        async def handler(request: web.Request) -> web.StreamResponse:
            body = await _read_body(request)
            if isinstance(body, web.Response):
                return body
            try:
                result = await fn(request, body)
            except ControlError as exc:
                return web.json_response({"ok": False, "error": exc.message}, status=exc.status)
            except ApiError as exc:
                return web.json_response({"ok": False, "error": exc.description}, status=400)
            except (KeyError, TypeError, ValueError) as exc:
                return web.json_response(
                    {"ok": False, "error": f"bad request: {exc!r}"}, status=400
                )
            return web.json_response(result)

        return handler

    def _ctl_chat(self, request: web.Request) -> Chat:
        chat = self.chats.get(int(request.match_info["chat_id"]))
        if chat is None:
            raise ControlError(404, f"unknown chat {request.match_info['chat_id']}")
        return chat

    # ------------------------------------------------------------------ configuration

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
                raise ControlError(400, f"unknown limits: {sorted(unknown)}")
            self.limits = dataclasses.replace(self.limits, **changes)
        for bot in self.bots.values():
            bot.budget.clear()
        return await self._c_get_config(request, body)

    async def _c_get_config(self, request: web.Request, body: JSON) -> Any:
        return {"enforce_limits": self.enforce_limits, "limits": dataclasses.asdict(self.limits)}

    async def _c_bots(self, request: web.Request, body: JSON) -> Any:
        token = str(body["token"])
        if not TOKEN_RE.match(token):
            raise ControlError(400, "malformed token")
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
        chat = self._add_chat(
            int(body["id"]),
            str(body["type"]),
            body.get("title"),
            members,
            is_forum=bool(body.get("is_forum", False)),
        )
        return chat.api

    async def _c_get_chat(self, request: web.Request, body: JSON) -> Any:
        chat = self._ctl_chat(request)
        return {
            **chat.api,
            "members": sorted(chat.members),
            "bot_status": {str(k): v for k, v in chat.bot_status.items()},
            "migrated_to": chat.migrated_to,
            "migrated_from": chat.migrated_from,
            "topics": [{**t.to_api(), "closed": t.closed} for t in chat.topics.values()],
        }

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
            await _answered(query, wait)
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
            await _answered(query, max(0.5, deadline - time.monotonic()))
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
            await _answered(query, wait)
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
                "message_thread_id": m.thread_id,
                "reply_to_message_id": m.reply_to,
                **m.extra,
            }
            for m in chat.messages.values()
        ]

    # ------------------------------------------------------------------ membership and updates

    def _member_update(
        self, chat: Chat, bot: Bot, by_user_id: int | None, old: str, new: str
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
                "new_chat_member": _member(bot, new),
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
            raise ControlError(400, "only a non-migrated group can be migrated")
        by = body.get("by_user_id")
        return {"new_chat_id": self._migrate(chat, int(by) if by is not None else None)}

    async def _c_updates(self, request: web.Request, body: JSON) -> Any:
        update = body["update"]
        if not isinstance(update, dict) or not update:
            raise ControlError(400, "update must be a non-empty object")
        update = {k: v for k, v in update.items() if k != "update_id"}
        cq = update.get("callback_query")
        if isinstance(cq, dict) and "id" in cq and cq["id"] not in self.callbacks:
            self._adopt_callback_query(cq, body.get("bot_id"))
        bot_id = body.get("bot_id")
        ids = self._broadcast(update, int(bot_id) if bot_id is not None else None)
        return {"update_id": ids[0] if ids else None, "update_ids": ids}

    def _adopt_callback_query(self, cq: JSON, bot_id: Any) -> None:
        """Record an injected callback query so the bot can answer it."""
        msg = cq.get("message") or {}
        if bot_id is None and isinstance(msg.get("from"), dict):
            bot_id = msg["from"].get("id")
        if bot_id is None and len(self.bots) == 1:
            bot_id = next(iter(self.bots))
        self.callbacks[str(cq["id"])] = CallbackQuery(
            id=str(cq["id"]),
            bot_id=int(bot_id or 0),
            from_id=int((cq.get("from") or {}).get("id", 0)),
            chat_id=int((msg.get("chat") or {}).get("id", 0)),
            message_id=int(msg.get("message_id", 0)),
            data=str(cq.get("data", "")),
            created=time.monotonic(),
        )

    # ------------------------------------------------------------------ observation

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
            "long_polls_waiting": self.long_polls_waiting,
            "sends_by_chat": {str(k): v for k, v in self.sends_by_chat.items() if v},
            "pending_updates": pending,
            "callback_queries": len(self.callbacks),
            "callback_answers": sum(1 for q in self.callbacks.values() if q.answered),
        }

    async def _c_callback_answer(self, request: web.Request, body: JSON) -> Any:
        qid = request.match_info["query_id"]
        query = self.callbacks.get(qid)
        if query is None:
            raise ControlError(404, f"unknown callback query {qid}")
        wait = float(request.query.get("wait", "0") or 0)
        if wait > 0 and not query.answered:
            await _answered(query, wait)
        return {
            "callback_query_id": qid,
            "answered": query.answered,
            "data": query.data,
            "from_id": query.from_id,
            "chat_id": query.chat_id,
            "message_id": query.message_id,
            "answer": query.answer_json(),
        }

    async def _c_webhook(self, request: web.Request, body: JSON) -> Any:
        wanted = request.query.get("bot_id")
        out: JSON = {}
        for bot in self.bots.values():
            if wanted and str(bot.id) != wanted:
                continue
            out[str(bot.id)] = bot.webhook_info()
        return out

    # ------------------------------------------------------------------ faults

    async def _c_add_fault(self, request: web.Request, body: JSON) -> Any:
        kind = str(body["kind"])
        if kind not in FAULT_KINDS:
            raise ControlError(400, f"unknown fault kind {kind!r}")
        default_method = "answercallbackquery" if kind == "callback_too_old" else "*"
        chat_id = body.get("chat_id")
        rule = FaultRule(
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
