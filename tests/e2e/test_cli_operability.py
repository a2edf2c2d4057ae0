"""The `quorum` command as operators meet it: every configuration problem in one run, the
--online checks against real PostgreSQL, Redis and the Telegram emulator, and one line (exit
2) for a database or Redis it cannot use."""

from __future__ import annotations

import asyncio
import os
import re
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy.engine import make_url

from bot.settings import EXAMPLE_VALUES
from sandbox.emulator import EmulatorClient, TelegramEmulator
from storage.db import to_sync_dsn
from tests.support import free_port

QUORUM = Path(sys.executable).parent / "quorum"
TOKEN = "123456789:AAHfiqksKZ8WmR2zSjiQ7_v4TMAKdiHm9T0"
KEY = "0123456789abcdef0123456789abcdef"
PASSWORD = "hunter2-not-shown"
POLICY = """
[teams.platform]
chat_ids = [-1001234567890]
approvers = [
  { telegram_id = 1001, name = "alice", roles = ["sre"] },
  { telegram_id = 1002, name = "bob", roles = ["sre", "lead"] },
]
"""
BROKEN_POLICY = """
timezone = "Mars/Olympus"

[teams.platform]
chat_ids = [-1001234567890]
approvers = [
  { telegram_id = 1001, name = "alice", roles = ["sre"] },
  { telegram_id = 1002, name = "bob", roles = ["sre"] },
]
callback_url_prefixes = ["https://h/", "https://h", "http://127.0.0.1:"]
alertmanager_url = "alertmanager:9093"

[teams.platform.policy.critical]
required_approvals = 3
required_roles = ["lead"]

[teams.data]
approvers = [{ telegram_id = 2001, name = "erin" }]
"""


async def quorum(cwd: Path, *args: str, **values: str) -> tuple[int, str, str]:
    """The console script in a directory of its own (no .env), with only these QUORUM_ values.
    Asynchronous: the emulator it may call serves on this test's event loop."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUORUM_")}
    env.update({f"QUORUM_{k.upper()}": v for k, v in values.items()})
    proc = await asyncio.create_subprocess_exec(
        str(QUORUM),
        *args,
        cwd=cwd,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(60):
        out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def config(tmp_path: Path, policy: str = POLICY, **values: str) -> dict[str, str]:
    (tmp_path / "policy.toml").write_text(policy)
    base = {
        "telegram_token": TOKEN,
        "token_secret": KEY,
        "policy_file": str(tmp_path / "policy.toml"),
    }
    base.update(values)
    return base


def one_line(code: int, err: str, *needles: str) -> str:
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert PASSWORD not in err
    return lines[0]


@pytest.fixture
async def emulator() -> AsyncIterator[str]:
    """An emulator of this test's own, knowing the bot TOKEN."""
    emu = TelegramEmulator()
    url = await emu.start("127.0.0.1", 0)
    async with EmulatorClient(url) as client:
        await client.add_bot(TOKEN, username="quorum_check_bot", first_name="Quorum")
    yield url
    await emu.stop()


@pytest.fixture
async def empty_db_url(pg_server_url: str) -> AsyncIterator[str]:
    """A database nobody migrated."""
    name = f"quorum_empty_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(to_sync_dsn(pg_server_url))
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        yield make_url(pg_server_url).set(database=name).render_as_string(hide_password=False)
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


# ---------------------------------------------------------------- check-config


