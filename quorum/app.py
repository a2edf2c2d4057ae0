"""The composition root: builds the runtime, the aiogram dispatcher and the aiohttp app."""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import time
from collections.abc import Awaitable, Callable, Coroutine
from contextlib import suppress
from pathlib import Path
from typing import Any, TypeVar

from aiogram import Bot, Dispatcher
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

import handlers.alerts
import handlers.approvals
import handlers.audit
import handlers.chats
import handlers.commands
import handlers.health
import handlers.incident_chat
import handlers.incidents
import handlers.policy
import handlers.questions
import handlers.taps
import handlers.web
import handlers.webhook
from bot import alerts, approvals, cards, outbox
from bot.audit.sealer import run_sealer
from bot.inbound import Inbound, prune_updates
from bot.metrics import Metrics
from bot.policy import Policy
from bot.runtime import RUNTIME, Runtime
from bot.settings import Settings
from bot.wakeups import FALLBACK_SECONDS
from handlers.api import error_middleware
from quorum.embedded import describe_mode, in_process_redis, start_embedded_postgres
from storage import keys, wakeups
from storage.db import make_engine, make_sessionmaker, transaction
from storage.leases import give_back_polling_lease, take_polling_lease
from storage.teams import sync_teams

log = logging.getLogger(__name__)

ALLOWED_UPDATES = ["message", "callback_query", "my_chat_member"]

Worker = Callable[[Runtime], Awaitable[None]]
PRUNE_EVERY_SECONDS = 3600.0
RETRY_AFTER_SECONDS = 5.0
T = TypeVar("T")


def _alembic_config(url: str = "") -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option(
        "script_location", str(Path(__file__).resolve().parent.parent / "migrations")
    )
    cfg.attributes["url"] = url
    cfg.attributes["configure_logging"] = False
    return cfg


def run_migrations(url: str) -> None:
    """alembic upgrade head; blocking (alembic's env runs its own event loop)."""
    from alembic import command

    command.upgrade(_alembic_config(url), "head")


def schema_head() -> str:
    """The newest migration's revision: the schema this code needs."""
    from alembic.script import ScriptDirectory

    return str(ScriptDirectory.from_config(_alembic_config()).get_current_head())


def team_chats(policy: Policy) -> dict[str, tuple[int, ...]]:
    """Each team's chats to keep in the database: its own, and its routes' chats that are no
    other team's (a route may post into another team's chat; that chat stays theirs)."""
    owned = {c for t in policy.teams.values() for c in t.chat_ids}
    return {
        name: tuple(c for c in t.all_chat_ids if c in t.chat_ids or c not in owned)
        for name, t in policy.teams.items()
    }


def make_bot(settings: Settings) -> Bot:
    session = AiohttpSession(api=TelegramAPIServer.from_base(settings.telegram_api_url))
    return Bot(settings.telegram_token.get_secret_value(), session=session)


def make_dispatcher() -> Dispatcher:
    """The Telegram side of one app: every handler module's router, the catch-all last.

    No handler keeps FSM state, so the FSM middleware (a storage lookup and context objects
    per update) is left out."""
    dp = Dispatcher(disable_fsm=True)
    dp.include_routers(
        handlers.questions.make_router(),
        handlers.approvals.make_router(),
        handlers.policy.make_router(),
        handlers.alerts.make_router(),
        handlers.incident_chat.make_router(),
        handlers.chats.make_router(),
        handlers.web.make_router(),
        handlers.commands.make_router(),
    )
    return dp


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop where it is installed (every platform but Windows), else asyncio's own loop.

    The vote path is mostly socket round trips (webhook, PostgreSQL, Redis): on uvloop a tap
    cost Quorum ~20% less CPU (bench.votes closed loop: 2.38 -> 1.87 ms, 359 -> 461 taps/s)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def run_loop(main: Coroutine[Any, Any, T]) -> T:
    """asyncio.run on the loop serving processes use (`quorum run`, the sandbox, benchmarks)."""
    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        return runner.run(main)


