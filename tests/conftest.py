"""Shared fixtures: real PostgreSQL (a fresh database per test), real Redis, the emulator."""

from __future__ import annotations

import asyncio
import itertools
import os
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from redis.asyncio import Redis

from bot.policy import Policy, parse_policy
from bot.settings import Settings, load_settings
from quorum.app import Quorum, new_event_loop, run_migrations
from quorum.embedded import start_embedded_postgres
from sandbox.emulator import EmulatorClient, TelegramEmulator
from storage.db import to_sync_dsn

ROOT = Path(__file__).resolve().parent.parent
BOT_TOKEN = "123456789:" + "A" * 35
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
    import copy
    import hashlib

    data = copy.deepcopy(POLICY)
    data["teams"]["platform"]["api_keys"][0]["sha256"] = hashlib.sha256(
        API_KEY.encode()
    ).hexdigest()
    data["teams"]["data"]["api_keys"][0]["sha256"] = hashlib.sha256(
        OTHER_API_KEY.encode()
    ).hexdigest()
    return data


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> dict[str, Callable[[], asyncio.AbstractEventLoop]]:
    """Tests run on the event loop `quorum run` serves on (uvloop where installed)."""
    return {"loop": new_event_loop}


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


# ---------------------------------------------------------------- PostgreSQL


@pytest.fixture(scope="session")
def pg_server_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    """CI and dev machines: the local server on 5432; elsewhere an embedded one."""
    url = os.environ.get("QUORUM_TEST_DATABASE_URL")
    if url:
        return url
    if _reachable("127.0.0.1", 5432):
        return "postgresql://postgres@127.0.0.1:5432/postgres"
    return start_embedded_postgres(ROOT / ".quorum" / "test-pg", database="postgres")


def _with_db(url: str, name: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).set(database=name).render_as_string(hide_password=False)


async def _admin(server_url: str, sql: str) -> None:
    conn = await asyncpg.connect(to_sync_dsn(server_url))
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@pytest.fixture(scope="session")
async def pg_template(pg_server_url: str) -> AsyncIterator[str]:
    """A database migrated once; every test gets a copy of it."""
    name = f"quorum_tmpl_{os.getpid()}"
    await _admin(pg_server_url, f'DROP DATABASE IF EXISTS "{name}"')
    await _admin(pg_server_url, f'CREATE DATABASE "{name}"')
    await asyncio.to_thread(run_migrations, _with_db(pg_server_url, name))
    yield name
    await _admin(pg_server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


_db_counter = itertools.count()


@pytest.fixture
async def db_url(pg_server_url: str, pg_template: str) -> AsyncIterator[str]:
    name = f"quorum_t_{os.getpid()}_{next(_db_counter)}"
    await _admin(pg_server_url, f'CREATE DATABASE "{name}" TEMPLATE "{pg_template}"')
    yield _with_db(pg_server_url, name)
    await _admin(pg_server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# ---------------------------------------------------------------- Redis


@pytest.fixture(scope="session")
def redis_server_url() -> Iterator[str]:
    """The local Redis on 6379; else a redis-server from PATH; else '' (in-process Redis)."""
    url = os.environ.get("QUORUM_TEST_REDIS_URL")
    if url:
        yield url
        return
    if _reachable("127.0.0.1", 6379):
        yield "redis://127.0.0.1:6379/9"
        return
    exe = shutil.which("redis-server")
    if exe is None:
        yield ""
        return
    port = free_port()
    proc = subprocess.Popen(
        [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while not _reachable("127.0.0.1", port) and time.monotonic() < deadline:
        time.sleep(0.05)
    yield f"redis://127.0.0.1:{port}/9"
    proc.terminate()
    proc.wait(5)


@pytest.fixture
async def redis_url(redis_server_url: str) -> str:
    if redis_server_url:
        client = Redis.from_url(redis_server_url)
        await client.flushdb()
        await client.aclose()
    return redis_server_url


# ---------------------------------------------------------------- Telegram emulator


@pytest.fixture(scope="session")
async def emulator_url() -> AsyncIterator[str]:
    """One emulator server for the session, enforcing Telegram's limits."""
    emulator = TelegramEmulator(enforce_limits=True, webhook_retry_base=0.2)
    url = await emulator.start("127.0.0.1", 0)
    yield url
    await emulator.stop()


@pytest.fixture
async def emu(emulator_url: str) -> AsyncIterator[EmulatorClient]:
    """A control-API client over HTTP, on an emulator reset for this test."""
    async with EmulatorClient(emulator_url) as client:
        await client.reset()
        yield client


# ---------------------------------------------------------------- Quorum


@dataclass
class Harness:
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
        """Poll an async predicate until it returns something truthy."""
        deadline = time.monotonic() + timeout
        while True:
            value = await predicate()
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError("condition not met in time")
            await asyncio.sleep(0.05)

    async def bot_messages(self, chat_id: int = CHAT) -> list[dict[str, Any]]:
        return [m for m in await self.emu.messages(chat_id) if m["from_id"] == 123456789]


QuorumFactory = Callable[..., Awaitable[Harness]]


@pytest.fixture
async def make_quorum(
    db_url: str, redis_url: str, emu: EmulatorClient
) -> AsyncIterator[QuorumFactory]:
    """Start Quorum processes against the emulator, PostgreSQL and Redis of this test."""
    started: list[Harness] = []

    async def factory(
        policy: dict[str, Any] | None = None, *, mode: str = "webhook", **overrides: Any
    ) -> Harness:
        if not started:
            await emu.add_bot(BOT_TOKEN, username="quorum_test_bot", first_name="Quorum")
            for uid, name in (
                (ALICE, "alice"),
                (BOB, "bob"),
                (CAROL, "carol"),
                (DAVE, "dave"),
                (ERIN, "erin"),
            ):
                await emu.add_user(uid, name.title(), username=name)
            await emu.add_chat(
                CHAT, "supergroup", title="platform", members=[ALICE, BOB, CAROL, DAVE]
            )
            await emu.add_chat(OTHER_CHAT, "supergroup", title="data", members=[ERIN])
        port = free_port()
        values: dict[str, Any] = {
            "telegram_token": BOT_TOKEN,
            "telegram_api_url": emu.base_url,
            "telegram_mode": mode,
            "webhook_url": f"http://127.0.0.1:{port}/telegram/webhook",
            "webhook_secret": WEBHOOK_SECRET,
            "token_secret": TOKEN_SECRET,
            "database_url": db_url,
            "redis_url": redis_url,
            "http_port": port,
            "policy_file": ROOT / "policy.toml",
            "alert_edit_interval_seconds": 0.5,
        }
        values.update(overrides)
        settings = load_settings(**values)
        pol = parse_policy(policy or policy_data())
        app = Quorum(settings, pol)
        await app.start(migrate=False)
        http = aiohttp.ClientSession()
        harness = Harness(app, f"http://127.0.0.1:{port}", emu, http, settings, pol)
        started.append(harness)
        return harness

    yield factory
    for h in started:
        await h.http.close()
        await h.app.stop()


@pytest.fixture
async def quorum(make_quorum: QuorumFactory) -> Harness:
    return await make_quorum()