async def test_check_config_reports_every_problem_at_once(tmp_path: Path) -> None:
    values = config(
        tmp_path,
        BROKEN_POLICY,
        telegram_token=EXAMPLE_VALUES["telegram_token"],
        token_secret=EXAMPLE_VALUES["token_secret"],
        http_port="99999",
    )
    code, out, err = await quorum(tmp_path, "check-config", **values)
    assert code == 2 and out == "", (out, err)
    lines = err.strip().splitlines()
    policy = f"policy file {tmp_path / 'policy.toml'}: "
    expected = [
        "configuration error: QUORUM_HTTP_PORT: ",
        "configuration error: QUORUM_TELEGRAM_TOKEN: still the value from .env.example",
        "configuration error: QUORUM_TOKEN_SECRET: still the value from .env.example",
        f"configuration error: {policy}timezone: unknown timezone 'Mars/Olympus'",
        f"configuration error: {policy}teams.platform.alertmanager_url: ",
        f"configuration error: {policy}teams.platform.callback_url_prefixes.1: ",
        f"configuration error: {policy}teams.platform.callback_url_prefixes.2: ",
        f"configuration error: {policy}teams.platform.policy.critical.required_approvals: "
        "3 needed but the team has only 2 approvers",
        f"configuration error: {policy}teams.platform.policy.critical.required_roles: "
        "no approver holds any of: lead",
        f"warning: {policy}teams.data.chat_ids: no chats",
        f"warning: {policy}teams.data.policy.high: ",
        f"warning: {policy}teams.data.policy.critical: ",
    ]
    assert len(lines) == len(expected), err
    for line, start in zip(lines, expected, strict=True):
        assert line.startswith("quorum: " + start), (line, start)
    assert EXAMPLE_VALUES["token_secret"] not in err


async def test_warnings_alone_pass(tmp_path: Path) -> None:
    values = config(tmp_path, POLICY + "\n[teams.data]\napprovers = []\n")
    code, out, err = await quorum(tmp_path, "check-config", **values)
    assert code == 0, err
    assert "configuration is valid" in out
    assert all(line.startswith("quorum: warning: ") for line in err.strip().splitlines()), err
    assert "teams.data.chat_ids" in err


async def test_run_refuses_what_check_config_refuses(tmp_path: Path) -> None:
    values = config(tmp_path, POLICY.replace('"lead"', '"sre"') + CRITICAL_BY_LEAD)
    code, out, err = await quorum(tmp_path, "run", **values)
    one_line(code, err, "teams.platform.policy.critical.required_roles")
    assert out == ""


CRITICAL_BY_LEAD = """
[teams.platform.policy.critical]
required_roles = ["lead"]
"""


async def test_online_checks_pass_against_real_services(
    tmp_path: Path, db_url: str, redis_url: str, emulator: str
) -> None:
    values = config(tmp_path, database_url=db_url, redis_url=redis_url, telegram_api_url=emulator)
    code, out, err = await quorum(tmp_path, "check-config", "--online", **values)
    assert code == 0, (out, err)
    assert err == ""
    assert re.search(r"online: PostgreSQL at schema revision \w+", out), out
    assert "online: Redis answers PING and EVAL" in out
    assert "online: Telegram getMe: @quorum_check_bot" in out


async def test_online_checks_report_each_failure(
    tmp_path: Path, empty_db_url: str, emulator: str
) -> None:
    values = config(
        tmp_path,
        database_url=empty_db_url,
        redis_url=f"redis://:{PASSWORD}@127.0.0.1:{free_port()}/0",
        telegram_api_url=emulator,
        telegram_token="123456789:" + "B" * 35,  # the emulator's bot, with a wrong secret
        telegram_mode="webhook",
        webhook_url="http://quorum.internal/telegram/webhook",
        webhook_secret="s3cret",
    )
    code, out, err = await quorum(tmp_path, "check-config", "--online", **values)
    assert code == 2, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 4, err
    assert lines[0].startswith("quorum: QUORUM_DATABASE_URL: schema is at revision (none)")
    assert "quorum migrate" in lines[0]
    assert re.fullmatch(
        r"quorum: QUORUM_REDIS_URL: connection refused \(127\.0\.0\.1:\d+\)", lines[1]
    )
    assert lines[2].startswith("quorum: QUORUM_TELEGRAM_TOKEN: Telegram refused the token")
    assert lines[3].startswith("quorum: QUORUM_WEBHOOK_URL: must be https")
    assert PASSWORD not in out + err and "B" * 35 not in out + err


