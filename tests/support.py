"""What tests share besides fixtures: test identities and keys, the Quorum harness, waits."""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import hashlib
import inspect
import itertools
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the app's modules load in seconds: unit tests must not pay for them
    import aiohttp
    import asyncpg
    from aiogram.types import InlineKeyboardMarkup
    from aiohttp import web

    from bot.policy import Policy
    from bot.settings import Settings
    from quorum.app import Quorum
    from sandbox.emulator import EmulatorClient
    from storage.alerts import AlertRecord

ROOT = Path(__file__).resolve().parent.parent
BOT_TOKEN = "123456789:" + "A" * 35
BOT_ID = 123456789
TOKEN_SECRET = "test-token-secret-0123456789abcdef-xyz"
WEBHOOK_SECRET = "test_webhook_secret"
API_KEY = "test-key-platform"
OTHER_API_KEY = "test-key-data"
CHAT = -1001000000200
OTHER_CHAT = -1001000000300
ALICE, BOB, CAROL, DAVE = 1001, 1002, 1003, 1004
ERIN = 2001

POLICY: dict[str, Any] = {
    "timezone": "UTC",
    "teams": {
        "platform": {
            "chat_ids": [CHAT],
            "approvers": [
                {"telegram_id": ALICE, "name": "alice", "roles": ["sre"]},
                {"telegram_id": BOB, "name": "bob", "roles": ["sre", "lead"]},
                {"telegram_id": DAVE, "name": "dave", "roles": ["dba"]},
            ],
            "api_keys": [
                {
                    "name": "ci",
                    "sha256": "c1a8fe5fe7a9a4ac2b4ae16c1f3d4c2e0c5d27f9c0c4b0e6b8b31b6d3b2e4f00",
                }
            ],
            # check-config refuses a prefix without a path; the callback test adds its port's.
            "callback_url_prefixes": ["http://127.0.0.1:*/"],
        },
        "data": {
            "chat_ids": [OTHER_CHAT],
            "approvers": [{"telegram_id": ERIN, "name": "erin"}],
            "api_keys": [{"name": "ci", "sha256": ""}],
        },
    },
}


def policy_data() -> dict[str, Any]:
    """The test policy with the real hashes of the test API keys filled in."""
    data = copy.deepcopy(POLICY)
    data["teams"]["platform"]["api_keys"][0]["sha256"] = hashlib.sha256(
        API_KEY.encode()
    ).hexdigest()
    data["teams"]["data"]["api_keys"][0]["sha256"] = hashlib.sha256(
        OTHER_API_KEY.encode()
    ).hexdigest()
    return data


def _toml_value(value: Any) -> str:
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + " }"
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)  # a TOML basic string: the same escapes for what we write
    return str(value)


def policy_toml(data: dict[str, Any], prefix: str = "") -> str:
    """`data` (a policy as policy_data gives it) as a policy file for a `quorum` process."""
    tables = {k: v for k, v in data.items() if isinstance(v, dict)}
    lines = [f"[{prefix}]"] if prefix and len(tables) < len(data) else []
    lines += [f"{k} = {_toml_value(v)}" for k, v in data.items() if k not in tables]
    for key, table in tables.items():
        lines.append(policy_toml(table, f"{prefix}.{key}" if prefix else key))
    return "\n".join(lines) + "\n"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def worker_index() -> int:
    """Which pytest-xdist worker runs this process (gw0 → 0; 0 without xdist)."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    return int(worker.removeprefix("gw") or 0)


def redis_db_for_worker(url: str, index: int | None = None) -> str:
    """`url` with its database number moved up by the worker's index: workers flush their
    database before every test, so each needs its own."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    base = int(parts.path.strip("/") or 0)
    db = base + (worker_index() if index is None else index)
    if db > 15:
        raise RuntimeError(f"{url}: no Redis database {db} for this worker (16 by default)")
    return urlunsplit(parts._replace(path=f"/{db}"))


