"""The `quorum` console script: configuration errors exit 2 with one line; new-api-key."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from bot.policy import parse_policy

QUORUM = Path(sys.executable).parent / "quorum"
GOOD_TOKEN = "123456789:AAHfiqksKZ8WmR2zSjiQ7_v4TMAKdiHm9T0"
GOOD_KEY = "0123456789abcdef0123456789abcdef"
POLICY = """
[teams.platform]
chat_ids = [-1001234567890]
approvers = [{ telegram_id = 1001, name = "alice" }, { telegram_id = 1002, name = "bob" }]
"""


def clean_env(**values: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUORUM_")}
    env.update({f"QUORUM_{k.upper()}": v for k, v in values.items()})
    return env


def quorum(cwd: Path, *args: str, **values: str) -> subprocess.CompletedProcess[str]:
    """Run the console script in a directory of its own (so no .env is read) with a clean env."""
    return subprocess.run(
        [str(QUORUM), *args],
        cwd=cwd,
        env=clean_env(**values),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def runnable(tmp_path: Path, **values: str) -> dict[str, str]:
    policy = tmp_path / "policy.toml"
    if not policy.exists():
        policy.write_text(POLICY)
    base = {
        "telegram_token": GOOD_TOKEN,
        "token_secret": GOOD_KEY,
        "policy_file": str(policy),
        "telegram_mode": "polling",
    }
    base.update(values)
    return base


def assert_config_error(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("quorum: configuration error: ")
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert result.stdout == ""


def test_check_config_accepts_valid_configuration(tmp_path: Path) -> None:
    result = quorum(tmp_path, "check-config", **runnable(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "configuration is valid" in result.stdout
    assert "platform (2 approvers, 1 chat)" in result.stdout


@pytest.mark.parametrize("command", ["check-config", "run"])
def test_short_hs256_key_exits_2(tmp_path: Path, command: str) -> None:
    result = quorum(tmp_path, command, **runnable(tmp_path, token_secret="short"))
    assert_config_error(result, "QUORUM_TOKEN_SECRET")


@pytest.mark.parametrize("command", ["check-config", "run"])
def test_bad_token_exits_2_without_echoing_it(tmp_path: Path, command: str) -> None:
    token = "987654321-not-a-real-token"
    result = quorum(tmp_path, command, **runnable(tmp_path, telegram_token=token))
    assert_config_error(result, "QUORUM_TELEGRAM_TOKEN")
    assert token not in result.stderr


def test_missing_token_exits_2(tmp_path: Path) -> None:
    values = runnable(tmp_path)
    del values["telegram_token"]
    assert_config_error(quorum(tmp_path, "run", **values), "QUORUM_TELEGRAM_TOKEN")


def test_webhook_without_secret_exits_2(tmp_path: Path) -> None:
    values = runnable(
        tmp_path, telegram_mode="webhook", webhook_url="https://example.org/telegram/webhook"
    )
    assert_config_error(quorum(tmp_path, "run", **values), "QUORUM_WEBHOOK_SECRET")


def test_webhook_secret_with_bad_characters_exits_2(tmp_path: Path) -> None:
    values = runnable(
        tmp_path,
        telegram_mode="webhook",
        webhook_url="https://example.org/telegram/webhook",
        webhook_secret="not allowed!",
    )
    assert_config_error(quorum(tmp_path, "check-config", **values), "QUORUM_WEBHOOK_SECRET")


@pytest.mark.parametrize("command", ["check-config", "run"])
def test_missing_policy_file_exits_2(tmp_path: Path, command: str) -> None:
    missing = tmp_path / "missing.toml"
    result = quorum(tmp_path, command, **runnable(tmp_path, policy_file=str(missing)))
    assert_config_error(result, "QUORUM_POLICY_FILE", str(missing))


def test_invalid_policy_exits_2_naming_file_and_key(tmp_path: Path) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text(POLICY.replace("telegram_id = 1001", 'telegram_id = "alice"'))
    result = quorum(tmp_path, "check-config", **runnable(tmp_path))
    assert_config_error(result, str(policy), "teams.platform.approvers.0.telegram_id")


def test_env_file_in_working_directory_is_read(tmp_path: Path) -> None:
    values = runnable(tmp_path)
    del values["token_secret"]
    (tmp_path / ".env").write_text("QUORUM_TOKEN_SECRET=short\n")
    assert_config_error(quorum(tmp_path, "check-config", **values), "QUORUM_TOKEN_SECRET")


def test_new_api_key_prints_a_key_and_its_policy_line(tmp_path: Path) -> None:
    result = quorum(tmp_path, "new-api-key", "alertmanager")
    assert result.returncode == 0, result.stderr
    key_match = re.search(r"API key .*: (\S+)$", result.stdout, re.MULTILINE)
    line_match = re.search(r"^\s*(\{ name = .* \})$", result.stdout, re.MULTILINE)
    assert key_match and line_match, result.stdout
    key, line = key_match.group(1), line_match.group(1)
    assert len(key) >= 40
    assert hashlib.sha256(key.encode()).hexdigest() in line
    assert key not in line

    policy = parse_policy(tomllib.loads(POLICY + f"api_keys = [{line}]\n"))
    assert policy.team_for_api_key(key) is policy.team("platform")
    assert policy.team("platform").api_keys[0].name == "alertmanager"
    assert policy.team_for_api_key(key[:-1]) is None

    again = quorum(tmp_path, "new-api-key", "alertmanager")
    assert key not in again.stdout


@pytest.mark.parametrize("command", ["check-config", "run"])
def test_webhook_mode_without_shared_database_and_redis_exits_2(
    tmp_path: Path, command: str
) -> None:
    values = runnable(
        tmp_path,
        telegram_mode="webhook",
        webhook_url="https://example.org/telegram/webhook",
        webhook_secret="s3cret",
    )
    result = quorum(tmp_path, command, **values)
    assert_config_error(
        result,
        "QUORUM_DATABASE_URL and QUORUM_REDIS_URL",
        "replicas",
        "one Telegram pacing budget",
        "one token-replay gate",
    )
