"""The policy file: defaults, lookups, and errors that name the file and the key at fault."""

from __future__ import annotations

import hashlib
import tomllib
from pathlib import Path

import pytest

from bot.policy import RiskLevel, Rule, load_policy, new_api_key, parse_policy
from bot.settings import ConfigError

KEY = "qk_the-platform-key"
KEY_SHA = hashlib.sha256(KEY.encode()).hexdigest()

GOOD = f"""
timezone = "Europe/Berlin"

[teams.platform]
chat_ids = [-1001234567890]
approvers = [
  {{ telegram_id = 1001, name = "alice", roles = ["sre"] }},
  {{ telegram_id = 1002, name = "bob",   roles = ["sre", "lead"] }},
]
api_keys = [{{ name = "alertmanager", sha256 = "{KEY_SHA}" }}]

[teams.data]
chat_ids = [-1009876543210, -1009876543211]
approvers = [{{ telegram_id = 2001, name = "erin" }}]

[teams.platform.policy.critical]
required_approvals = 3
reject_threshold = 2
ttl_seconds = 600
escalate_after_seconds = 300
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "policy.toml"
    path.write_text(text)
    return path


def policy_error(tmp_path: Path, text: str) -> str:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_policy(path)
    message = str(info.value)
    assert str(path) in message, message
    assert "\n" not in message
    return message


# ---------------------------------------------------------------- a valid file


def test_valid_policy_loads(tmp_path: Path) -> None:
    policy = load_policy(write(tmp_path, GOOD))
    assert set(policy.teams) == {"platform", "data"}
    assert policy.timezone == "Europe/Berlin"
    platform = policy.team("platform")
    assert platform.is_approver(1001) and platform.is_approver(1002)
    assert not platform.is_approver(2001)
    assert platform.approvers[1002].roles == frozenset({"sre", "lead"})
    assert policy.team_for_chat(-1001234567890) is platform
    assert policy.team_for_chat(-1009876543211) is policy.team("data")
    assert policy.team_for_chat(-1000000000000) is None
    assert [t.name for t in policy.teams_of(2001)] == ["data"]


def test_defaults_for_levels_without_a_table(tmp_path: Path) -> None:
    team = load_policy(write(tmp_path, GOOD)).team("data")
    assert team.rule(RiskLevel.LOW) == Rule(1, 1, 3600, None)
    assert team.rule(RiskLevel.MEDIUM) == Rule(1, 1, 3600, None)
    assert team.rule(RiskLevel.HIGH) == Rule(2, 1, 3600, None)
    assert team.rule(RiskLevel.CRITICAL) == Rule(2, 1, 3600, None)


def test_level_table_overrides_only_that_level(tmp_path: Path) -> None:
    team = load_policy(write(tmp_path, GOOD)).team("platform")
    assert team.rule(RiskLevel.CRITICAL) == Rule(3, 2, 600, 300)
    assert team.rule(RiskLevel.HIGH) == Rule(2, 1, 3600, None)
    assert team.rule(RiskLevel.LOW) == Rule(1, 1, 3600, None)


def test_partial_level_table_keeps_that_levels_default_approvals(tmp_path: Path) -> None:
    # Setting only a TTL for "high" must not quietly drop it from two approvers to one.
    text = GOOD + "\n[teams.data.policy.high]\nttl_seconds = 900\n"
    rule = load_policy(write(tmp_path, text)).team("data").rule(RiskLevel.HIGH)
    assert rule == Rule(2, 1, 900, None)


# ---------------------------------------------------------------- API keys


def test_api_key_is_found_by_hash() -> None:
    policy = parse_policy(tomllib.loads(GOOD))
    assert policy.team_for_api_key(KEY) is policy.team("platform")
    assert policy.team_for_api_key(KEY + "x") is None
    assert policy.team_for_api_key("") is None


def test_uppercase_sha256_is_accepted() -> None:
    policy = parse_policy(tomllib.loads(GOOD.replace(KEY_SHA, KEY_SHA.upper())))
    assert policy.team_for_api_key(KEY) is policy.team("platform")


def test_new_api_key_line_is_pasteable() -> None:
    key, line = new_api_key('ci "nightly"')
    text = GOOD.replace(f'{{ name = "alertmanager", sha256 = "{KEY_SHA}" }}', line)
    policy = parse_policy(tomllib.loads(text))
    assert policy.team_for_api_key(key) is policy.team("platform")
    assert policy.team("platform").api_keys[0].name == 'ci "nightly"'
    other, _ = new_api_key("ci")
    assert other != key


# ---------------------------------------------------------------- errors


def test_missing_file_names_the_variable_and_path(tmp_path: Path) -> None:
    path = tmp_path / "nowhere.toml"
    with pytest.raises(ConfigError) as info:
        load_policy(path)
    assert str(info.value).startswith("QUORUM_POLICY_FILE:")
    assert str(path) in str(info.value)


def test_toml_syntax_error(tmp_path: Path) -> None:
    message = policy_error(tmp_path, GOOD.replace('name = "bob",', 'name = "bob" roles,'))
    assert "not valid TOML" in message
    assert "line 8" in message


def test_invalid_utf8(tmp_path: Path) -> None:
    path = tmp_path / "policy.toml"
    path.write_bytes(b'timezone = "\xff"\n')
    with pytest.raises(ConfigError, match="not valid TOML") as info:
        load_policy(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ('timezone = "UTC"\n', "teams"),
        (GOOD.replace('name = "alice", ', ""), "teams.platform.approvers.0.name"),
        (GOOD.replace("telegram_id = 1002, ", ""), "teams.platform.approvers.1.telegram_id"),
        (GOOD.replace('name = "alertmanager", ', ""), "teams.platform.api_keys.0.name"),
    ],
    ids=["teams", "approver-name", "approver-id", "api-key-name"],
)
def test_missing_required_key(tmp_path: Path, text: str, key: str) -> None:
    message = policy_error(tmp_path, text)
    assert f": {key}: " in message
    assert "required" in message.lower()


@pytest.mark.parametrize(
    ("old", "new", "key"),
    [
        ("telegram_id = 1001", 'telegram_id = "alice"', "teams.platform.approvers.0.telegram_id"),
        ('name = "alice"', "name = 1001", "teams.platform.approvers.0.name"),
        ("chat_ids = [-1001234567890]", 'chat_ids = "-100"', "teams.platform.chat_ids"),
        ("required_approvals = 3", 'required_approvals = "two"', "required_approvals"),
        ('roles = ["sre"]', 'roles = "sre"', "teams.platform.approvers.0.roles"),
    ],
    ids=["id-string", "name-int", "chat-ids-string", "approvals-string", "roles-string"],
)
def test_wrong_type(tmp_path: Path, old: str, new: str, key: str) -> None:
    assert old in GOOD
    message = policy_error(tmp_path, GOOD.replace(old, new, 1))
    assert key in message


def test_unknown_key_is_named(tmp_path: Path) -> None:
    message = policy_error(tmp_path, GOOD.replace("chat_ids = [-1001234567890]", "chats = [1]"))
    assert "teams.platform.chats" in message


def test_unknown_risk_level_is_named(tmp_path: Path) -> None:
    message = policy_error(tmp_path, GOOD + "\n[teams.data.policy.extreme]\nttl_seconds = 900\n")
    assert "teams.data.policy.extreme" in message


def test_out_of_range_rule_is_named(tmp_path: Path) -> None:
    message = policy_error(
        tmp_path, GOOD.replace("required_approvals = 3", "required_approvals = 0")
    )
    assert "teams.platform.policy.critical.required_approvals" in message


def test_duplicate_approver_id(tmp_path: Path) -> None:
    message = policy_error(tmp_path, GOOD.replace("telegram_id = 1002", "telegram_id = 1001"))
    assert "teams.platform.approvers" in message
    assert "twice" in message


def test_chat_in_two_teams(tmp_path: Path) -> None:
    text = GOOD.replace("chat_ids = [-1009876543210,", "chat_ids = [-1001234567890,")
    message = policy_error(tmp_path, text)
    assert "teams.data.chat_ids" in message
    assert "-1001234567890" in message
    assert "platform" in message


@pytest.mark.parametrize(
    "digest",
    [KEY_SHA[:-1], KEY_SHA + "0", "z" * 64, "<hex sha256 of the key>", ""],
    ids=["short", "long", "not-hex", "placeholder", "empty"],
)
def test_bad_sha256(tmp_path: Path, digest: str) -> None:
    message = policy_error(tmp_path, GOOD.replace(KEY_SHA, digest))
    assert "teams.platform.api_keys.0.sha256" in message
    assert "SHA-256" in message


def test_no_teams(tmp_path: Path) -> None:
    message = policy_error(tmp_path, "[teams]\n")
    assert ": teams: " in message


# ---------------------------------------------------------------- alert groups


@pytest.mark.parametrize(
    ("line", "group_by"),
    [
        ("", ("alertname",)),
        ("alert_group_by = []", ()),
        ('alert_group_by = ["alertname", "cluster"]', ("alertname", "cluster")),
    ],
    ids=["default", "per-fingerprint", "two-labels"],
)
def test_alert_group_by(tmp_path: Path, line: str, group_by: tuple[str, ...]) -> None:
    text = GOOD.replace("[teams.data]\n", f"[teams.data]\n{line}\n", 1)
    assert load_policy(write(tmp_path, text)).team("data").alert_group_by == group_by


def test_alert_group_by_refuses_an_empty_label(tmp_path: Path) -> None:
    message = policy_error(
        tmp_path, GOOD.replace("[teams.data]\n", '[teams.data]\nalert_group_by = [""]\n')
    )
    assert "teams.data.alert_group_by" in message