def in_ci() -> bool:
    """CI must run every test for real: a missing service there is a failure, not a skip."""
    return os.environ.get("CI", "").lower() in {"true", "1", "yes"}


# ---------------------------------------------------------------- Redis


@contextmanager
def redis_server() -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A private redis-server from PATH on a free port, for the block: (its URL, the process).

    For faults that would disturb anyone else sharing a Redis (CLIENT PAUSE, stopping it).
    """
    exe = shutil.which("redis-server")
    if exe is None:
        raise RuntimeError("no redis-server on PATH")
    port = free_port()
    proc = subprocess.Popen(
        [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while not reachable("127.0.0.1", port):
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError(f"redis-server on port {port} did not start within 10 s")
            time.sleep(0.05)  # a poll with a deadline: the server process is starting
        yield f"redis://127.0.0.1:{port}/0", proc
    finally:
        proc.terminate()
        proc.wait(5)


# ---------------------------------------------------------------- PostgreSQL


def with_db(url: str, name: str) -> str:
    """`url` pointing at database `name` on the same server."""
    from sqlalchemy.engine import make_url

    return make_url(url).set(database=name).render_as_string(hide_password=False)


async def admin_sql(server_url: str, sql: str) -> None:
    """One statement on its own connection (CREATE/DROP DATABASE cannot run in a transaction)."""
    import asyncpg

    from storage.db import to_sync_dsn

    conn = await asyncpg.connect(to_sync_dsn(server_url))
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


class DatabaseClones:
    """Per-test databases cloned from a migrated template: the next one is cloned while the
    current test runs, and a used one is dropped behind it, so neither wait is a test's (a
    clone and a drop cost 0.2 to 1.5 s each on a busy machine; the suite is mostly waiting)."""

    def __init__(self, server_url: str, template: str) -> None:
        self._server_url = server_url
        self._template = template
        self._names = (f"quorum_t_{os.getpid()}_{n}" for n in itertools.count())
        self._next: asyncio.Task[str] | None = None
        self._behind: set[asyncio.Task[None]] = set()

    async def _clone(self) -> str:
        name = next(self._names)
        await admin_sql(self._server_url, f'CREATE DATABASE "{name}" TEMPLATE "{self._template}"')
        return name

    async def take(self) -> str:
        """A fresh database's URL (the one cloned ahead, or a new clone)."""
        ahead, self._next = self._next, None
        name = await (ahead if ahead is not None else self._clone())
        self._next = asyncio.create_task(self._clone())
        return with_db(self._server_url, name)

    def give_back(self, url: str) -> None:
        """Drop a used database in the background."""
        from sqlalchemy.engine import make_url

        name = make_url(url).database
        drop = asyncio.create_task(
            admin_sql(self._server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        )
        self._behind.add(drop)
        drop.add_done_callback(self._behind.discard)

    async def close(self) -> None:
        """Wait for the drops; drop the database cloned ahead, never used."""
        if self._next is not None:
            self.give_back(with_db(self._server_url, await self._next))
            self._next = None
        await asyncio.gather(*self._behind)


def metric(h: Harness, name: str) -> float | None:
    """A sample of this app's Prometheus registry, as a scrape would read it."""
    return h.app.runtime.metrics.registry.get_sample_value(name)


async def db_rows(h: Harness | str, query: str, *args: Any) -> list[asyncpg.Record]:
    """Rows of `query` on the app's database (or the one at a URL), beside the app's pool."""
    import asyncpg

    from storage.db import to_sync_dsn

    url = h if isinstance(h, str) else h.settings.database_url
    conn = await asyncpg.connect(to_sync_dsn(url))
    try:
        return list(await conn.fetch(query, *args))
    finally:
        await conn.close()


# ---------------------------------------------------------------- waiting


def _describe(predicate: Callable[..., Any]) -> str:
    code = getattr(predicate, "__code__", None)
    name = getattr(predicate, "__qualname__", repr(predicate))
    if code is None:
        return name
    return f"{name} ({Path(code.co_filename).name}:{code.co_firstlineno})"


async def wait_until(
    predicate: Callable[[], Any],
    timeout: float = 10.0,
    *,
    what: str | None = None,
    interval: float = 0.05,
) -> Any:
    """Poll `predicate` (sync or async) until it returns something truthy, and return that.

    The deadline bounds the whole wait, a predicate call stuck on I/O included; missing it
    raises AssertionError naming what was awaited.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    label = what or _describe(predicate)
    while True:
        scope = asyncio.timeout_at(deadline)
        try:
            async with scope:
                value = predicate()
                if inspect.isawaitable(value):
                    value = await value
        except TimeoutError:
            if not scope.expired():
                raise  # the predicate's own timeout, not ours
            raise AssertionError(
                f"condition not met in time ({timeout} s): {label} was still running"
            ) from None
        if value:
            return value
        left = deadline - loop.time()
        if left <= 0:
            raise AssertionError(f"condition not met in time ({timeout} s): {label}")
        await asyncio.sleep(min(interval, left))


# ---------------------------------------------------------------- Quorum


@dataclass
class Harness:
    """One running Quorum process, the emulator it talks to, and an HTTP client for its API."""

    app: Quorum
    url: str
    emu: EmulatorClient
    http: aiohttp.ClientSession
    settings: Settings
    policy: Policy

    async def api(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        key: str | None = API_KEY,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any]:
        hdrs = dict(headers or {})
        if key is not None:
            hdrs["Authorization"] = f"Bearer {key}"
        async with self.http.request(method, self.url + path, json=body, headers=hdrs) as resp:
            try:
                data = await resp.json(content_type=None)
            except ValueError:
                data = await resp.text()
            return resp.status, data

    async def wait_for(self, predicate: Callable[[], Awaitable[Any]], timeout: float = 10.0) -> Any:
        """Poll an async predicate until it returns something truthy (see wait_until)."""
        return await wait_until(predicate, timeout)

    async def bot_messages(self, chat_id: int = CHAT) -> list[dict[str, Any]]:
        return [m for m in await self.emu.messages(chat_id) if m["from_id"] == BOT_ID]


QuorumFactory = Callable[..., Awaitable[Harness]]


async def populate_emulator(emu: EmulatorClient) -> None:
    """The test world on the emulator: the bot, the five people, the two teams' chats."""
    await emu.add_bot(BOT_TOKEN, username="quorum_test_bot", first_name="Quorum")
    for uid, name in (
        (ALICE, "alice"),
        (BOB, "bob"),
        (CAROL, "carol"),
        (DAVE, "dave"),
        (ERIN, "erin"),
    ):
        await emu.add_user(uid, name.title(), username=name)
    await emu.add_chat(CHAT, "supergroup", title="platform", members=[ALICE, BOB, CAROL, DAVE])
    await emu.add_chat(OTHER_CHAT, "supergroup", title="data", members=[ERIN])


# ---------------------------------------------------------------- `quorum run` processes

QUORUM_COMMAND = Path(sys.executable).parent / "quorum"


@dataclass
class QuorumProcess:
    """A `quorum run` process: its API URL, and its output (kept in a file)."""

    proc: asyncio.subprocess.Process
    url: str
    log: Path

    async def kill(self) -> None:
        """SIGKILL: no shutdown code runs, as when the machine or the OOM killer stops it."""
        self.proc.kill()
        await self.proc.wait()


@asynccontextmanager
async def quorum_process(cwd: Path, **values: Any) -> AsyncIterator[QuorumProcess]:
    """`quorum run` in webhook mode with these QUORUM_ settings (on a free port), ready
    (/readyz 200: storage reached, webhook set) in the block; stopped after it."""
    port = free_port()
    settings = {
        "telegram_token": BOT_TOKEN,
        "telegram_mode": "webhook",
        "webhook_url": f"http://127.0.0.1:{port}/telegram/webhook",
        "webhook_secret": WEBHOOK_SECRET,
        "token_secret": TOKEN_SECRET,
        "http_port": port,
        **values,
    }
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUORUM_")}
    env.update({f"QUORUM_{k.upper()}": str(v) for k, v in settings.items()})
    log = cwd / f"quorum-{port}.log"
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            str(QUORUM_COMMAND), "run", cwd=cwd, env=env, stdout=out, stderr=out
        )
    running = QuorumProcess(proc, f"http://127.0.0.1:{port}", log)
    try:
        await wait_until(lambda: _ready(running), 60, what=f"quorum run ready ({log})")
        yield running
    finally:
        if proc.returncode is None:
            proc.terminate()
            async with asyncio.timeout(15):
                await proc.wait()


