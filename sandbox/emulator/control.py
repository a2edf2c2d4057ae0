"""The ``/_emulator/`` control API: set up the world, inject updates, read calls, add faults."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from sandbox.emulator.errors import JSON, ApiError, ControlError
from sandbox.emulator.faults import FAULT_KINDS, FaultRule
from sandbox.emulator.limits import Limits
from sandbox.emulator.state import CallbackQuery
from sandbox.emulator.updates import TOKEN_RE
from sandbox.emulator.users import Users, answered

_ControlHandler = Callable[[web.Request, JSON], Awaitable[Any]]


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


class Control(Users):
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
        r.add_post(f"{c}/chats/{{chat_id}}/promote", self._ctl(self._c_promote))
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
            "pinned": list(chat.pinned),
            "topics": [{**t.to_api(), "closed": t.closed} for t in chat.topics.values()],
        }

    # ------------------------------------------------------------------ injected updates

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
            await answered(query, wait)
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
