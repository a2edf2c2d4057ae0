"""`quorum new-api-key --scopes` and `quorum check-config` on scoped keys, as subprocesses."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

from bot.policy import parse_policy

QUORUM = Path(sys.executable).parent / "quorum"
TEAM = """
[teams.platform]
chat_ids = [-1001234567890]
approvers = [{ telegram_id = 1001, name = "alice" }, { telegram_id = 1002, name = "bob" }]
"""


def run(cwd: Path, *args: str, **values: str) -> subprocess.CompletedProcess[str]:
    """The console script in a directory of its own (no .env), with only these QUORUM_ values."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUORUM_")}
    env.update({f"QUORUM_{k.upper()}": v for k, v in values.items()})
    return subprocess.run(
        [str(QUORUM), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=30
    )


def key_and_line(stdout: str) -> tuple[str, str]:
    key = re.search(r"API key .*: (\S+)$", stdout, re.MULTILINE)
    line = re.search(r"^\s*(\{ name = .* \})$", stdout, re.MULTILINE)
    assert key and line, stdout
    return key.group(1), line.group(1)


def test_new_api_key_writes_the_scopes_into_the_policy_line(tmp_path: Path) -> None:
    result = run(tmp_path, "new-api-key", "forwarder", "--scopes", "alerts:write,approvals:read")
    assert result.returncode == 0, result.stderr
    key, line = key_and_line(result.stdout)
    assert 'scopes = ["alerts:write", "approvals:read"]' in line
    policy = parse_policy(tomllib.loads(TEAM + f"api_keys = [{line}]\n"))
    found = policy.api_key(key)
    assert found is not None
    assert found[1].scopes == frozenset({"alerts:write", "approvals:read"})


def test_new_api_key_refuses_an_unknown_scope(tmp_path: Path) -> None:
    result = run(tmp_path, "new-api-key", "forwarder", "--scopes", "alerts:write,tokens:read")
    assert result.returncode == 2
    assert "unknown scope 'tokens:read'" in result.stderr
    assert "tokens:redeem" in result.stderr  # the known ones are listed
    assert "qk_" not in result.stdout


def test_check_config_reports_an_unknown_scope_with_the_other_problems(tmp_path: Path) -> None:
    policy = tmp_path / "policy.toml"
    sha = "ab" * 32
    policy.write_text(
        'timezone = "Mars/Olympus"\n'
        + TEAM
        + f'api_keys = [{{ name = "fwd", sha256 = "{sha}", scopes = ["alerts:read"] }}]\n'
    )
    result = run(
        tmp_path,
        "check-config",
        telegram_token="123456789:AAHfiqksKZ8WmR2zSjiQ7_v4TMAKdiHm9T0",
        token_secret="0123456789abcdef0123456789abcdef",
        policy_file=str(policy),
    )
    assert result.returncode == 2
    assert "teams.platform.api_keys.0.scopes: unknown scope 'alerts:read'" in result.stderr
    assert "timezone: unknown timezone 'Mars/Olympus'" in result.stderr