async def _ready(running: QuorumProcess) -> bool:
    import aiohttp

    if running.proc.returncode is not None:
        raise AssertionError(f"quorum run exited: {running.log.read_text()[-2000:]}")
    try:
        async with aiohttp.ClientSession() as http, http.get(running.url + "/readyz") as resp:
            return resp.status == 200
    except aiohttp.ClientError:
        return False


# ---------------------------------------------------------------- Telegram updates

WEBHOOK = "/telegram/webhook"


async def post_update(h: Harness, update: dict[str, Any] | bytes) -> tuple[int, Any]:
    """Deliver one update to the webhook as Telegram does (bytes are sent as they are)."""
    headers = {"X-Telegram-Bot-Api-Secret-Token": WEBHOOK_SECRET}
    if isinstance(update, bytes):
        headers["Content-Type"] = "application/json"
        request = h.http.post(h.url + WEBHOOK, data=update, headers=headers)
    else:
        request = h.http.post(h.url + WEBHOOK, json=update, headers=headers)
    async with request as resp:
        return resp.status, await resp.json(content_type=None)


def tap_update(
    update_id: int, msg: dict[str, Any], user: int, data: str, chat: int = CHAT
) -> dict[str, Any]:
    """A callback_query update: `user` tapped a button carrying `data` under message `msg`."""
    return {
        "update_id": update_id,
        "callback_query": {
            "id": f"cq-{update_id}",
            "from": {"id": user, "is_bot": False, "first_name": f"user{user}"},
            "message": {
                "message_id": msg["message_id"],
                "date": 0,
                "chat": {"id": chat, "type": "supergroup", "title": "platform"},
            },
            "chat_instance": "1",
            "data": data,
        },
    }


