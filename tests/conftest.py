"""Shared fixtures: real PostgreSQL (a fresh database per test), real Redis, the emulator."""

from __future__ import annotations

import asyncio
import fcntl
import os
import shutil
import subprocess
from collections.abc import AsyncIterator, Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest

from tests.support import (
    BOT_TOKEN,
    ROOT,
    TOKEN_SECRET,
    WEBHOOK_SECRET,
    DatabaseClones,
    Harness,
    QuorumFactory,
    admin_sql,
    free_port,
    in_ci,
    policy_data,
    populate_emulator,
    reachable,
    redis_db_for_worker,
    redis_server,
    with_db,
)

if TYPE_CHECKING:
    from sandbox.emulator import EmulatorClient

# The app's modules (aiogram above all) take seconds to import: they are imported by the
# fixtures that need them, so `pytest tests/unit` never loads them.


def _new_event_loop() -> asyncio.AbstractEventLoop:
    from quorum.app import new_event_loop

    return new_event_loop()


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> dict[str, Callable[[], asyncio.AbstractEventLoop]]:
    """Tests run on the event loop `quorum run` serves on (uvloop where installed)."""
    return {"loop": _new_event_loop}


# ---------------------------------------------------------------- PostgreSQL


@pytest.fixture(scope="session")
def pg_server_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    """CI and dev machines: the local server on 5432; elsewhere an embedded one."""
    url = os.environ.get("QUORUM_TEST_DATABASE_URL")
    if url:
        return url
    if reachable("127.0.0.1", 5432):
        return "postgresql://postgres@127.0.0.1:5432/postgres"
    from quorum.embedded import start_embedded_postgres

    data_dir = ROOT / ".quorum" / "test-pg"
    data_dir.mkdir(parents=True, exist_ok=True)
    # pytest-xdist workers share the one server: the first starts it, the others reuse it.
    with (data_dir.parent / "test-pg.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return start_embedded_postgres(data_dir, database="postgres")


# Held while a template is migrated: workers migrating at once would race on what a migration
# creates for the whole server (the quorum_app role).
_MIGRATION_LOCK = 0x51_0A_7E


@pytest.fixture(scope="session")
async def pg_template(pg_server_url: str) -> AsyncIterator[str]:
    """A database migrated once per process (per pytest-xdist worker); every test gets a
    copy of it."""
    import asyncpg

    from quorum.app import run_migrations
    from storage.db import to_sync_dsn

    name = f"quorum_tmpl_{os.getpid()}"
    admin = await asyncpg.connect(to_sync_dsn(pg_server_url))
    try:
        await admin.execute("SELECT pg_advisory_lock($1)", _MIGRATION_LOCK)
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
        await admin.execute(f'CREATE DATABASE "{name}"')
        await asyncio.to_thread(run_migrations, with_db(pg_server_url, name))
        await admin.execute("SELECT pg_advisory_unlock($1)", _MIGRATION_LOCK)
    finally:
        await admin.close()
    yield name
    await admin_sql(pg_server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
async def test_databases(pg_server_url: str, pg_template: str) -> AsyncIterator[DatabaseClones]:
    databases = DatabaseClones(pg_server_url, pg_template)
    yield databases
    await databases.close()


@pytest.fixture
async def db_url(test_databases: DatabaseClones) -> AsyncIterator[str]:
    """A fresh database of this test's own, a copy of the migrated template."""
    url = await test_databases.take()
    yield url
    test_databases.give_back(url)


# ---------------------------------------------------------------- Redis


@pytest.fixture(scope="session")
def redis_server_url() -> Iterator[str]:
    """The local Redis on 6379; else a redis-server from PATH; else '' (in-process Redis).
    Each pytest-xdist worker takes the next database number (gw1: the given one + 1).

    Under CI the in-process fallback is refused: CI must test against a real Redis.
    """
    url = os.environ.get("QUORUM_TEST_REDIS_URL")
    if url:
        yield redis_db_for_worker(url)
        return
    if reachable("127.0.0.1", 6379):
        yield redis_db_for_worker("redis://127.0.0.1:6379/9")
        return
    exe = shutil.which("redis-server")
    if exe is None:
        if in_ci():
            pytest.fail(
                "CI=true but no Redis: none on 127.0.0.1:6379, no redis-server on PATH and "
                "QUORUM_TEST_REDIS_URL unset; CI must not fall back to the in-process Redis"
            )
        yield ""
        return
    with redis_server() as (url, _process):
        yield url


@pytest.fixture
def private_redis() -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A redis-server of this test's own, for faults no one else sharing a Redis must feel."""
    if shutil.which("redis-server") is None:
        if in_ci():
            pytest.fail("CI must have redis-server on PATH (.ci/run starts it)")
        pytest.skip("redis-server not on PATH")
    with redis_server() as found:
        yield found


@pytest.fixture
async def redis_url(redis_server_url: str) -> str:
    from redis.asyncio import Redis

    if redis_server_url:
        client = Redis.from_url(redis_server_url)
        await client.flushdb()
        await client.aclose()
    return redis_server_url


# ---------------------------------------------------------------- Telegram emulator


@pytest.fixture(scope="session")
async def emulator_url() -> AsyncIterator[str]:
    """One emulator server for the session, enforcing Telegram's limits."""
    from sandbox.emulator import TelegramEmulator

    emulator = TelegramEmulator(enforce_limits=True, webhook_retry_base=0.2)
    url = await emulator.start("127.0.0.1", 0)
    yield url
    await emulator.stop()


@pytest.fixture
async def emu(emulator_url: str) -> AsyncIterator[EmulatorClient]:
    """A control-API client over HTTP, on an emulator reset for this test."""
    from sandbox.emulator import EmulatorClient

    async with EmulatorClient(emulator_url) as client:
        await client.reset()
        yield client


# ---------------------------------------------------------------- Quorum


@pytest.fixture
async def make_quorum(
    db_url: str, redis_url: str, emu: EmulatorClient
) -> AsyncIterator[QuorumFactory]:
    """Start Quorum processes against the emulator, PostgreSQL and Redis of this test."""
    import aiohttp

    from bot.policy import parse_policy
    from bot.settings import load_settings
    from quorum.app import Quorum

    started: list[Harness] = []

    async def factory(
        policy: dict[str, Any] | None = None, *, mode: str = "webhook", **overrides: Any
    ) -> Harness:
        if not started:
            await populate_emulator(emu)
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
            # pytest-xdist workers run tests side by side on one PostgreSQL (100 connections
            # by default): a test's processes keep fewer than a deployment's 20 + 10.
            "db_pool_size": 8,
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