def settle_heap() -> None:
    """Once a serving process has started: leave its long-lived objects out of garbage
    collection. A full collection walks every tracked object (about 300,000 after start-up:
    modules, models, schemas), which stalled the event loop for 100-250 ms at a time; the
    taps' p99 at 100 taps/s went from ~250 ms to ~25 ms (bench.votes). Per process, not per
    Quorum: tests start many in one process, and frozen garbage would never be freed."""
    gc.collect()
    gc.freeze()


async def run_wakeups(rt: Runtime) -> None:
    """The process's LISTEN connection, which wakes the idle workers."""
    await rt.wakeups.run(rt.engine)


async def _bounded(what: str, step: Awaitable[object], seconds: float) -> None:
    started = time.monotonic()
    try:
        async with asyncio.timeout(seconds):
            await step
    except TimeoutError:
        log.warning("stopping %s took over %s s; moving on", what, seconds)
    except Exception as exc:
        log.warning("stopping %s failed (%s)", what, type(exc).__name__)
    else:
        if time.monotonic() - started > 2:
            log.warning("stopping %s took %.1f s", what, time.monotonic() - started)


class PollingTaken(Exception):
    """Another process already polls this bot against this database."""


def _bound_port(runner: web.AppRunner) -> int:
    for site in runner.sites:
        server = getattr(site, "_server", None)
        if server is not None and server.sockets:
            return int(server.sockets[0].getsockname()[1])
    raise RuntimeError("not serving")


