"""The emulator's HTTP server: Bot API dispatch at ``/bot<token>/<method>`` and its lifecycle."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

import aiohttp
from aiohttp import web

from sandbox.emulator.botapi import Handler
from sandbox.emulator.control import Control
from sandbox.emulator.errors import JSON, ApiError, error_body
from sandbox.emulator.faults import FaultRule, chat_id_of, match_fault, simple_fault_error
from sandbox.emulator.limits import Limits
from sandbox.emulator.params import get_int
from sandbox.emulator.state import Bot, forbidden, migrated_error


class TelegramEmulator(Control):
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
    POST   /_emulator/chats                             {id, type, title?, members?[ids],
                                                        is_forum?}
    POST   /_emulator/chats/{chat_id}/send              {from_id, text, message_thread_id?,
                                                        reply_to_message_id?}
                                                        -> {update_id, message_id}
    POST   /_emulator/chats/{chat_id}/messages/{mid}/reply {from_id, text} -> the same
    POST   /_emulator/chats/{chat_id}/topics            {name, icon_color?, from_id?} -> topic
    POST   /_emulator/chats/{chat_id}/topics/{tid}/close (also /reopen, /delete) {from_id?}
    POST   /_emulator/chats/{chat_id}/messages/{mid}/tap {from_id, callback_data? | button_text?
                                                        | row+col?, wait?} -> {update_id,
                                                        callback_query_id, answer?}
    POST   /_emulator/chats/{chat_id}/tap               the same on the newest message with that
                                                        button (and text_contains?, if given),
                                                        waiting up to `wait` s for it to appear
                                                        -> {..., message_id}
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

    The class is assembled from one mixin per concern, each building on the one before:
    `World` (state.py), `Updates` (updates.py), `BotApi` (botapi.py), `Topics` (topics.py),
    `Users` (users.py), `Control` (control.py).
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
        flood_clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.enforce_limits = enforce_limits
        self.limits = limits or Limits()
        # The flood budgets' clock: tests move it forward instead of waiting for a refill.
        self.flood_clock = flood_clock
        # What a reset goes back to: tests that change limits must not leak into later ones.
        self._initial_limits = (self.enforce_limits, self.limits)
        self.webhook_retry_base = webhook_retry_base
        self.webhook_retry_cap = webhook_retry_cap
        self.webhook_timeout = webhook_timeout
        self.callback_update_max_age = callback_update_max_age
        self.message_update_max_age = message_update_max_age
        self.callback_answer_timeout = callback_answer_timeout
        self._call_log_size = call_log_size
        self._methods: dict[str, tuple[str, Handler]] = {
            **self._bot_api_methods(),
            **self._topic_methods(),
        }
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self._closing = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._init_state()

    # ------------------------------------------------------------------ lifecycle

    def make_app(self) -> web.Application:
        """Build the aiohttp application (Bot API plus control routes)."""
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/bot{token}/{method}", self._handle_api)
        self._add_control_routes(app.router)
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

    # ------------------------------------------------------------------ API dispatch

    async def _handle_api(self, request: web.Request) -> web.StreamResponse:
        token = request.match_info["token"]
        method_name = request.match_info["method"]
        try:
            params = await _read_params(request)
        except ApiError as exc:
            return _error_response(exc)
        try:
            bot = self._bot_for_token(token)
        except ApiError as exc:
            self._log(None, method_name, params, exc.status, exc.description, False)
            return _error_response(exc)
        status, body, delay = await self._call_full(
            bot, method_name, params, False, client_gone=lambda: _client_gone(request)
        )
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

    async def _call(
        self, bot: Bot, method_name: str, params: JSON, via_webhook_reply: bool
    ) -> tuple[int, JSON]:
        status, body, _ = await self._call_full(bot, method_name, params, via_webhook_reply)
        return status, body

    async def _call_full(
        self,
        bot: Bot,
        method_name: str,
        params: JSON,
        via_webhook_reply: bool,
        *,
        client_gone: Callable[[], bool] = lambda: False,
    ) -> tuple[int, JSON, float]:
        """Run one Bot API call; returns (status, body, delay). status 0 = drop connection."""
        entry = self._methods.get(method_name.lower())
        if entry is None:
            exc = ApiError(404, "Not Found")
            self._log(bot, method_name, params, 404, exc.description, via_webhook_reply)
            return 404, error_body(exc), 0.0
        name, handler = entry
        delay = 0.0
        try:
            fault = match_fault(self.faults, name, params) if self.faults else None
            if fault is not None:
                if fault.kind == "timeout":
                    delay = fault.delay
                elif fault.kind == "hold":
                    if await self._hold(fault.delay, client_gone):
                        self._log(bot, name, params, 0, "client gone while held", via_webhook_reply)
                        return 0, {}, 0.0
                elif fault.kind == "reset":
                    self._log(bot, name, params, 0, "connection reset", via_webhook_reply)
                    return 0, {}, 0.0
                else:
                    self._raise_fault(bot, fault, params)
            result = await handler(bot, params)
        except ApiError as exc:
            if exc.status == 429:
                self._count_too_many_requests(params)
            self._log(bot, name, params, exc.status, exc.description, via_webhook_reply)
            return exc.status, error_body(exc), delay
        self._log(bot, name, params, 200, None, via_webhook_reply)
        return 200, {"ok": True, "result": result}, delay

    async def _hold(self, seconds: float, client_gone: Callable[[], bool]) -> bool:
        """Hold a call up to `seconds` (less if the emulator stops); True if its client went
        away meanwhile. Polled: aiohttp does not cancel a handler whose client disconnects."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while not client_gone() and not self._closing.is_set() and loop.time() < deadline:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.05):
                    await self._closing.wait()
        return client_gone()

    def _raise_fault(self, bot: Bot, fault: FaultRule, params: JSON) -> None:
        """Fail the call as the fault says, with the state change it stands for (kick,
        migration)."""
        if fault.kind not in {"kicked", "migrate"}:
            raise simple_fault_error(fault)
        chat_id = chat_id_of(params)
        chat = self.chats.get(chat_id) if chat_id is not None else None
        if fault.kind == "kicked":
            if chat is not None:
                chat.bot_status[bot.id] = "kicked"
            raise forbidden(chat, "kicked")
        if chat is not None and chat.migrated_to is None:
            new_id = self._migrate(chat, None)
        elif chat is not None and chat.migrated_to is not None:
            new_id = chat.migrated_to
        else:
            new_id = self._new_supergroup_id(chat_id or -1)
        raise migrated_error(new_id)

    def _count_too_many_requests(self, params: JSON) -> None:
        self.too_many_requests_total += 1
        cid = params.get("chat_id")
        with contextlib.suppress(ApiError):
            if cid is not None:
                self.too_many_requests_by_chat[get_int(params, "chat_id")] += 1

    def _log(
        self,
        bot: Bot | None,
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


async def _read_params(request: web.Request) -> JSON:
    """Query string plus a JSON, urlencoded or multipart body, as the Bot API accepts."""
    params: JSON = dict(request.query)
    if request.method in {"GET", "HEAD"} or not request.body_exists:
        return params
    ctype = request.content_type
    if ctype == "application/json":
        try:
            data = await request.json()
        except ValueError:
            raise ApiError(400, "Bad Request: can't parse JSON request body") from None
        if not isinstance(data, dict):
            raise ApiError(400, "Bad Request: JSON request body must be an object")
        params.update(data)
    elif ctype in {"application/x-www-form-urlencoded", "multipart/form-data"}:
        form = await request.post()
        for key, value in form.items():
            if isinstance(value, str):
                params[key] = value
    return params


def _error_response(exc: ApiError) -> web.Response:
    return web.json_response(error_body(exc), status=exc.status)


def _client_gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()