def button_data(msg: dict[str, Any], text: str) -> str:
    """The callback_data of the button labelled `text` on message `msg`."""
    for row in msg["reply_markup"]["inline_keyboard"]:
        for button in row:
            if button["text"] == text:
                return str(button["callback_data"])
    raise AssertionError(f"no button {text!r} on message {msg['message_id']}")


# ---------------------------------------------------------------- alerts

AM_PATH = "/api/v1/alerts/alertmanager"


def am_alert(
    name: str = "DiskFull",
    *,
    status: str = "firing",
    fingerprint: str | None = "a1b2c3d4e5f60718",
    starts_at: str = "2026-01-01T10:00:00.000Z",
    ends_at: str = "0001-01-01T00:00:00Z",
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
) -> dict[str, Any]:
    """One alert as Alertmanager's webhook sends it."""
    alert: dict[str, Any] = {
        "status": status,
        "labels": labels or {"alertname": name, "severity": "critical", "instance": "db-1:9100"},
        "annotations": annotations
        if annotations is not None
        else {"summary": "Disk almost full", "description": "/var is 95% used"},
        "startsAt": starts_at,
        "endsAt": ends_at,
        "generatorURL": "http://prometheus:9090/graph?g0.expr=up",
    }
    if fingerprint is not None:
        alert["fingerprint"] = fingerprint
    return alert


def am_body(
    *alerts: dict[str, Any], external_url: str = "http://am-0:9093", truncated: int = 0
) -> dict[str, Any]:
    """An Alertmanager webhook body (version 4) carrying `alerts`."""
    status = "firing" if any(a["status"] == "firing" for a in alerts) else "resolved"
    return {
        "receiver": "quorum",
        "status": status,
        "alerts": list(alerts),
        "groupLabels": {"alertname": alerts[0]["labels"].get("alertname", "")},
        "commonLabels": {},
        "commonAnnotations": {},
        "externalURL": external_url,
        "version": "4",
        "groupKey": '{}:{alertname="DiskFull"}',
        "truncatedAlerts": truncated,
    }