class Quorum:
    """One Quorum process: HTTP API, webhook or polling, and its background workers."""

    def __init__(self, settings: Settings, policy: Policy) -> None:
        self.settings = settings
        self.policy = policy
        self.rt: Runtime | None = None
        self.dp = make_dispatcher()
        self.inbound: Inbound | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._runner: web.AppRunner | None = None
        self._lease: AsyncConnection | None = None
        self._metrics_runner: web.AppRunner | None = None

    @property
    def runtime(self) -> Runtime:
        assert self.rt is not None, "Quorum.start() first"
        return self.rt

    async def start(self, *, migrate: bool = True, serve: bool = True) -> None:
        s = self.settings
        db_url = s.database_url
        if not db_url:
            db_url = await asyncio.to_thread(start_embedded_postgres, s.data_dir)
        if migrate:
            await asyncio.to_thread(run_migrations, db_url)
        engine = make_engine(
            db_url,
            pool_size=s.db_pool_size,
            statement_timeout_ms=s.db_statement_timeout_ms,
            lock_timeout_ms=s.db_lock_timeout_ms,
        )
        if s.telegram_mode == "polling":
            await self._take_lease(engine)
        rt = Runtime(
            settings=s,
            policy=self.policy,
            engine=engine,
            sessions=make_sessionmaker(engine),
            redis=keys.connect(s.redis_url) if s.redis_url else in_process_redis(),
            bot=make_bot(s),
            metrics=Metrics(),
            mode=describe_mode(s.telegram_mode, s.database_url, s.redis_url),
        )
        self.rt = rt
        if not (s.database_url and s.redis_url):
            log.info(
                "running as one process: %s (data under %s); replicas need webhook mode with "
                "QUORUM_DATABASE_URL and QUORUM_REDIS_URL",
                rt.mode,
                s.data_dir,
            )
        async with transaction(rt.sessions) as session:
            rt.team_ids = await sync_teams(session, team_chats(self.policy))
        self.inbound = Inbound(
            rt, self.dp, [handlers.taps.press_vote_fast], [handlers.taps.count_vote_plainly]
        )
        with suppress(Exception):
            me = await rt.bot.get_me()
            rt.bot_id, rt.bot_username = me.id, me.username or ""
        self._start_workers()
        if serve:
            await self._serve_http()
        try:
            await self._setup_telegram(rt)
        except Exception as exc:
            # An unreachable Telegram must not crash-loop the bot: serve /readyz (503) and
            # keep trying setWebhook/deleteWebhook in the background.
            log.warning(
                "Telegram setup failed (%s); retrying in the background", type(exc).__name__
            )
            self._tasks.append(
                asyncio.create_task(self._retry_telegram_setup(rt), name="telegram_setup")
            )
        log.info("quorum started (%s mode, instance %s)", s.telegram_mode, rt.instance)

    def _start_workers(self) -> None:
        workers: list[Worker] = [
            run_wakeups,
            outbox.run_sender,
            approvals.run_maintenance,
            cards.run_cards,
            alerts.run_maintenance,
            run_sealer,
            self._retry_updates,
        ]
        if self.settings.telegram_mode == "polling":
            workers.append(self._poll)
        for worker in workers:
            self._tasks.append(asyncio.create_task(self._supervise(worker), name=worker.__name__))

    async def _serve_http(self) -> None:
        s = self.settings
        self._runner = web.AppRunner(self.make_web_app(), access_log=None, shutdown_timeout=5)
        await self._runner.setup()
        await web.TCPSite(self._runner, s.http_host, s.http_port).start()
        await self._serve_metrics()

    async def _take_lease(self, engine: AsyncEngine) -> None:
        """Polling is one reader per bot: a second process on this database is refused here,
        before it can steal updates from the first (Telegram would only say 409 Conflict)."""
        bot_id = int(self.settings.telegram_token.get_secret_value().split(":", 1)[0] or 0)
        try:
            self._lease = await take_polling_lease(engine, bot_id)
        except BaseException:
            await engine.dispose()
            raise
        if self._lease is None:
            await engine.dispose()
            raise PollingTaken(
                f"another process already polls bot {bot_id} against this database: "
                "stop it first, or run replicas in webhook mode"
            )

    async def _setup_telegram(self, rt: Runtime) -> None:
        s = self.settings
        if s.telegram_mode == "webhook":
            await rt.bot.set_webhook(
                s.webhook_url.rstrip("/"),
                secret_token=s.webhook_secret.get_secret_value(),
                allowed_updates=ALLOWED_UPDATES,
                max_connections=s.webhook_max_connections,
            )
        else:
            await rt.bot.delete_webhook()

    async def _retry_telegram_setup(self, rt: Runtime) -> None:
        delay = 1.0
        while True:
            await asyncio.sleep(delay)
            try:
                await self._setup_telegram(rt)
            except Exception as exc:
                delay = min(delay * 2, 60.0)
                log.warning("Telegram setup failed again (%s)", type(exc).__name__)
                continue
            log.info("Telegram setup done (%s mode)", self.settings.telegram_mode)
            if rt.bot_id == 0:
                with suppress(Exception):
                    me = await rt.bot.get_me()
                    rt.bot_id, rt.bot_username = me.id, me.username or ""
            return

    async def _serve_metrics(self) -> None:
        """With QUORUM_METRICS_PORT: /metrics and /readyz on a listener of their own, which
        the public one does not serve (see make_web_app)."""
        s = self.settings
        if s.metrics_port is None:
            return
        app = web.Application(middlewares=[error_middleware])
        app[RUNTIME] = self.runtime
        app.add_routes(handlers.health.router)
        self._metrics_runner = web.AppRunner(app, access_log=None, shutdown_timeout=5)
        await self._metrics_runner.setup()
        await web.TCPSite(self._metrics_runner, s.metrics_host, s.metrics_port).start()

    @property
    def port(self) -> int:
        """The bound HTTP port (useful with QUORUM_HTTP_PORT=0)."""
        assert self._runner is not None
        return _bound_port(self._runner)

    @property
    def metrics_port(self) -> int:
        """The bound port of the metrics listener (useful with QUORUM_METRICS_PORT=0)."""
        assert self._metrics_runner is not None, "QUORUM_METRICS_PORT is not set"
        return _bound_port(self._metrics_runner)

    def make_web_app(self) -> web.Application:
        app = web.Application(
            middlewares=[error_middleware], client_max_size=self.settings.max_body_bytes
        )
        app[RUNTIME] = self.runtime
        assert self.inbound is not None
        handlers.webhook.setup(app, self.inbound)
        own_listener = self.settings.metrics_port is not None
        app.add_routes(handlers.health.public_routes if own_listener else handlers.health.router)
        app.add_routes(handlers.approvals.routes)
        app.add_routes(handlers.policy.routes)
        app.add_routes(handlers.alerts.routes)
        app.add_routes(handlers.incidents.routes)
        app.add_routes(handlers.audit.routes)
        app.add_routes(handlers.web.routes)
        return app

    async def stop(self) -> None:
        """Stop serving, then the workers, then the pools; each step is bounded so that a
        stuck peer can never keep the process from exiting."""
        if self._runner is not None:
            await _bounded("http server", self._runner.cleanup(), 10)
            self._runner = None
        if self._metrics_runner is not None:
            await _bounded("metrics server", self._metrics_runner.cleanup(), 10)
            self._metrics_runner = None
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            _, pending = await asyncio.wait(self._tasks, timeout=10)
            for task in pending:
                log.warning("worker %s did not stop within 10 s", task.get_name())
        self._tasks.clear()
        if self.rt is not None:
            await _bounded("telegram session", self.rt.bot.session.close(), 5)
            await _bounded("redis", self.rt.redis.aclose(), 5)
        if self._lease is not None:
            await _bounded("polling lease", give_back_polling_lease(self._lease), 5)
            self._lease = None
        if self.rt is not None:
            await _bounded("database pool", self.rt.engine.dispose(), 10)

    async def _supervise(self, worker: Worker) -> None:
        """Keep a background worker alive across faults (a database restart, a bug)."""
        while True:
            try:
                await worker(self.runtime)
                return
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("worker %s crashed; restarting in 1 s", worker.__name__)
                await asyncio.sleep(1)

    async def _retry_updates(self, rt: Runtime) -> None:
        """Failed updates, RETRY_AFTER_SECONDS after one is stored (NOTIFY; whatever failed it
        often lasts a moment, and a retry at once would only fail again) or every
        FALLBACK_SECONDS; old handled updates pruned hourly."""
        assert self.inbound is not None
        pruned = time.monotonic()
        with rt.wakeups.watch(wakeups.UPDATES) as woken:
            while True:
                await self.inbound.retry_failed()
                if time.monotonic() - pruned > PRUNE_EVERY_SECONDS:
                    pruned = time.monotonic()
                    await prune_updates(rt)
                if await woken.sleep(FALLBACK_SECONDS):
                    await asyncio.sleep(RETRY_AFTER_SECONDS)

    async def _poll(self, rt: Runtime) -> None:
        """getUpdates; the offset moves past an update only once it is stored."""
        assert self.inbound is not None
        offset: int | None = None
        while True:
            updates = await rt.bot.get_updates(
                offset=offset, timeout=25, allowed_updates=ALLOWED_UPDATES, request_timeout=35
            )
            for upd in updates:
                raw = upd.model_dump(mode="json", exclude_none=True, by_alias=True)
                while True:
                    try:
                        await self.inbound.receive(raw, source="polling")
                        break
                    except Exception:
                        log.exception(
                            "storing update %s failed; retrying",
                            upd.update_id,
                            extra={"update_id": upd.update_id},
                        )
                        await asyncio.sleep(2)
                offset = upd.update_id + 1


async def serve(settings: Settings, policy: Policy, banner: str | None = None) -> None:
    """Run one Quorum until SIGINT or SIGTERM; print `banner` once it is up."""
    app = Quorum(settings, policy)
    await app.start()
    settle_heap()
    if banner:
        print(banner, flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await app.stop()