# ---------------------------------------------------------------- one line per failure


@pytest.mark.parametrize(
    "args", [("migrate",), ("run",), ("check-config", "--online")], ids=lambda a: a[0]
)
async def test_closed_database_port_is_one_line(
    tmp_path: Path, emulator: str, args: tuple[str, ...]
) -> None:
    port = free_port()
    url = f"postgresql://quorum:{PASSWORD}@127.0.0.1:{port}/quorum"
    values = config(tmp_path, database_url=url, telegram_api_url=emulator)
    code, _out, err = await quorum(tmp_path, *args, **values)
    line = one_line(code, err)
    assert line == f"quorum: QUORUM_DATABASE_URL: connection refused (127.0.0.1:{port})"


async def test_closed_redis_port_is_one_line_for_run(tmp_path: Path, db_url: str) -> None:
    port = free_port()
    values = config(
        tmp_path, database_url=db_url, redis_url=f"redis://:{PASSWORD}@127.0.0.1:{port}/0"
    )
    code, _out, err = await quorum(tmp_path, "run", **values)
    assert one_line(code, err) == f"quorum: QUORUM_REDIS_URL: connection refused (127.0.0.1:{port})"


@pytest.mark.parametrize("args", [("migrate",), ("run",)], ids=lambda a: a[0])
async def test_refused_role_is_one_line(
    tmp_path: Path, pg_server_url: str, args: tuple[str, ...]
) -> None:
    url = make_url(pg_server_url).set(username="no_such_quorum_role", password=PASSWORD)
    values = config(tmp_path, database_url=url.render_as_string(hide_password=False))
    code, _out, err = await quorum(tmp_path, *args, **values)
    one_line(code, err, 'QUORUM_DATABASE_URL: role "no_such_quorum_role" does not exist')


async def test_debug_adds_the_traceback(tmp_path: Path) -> None:
    url = f"postgresql://quorum:{PASSWORD}@127.0.0.1:{free_port()}/quorum"
    code, _out, err = await quorum(
        tmp_path, "--debug", "migrate", **config(tmp_path, database_url=url)
    )
    assert code == 2
    assert "Traceback" in err and "ConnectionRefusedError" in err
    assert (
        err.strip().splitlines()[-1].startswith("quorum: QUORUM_DATABASE_URL: connection refused")
    )


# ---------------------------------------------------------------- version and help


async def test_version(tmp_path: Path) -> None:
    from importlib import metadata

    code, out, _err = await quorum(tmp_path, "--version")
    assert code == 0 and out.strip() == f"quorum {metadata.version('quorum')}"


def undocumented(help_text: str) -> list[str]:
    """Entries of argparse's help without a help line of their own."""
    entries: list[list[str]] = []
    section = False
    for line in help_text.splitlines():
        if line.endswith(":") and not line.startswith(" "):
            section = line in ("positional arguments:", "options:")
            continue
        if not section or not line.strip():
            continue
        if re.match(r"^ {2,4}\S", line):  # options at two spaces, subcommands at four
            entries.append([line.strip()])
        elif entries:
            entries[-1].append(line.strip())
    return [
        parts[0]
        for parts in entries
        if len(parts) == 1 and not re.search(r"\S\s{2,}\S", parts[0]) and parts[0] != "COMMAND"
    ]


COMMANDS = ["run", "migrate", "sandbox", "check-config", "new-api-key"]


@pytest.mark.parametrize("command", ["", *COMMANDS])
async def test_every_command_and_option_has_a_help_line(tmp_path: Path, command: str) -> None:
    code, out, _err = await quorum(tmp_path, *([command] if command else []), "--help")
    assert code == 0
    assert undocumented(out) == [], out
    if not command:  # argparse lists a subcommand only when it has a help line
        assert all(re.search(rf"^    {c}\b", out, re.MULTILINE) for c in COMMANDS), out