def cards(msgs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The alert cards among a chat's messages (an alert's own, or its group's)."""
    return [m for m in msgs if "Fingerprint:" in str(m["text"]) or "\nGroup: " in str(m["text"])]


def digests(msgs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The storm digests among a chat's messages."""
    return [m for m in msgs if str(m["text"]).startswith("🌪")]


async def wait_cards(
    h: Harness, n: int, chat: int = CHAT, timeout: float = 10.0
) -> list[dict[str, Any]]:
    async def ready() -> list[dict[str, Any]] | None:
        found = cards(await h.bot_messages(chat))
        return found if len(found) >= n else None

    result: list[dict[str, Any]] = await wait_until(ready, timeout, what=f"{n} alert cards")
    return result


async def wait_text(h: Harness, needle: str, chat: int = CHAT, timeout: float = 10) -> Any:
    async def ready() -> dict[str, Any] | None:
        for m in cards(await h.bot_messages(chat)):
            if needle in str(m["text"]):
                return m
        return None

    return await wait_until(ready, timeout, what=f"an alert card saying {needle!r}")


@asynccontextmanager
async def hook_server(
    route: Callable[[web.Request], Awaitable[web.StreamResponse]],
) -> AsyncIterator[str]:
    """A local HTTP server answering POST /hook with `route`; yields its base URL."""
    from aiohttp import web

    app = web.Application()
    app.router.add_post("/hook", route)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


# ---------------------------------------------------------------- records

ALERT_SEEN = datetime(2026, 1, 1, 9, 21, tzinfo=UTC)


def alert_record(**over: Any) -> AlertRecord:
    """An alert as storage returns it (firing, first seen at ALERT_SEEN), for rendering tests."""
    from storage.alerts import AlertRecord

    base = AlertRecord(
        id=1,
        team_id=1,
        fingerprint="fp1",
        occurrence=1,
        status="firing",
        source="alertmanager",
        title="DiskFull",
        severity="critical",
        labels={"alertname": "DiskFull"},
        annotations={"summary": "disk 95% full"},
        url=None,
        incident_id=None,
        starts_at=ALERT_SEEN - timedelta(minutes=6),
        ends_at=None,
        hit_count=1,
        first_seen_at=ALERT_SEEN,
        last_seen_at=ALERT_SEEN + timedelta(minutes=19),
        resolved_at=None,
        resolved_by=None,
        silenced=False,
        last_card_edit_at=None,
        context={},
    )
    return dataclasses.replace(base, **over)


# ---------------------------------------------------------------- the emulator's own tests

EMU_TOKEN = "123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsawq"
EMU_GROUP = -1001
Emu = tuple[str, "EmulatorClient"]  # the emulator's base URL and a control client
Receiver = Callable[["web.Request"], Awaitable["web.StreamResponse"]]


class ShiftedClock:
    """time.monotonic plus an offset a test moves forward: budgets refill without waiting."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.monotonic() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds


def keyboard(*pairs: tuple[str, str]) -> InlineKeyboardMarkup:
    """One row of callback buttons, (text, callback_data) each."""
    from aiogram.types import InlineKeyboardButton, InlineKeyboardMarkup

    return InlineKeyboardMarkup(
        inline_keyboard=[[InlineKeyboardButton(text=t, callback_data=d) for t, d in pairs]]
    )


async def raw_call(url: str, path: str, **kwargs: Any) -> tuple[int, dict[str, Any]]:
    """POST `url + path` as is (no client library's checks); the status and JSON answer."""
    import aiohttp

    async with aiohttp.ClientSession() as session, session.post(url + path, **kwargs) as resp:
        return resp.status, await resp.json(content_type=None)
