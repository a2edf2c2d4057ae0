"""check-config's rules, table-tested: each bad setting or policy key is one named problem."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from bot.configcheck import (
    ERROR,
    WARNING,
    Problem,
    absolute_url,
    check,
    combined,
    load_settings_reporting,
)
from bot.settings import EXAMPLE_VALUES, Settings
from tests.support import policy_data

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "123456789:AAHfiqksKZ8WmR2zSjiQ7_v4TMAKdiHm9T0"
KEY = "0123456789abcdef0123456789abcdef"
# What webhook mode (replicas) needs besides its own settings.
REPLICA = {"database_url": "postgresql://q@db/quorum", "redis_url": "redis://cache:6379/0"}
WEBHOOK = {"telegram_mode": "webhook", "webhook_url": "https://bot.example.org/hook"}
POLICY: dict[str, Any] = {
    "timezone": "Europe/Berlin",
    "teams": {
        "platform": {
            "chat_ids": [-1001],
            "approvers": [
                {"telegram_id": 1, "name": "alice", "roles": ["sre"]},
                {"telegram_id": 2, "name": "bob", "roles": ["sre", "lead"]},
            ],
            "callback_url_prefixes": ["https://deployer.internal/"],
            "alertmanager_url": "http://alertmanager:9093",
            "policy": {"critical": {"required_approvals": 2, "required_roles": ["lead"]}},
        }
    },
}


pytestmark = pytest.mark.usefixtures("clean_env")


def settings(**values: Any) -> Settings:
    base: dict[str, Any] = {"telegram_token": TOKEN, "token_secret": KEY}
    base.update(values)
    return Settings(**base)


def policy(**team: Any) -> dict[str, Any]:
    data = copy.deepcopy(POLICY)
    data["teams"]["platform"].update(team)
    return data


def found(problems: list[Problem]) -> set[tuple[str, str]]:
    """(level, where) without the file name, which depends on the settings."""
    return {(p.level, p.where.removeprefix("policy file policy.toml: ")) for p in problems}


def test_a_good_configuration_has_no_problem() -> None:
    assert check(settings(), POLICY) == []


def test_the_test_suites_own_policy_has_no_error() -> None:
    problems = check(settings(), policy_data())
    assert [p for p in problems if p.level == ERROR] == []


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({"telegram_token": EXAMPLE_VALUES["telegram_token"]}, "QUORUM_TELEGRAM_TOKEN"),
        ({"token_secret": EXAMPLE_VALUES["token_secret"]}, "QUORUM_TOKEN_SECRET"),
        (
            {"token_previous_secrets": [EXAMPLE_VALUES["token_secret"]]},
            "QUORUM_TOKEN_PREVIOUS_SECRETS",
        ),
        (
            {
                **REPLICA,
                "telegram_mode": "webhook",
                "webhook_url": "https://bot.example.org/hook",
                "webhook_secret": EXAMPLE_VALUES["webhook_secret"],
            },
            "QUORUM_WEBHOOK_SECRET",
        ),
        (
            {
                **REPLICA,
                "telegram_mode": "webhook",
                "webhook_url": EXAMPLE_VALUES["webhook_url"],
                "webhook_secret": "s3cret",
            },
            "QUORUM_WEBHOOK_URL",
        ),
        ({"telegram_token": ""}, "QUORUM_TELEGRAM_TOKEN"),
        ({"token_secret": ""}, "QUORUM_TOKEN_SECRET"),
    ],
    ids=[
        "example-bot-token",
        "example-hs256-key",
        "example-previous-key",
        "example-webhook-secret",
        "example-webhook-url",
        "no-token",
        "no-key",
    ],
)
def test_settings_errors_name_their_variable(values: dict[str, Any], expected: str) -> None:
    problems = check(settings(**values), POLICY)
    assert found(problems) == {(ERROR, expected)}
    assert all(p.message and "\n" not in p.message for p in problems)


@pytest.mark.parametrize(
    ("values", "clash"),
    [
        ({"http_port": 8080, "metrics_port": 8080}, True),
        ({"http_port": 8080, "metrics_port": 8080, "metrics_host": "0.0.0.0"}, True),  # noqa: S104
        ({"http_port": 8080, "metrics_port": 8080, "http_host": "::"}, True),
        ({"http_port": 8080, "metrics_port": 8080, "metrics_host": "10.0.0.7"}, False),
        ({"http_port": 8080, "metrics_port": 9090}, False),
        ({"http_port": 0, "metrics_port": 0}, False),  # two free ports, chosen apart
        ({"http_port": 8080, "metrics_port": None}, False),
    ],
    ids=["same", "metrics-any", "http-any", "other-address", "other-port", "both-free", "unset"],
)
def test_the_metrics_listener_needs_a_port_of_its_own(values: dict[str, Any], clash: bool) -> None:
    problems = check(settings(**values), POLICY)
    assert found(problems) == ({(ERROR, "QUORUM_METRICS_PORT")} if clash else set())
    assert all("QUORUM_HTTP_PORT (8080)" in p.message for p in problems)


def test_example_database_url_is_a_warning() -> None:
    problems = check(settings(database_url=EXAMPLE_VALUES["database_url"]), POLICY)
    assert found(problems) == {(WARNING, "QUORUM_DATABASE_URL")}


@pytest.mark.parametrize(
    ("values", "named"),
    [
        ({}, "QUORUM_DATABASE_URL and QUORUM_REDIS_URL"),
        ({"database_url": REPLICA["database_url"]}, "QUORUM_REDIS_URL"),
        ({"redis_url": REPLICA["redis_url"]}, "QUORUM_DATABASE_URL"),
    ],
    ids=["neither", "no-redis", "no-database"],
)
def test_webhook_mode_needs_a_shared_database_and_redis(values: dict[str, str], named: str) -> None:
    [problem] = check(settings(**WEBHOOK, webhook_secret="s3cret", **values), POLICY)
    assert (problem.level, problem.where) == (ERROR, named)
    for why in ("QUORUM_DATABASE_URL", "QUORUM_REDIS_URL", "pacing", "token-replay", "replicas"):
        assert why in problem.line
    assert check(settings(**WEBHOOK, webhook_secret="s3cret", **REPLICA), POLICY) == []


def test_polling_mode_runs_without_database_or_redis_urls() -> None:
    assert check(settings(telegram_mode="polling"), POLICY) == []


def test_the_example_webhook_url_is_harmless_in_polling_mode() -> None:
    assert check(settings(webhook_url=EXAMPLE_VALUES["webhook_url"]), POLICY) == []


def test_example_values_are_those_of_env_example() -> None:
    lines = (ROOT / ".env.example").read_text().splitlines()
    example = dict(line.split("=", 1) for line in lines if "=" in line and not line.startswith("#"))
    for field, value in EXAMPLE_VALUES.items():
        assert example[f"QUORUM_{field.upper()}"] == value, field
    # Every placeholder the file ships is known (not only the five above drifting apart).
    placeholders = {k for k, v in example.items() if "replace" in v or "example.com" in v}
    assert placeholders <= {f"QUORUM_{f.upper()}" for f in EXAMPLE_VALUES}


@pytest.mark.parametrize(
    ("team", "expected"),
    [
        (
            {"policy": {"critical": {"required_approvals": 3}}},
            {(ERROR, "teams.platform.policy.critical.required_approvals")},
        ),
        (
            {"policy": {"high": {"required_approvals": 2, "required_roles": ["dba"]}}},
            {(ERROR, "teams.platform.policy.high.required_roles")},
        ),
        (
            {
                "policy": {
                    "high": {"required_approvals": 5, "required_roles": ["dba"]},
                }
            },
            {
                (ERROR, "teams.platform.policy.high.required_approvals"),
                (ERROR, "teams.platform.policy.high.required_roles"),
            },
        ),
        (
            {"policy": {"high": {"required_roles": ["lead", "dbaa"]}}},
            {(WARNING, "teams.platform.policy.high.required_roles")},
        ),
        (
            {"approvers": [{"telegram_id": 1, "name": "alice", "roles": ["lead"]}], "policy": {}},
            {(WARNING, "teams.platform.policy.high"), (WARNING, "teams.platform.policy.critical")},
        ),
        ({"chat_ids": []}, {(WARNING, "teams.platform.chat_ids")}),
        ({"alertmanager_url": "alertmanager:9093"}, {(ERROR, "teams.platform.alertmanager_url")}),
        (
            {"callback_url_prefixes": ["https://h/", "https://h", "http://127.0.0.1:"]},
            {
                (ERROR, "teams.platform.callback_url_prefixes.1"),
                (ERROR, "teams.platform.callback_url_prefixes.2"),
            },
        ),
    ],
    ids=[
        "too-few-approvers",
        "role-nobody-holds",
        "both",
        "one-role-nobody-holds",
        "default-level-unreachable",
        "no-chats",
        "alertmanager-url",
        "callback-prefixes",
    ],
)
def test_policy_problems_name_their_key(team: dict[str, Any], expected: set[Any]) -> None:
    assert found(check(settings(), policy(**team))) == expected


def test_required_approvals_message_counts() -> None:
    [problem] = check(settings(), policy(policy={"critical": {"required_approvals": 3}}))
    assert problem.message == "3 needed but the team has only 2 approvers"
    assert problem.line == (
        "quorum: configuration error: policy file policy.toml: "
        "teams.platform.policy.critical.required_approvals: 3 needed but the team has only "
        "2 approvers"
    )


def test_every_problem_is_reported_at_once() -> None:
    data = policy(
        alertmanager_url="ftp://x",
        callback_url_prefixes=["https://h"],
        policy={"critical": {"required_approvals": 3}},
    )
    data["timezone"] = "Mars/Olympus"
    data["teams"]["data"] = {"chat_ids": [-1001], "approvers": []}
    problems = check(settings(token_secret=EXAMPLE_VALUES["token_secret"]), data)
    assert found(problems) >= {
        (ERROR, "QUORUM_TOKEN_SECRET"),
        (ERROR, "timezone"),
        (ERROR, "teams.platform.alertmanager_url"),
        (ERROR, "teams.platform.callback_url_prefixes.0"),
        (ERROR, "teams.platform.policy.critical.required_approvals"),
        (ERROR, "teams.data.chat_ids"),  # a chat of another team
        (WARNING, "teams.data.policy.low"),  # nobody could approve anything
    }


def test_schema_errors_are_all_reported() -> None:
    data = policy(approvers=[{"telegram_id": "alice", "name": ""}])
    data["surprise"] = 1
    assert found(check(settings(), data)) == {
        (ERROR, "teams.platform.approvers.0.telegram_id"),
        (ERROR, "teams.platform.approvers.0.name"),
        (ERROR, "surprise"),
    }


@pytest.mark.parametrize(
    ("url", "with_path", "ok"),
    [
        ("https://h/", True, True),
        ("https://h/hooks/", True, True),
        ("http://127.0.0.1:8090/", True, True),
        ("https://h", True, False),
        ("http://127.0.0.1:", True, False),
        ("http://127.0.0.1:/x", True, False),
        ("http://127.0.0.1:port/", True, False),
        ("ftp://h/", True, False),
        ("/relative/", True, False),
        ("https:///path", True, False),
        ("http://alertmanager:9093", False, True),
        ("alertmanager:9093", False, False),
    ],
)
def test_absolute_url(url: str, with_path: bool, ok: bool) -> None:
    assert absolute_url(url, with_path=with_path) is ok


def test_loading_reports_every_refused_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QUORUM_HTTP_PORT", "99999")
    monkeypatch.setenv("QUORUM_TIMEZONE", "Mars/Olympus")
    monkeypatch.setenv("QUORUM_TELEGRAM_TOKEN", "not-a-token")
    monkeypatch.setenv("QUORUM_TELEGRAM_MODE", "webhook")
    monkeypatch.setenv("QUORUM_WEBHOOK_SECRET", "not allowed!")
    s, problems = load_settings_reporting()
    assert [p.where for p in problems] == [
        "QUORUM_TELEGRAM_TOKEN",
        "QUORUM_HTTP_PORT",
        "QUORUM_TIMEZONE",
        "QUORUM_WEBHOOK_SECRET",
    ]
    assert "not-a-token" not in " ".join(p.message for p in problems)
    # The refused token fell back to none: "required" is not reported a second time.
    merged = combined(problems, check(s, None))
    assert [p.where for p in merged] == [*(p.where for p in problems), "QUORUM_TOKEN_SECRET"]


@pytest.mark.parametrize(
    ("team", "where", "message"),
    [
        (
            {"auto_approve": [{"name": "all", "max_risk": "critical"}]},
            "teams.platform.auto_approve.0",
            "max_risk = critical needs allow_critical = true",
        ),
        (
            {"break_glass": {"roles": ["captain"]}},
            "teams.platform",
            "break_glass.roles: no approver holds captain",
        ),
        (
            {"deny": [{"name": "weekend", "hours": "Sat-Sun"}]},
            "teams.platform.deny.0.hours",
            "malformed hours 'Sat-Sun'",
        ),
        (
            {"auto_approve": [{"name": "night", "hours": "Mon 22:00-06:00"}]},
            "teams.platform.auto_approve.0.hours",
            "must end after it starts",
        ),
        (
            {"policy": {"critical": {"step_up": "sms"}}},
            "teams.platform.policy.critical.step_up",
            "private",
        ),
    ],
    ids=["critical-auto", "unknown-role", "malformed-hours", "window-backwards", "step-up"],
)
def test_check_config_refuses_contradictory_rules(
    team: dict[str, Any], where: str, message: str
) -> None:
    problems = check(settings(), policy(**team))
    assert [(p.level, p.where.removeprefix("policy file policy.toml: ")) for p in problems] == [
        (ERROR, where)
    ]
    assert message in problems[0].message


def test_check_config_accepts_the_policy_engine_keys() -> None:
    team = {
        "timezone": "Europe/Berlin",
        "trust_key": "action",
        "auto_approve": [
            {"name": "routine", "actions": ["restart *"], "hours": "Mon-Fri 09:00-18:00"}
        ],
        "deny": [{"name": "no-db", "targets": ["prod/db*"]}],
        "break_glass": {"roles": ["lead"], "max_per_day": 3},
        "policy": {"high": {"trust_lowers_at": 10}, "critical": {"step_up": "private"}},
    }
    assert check(settings(), policy(**team)) == []


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        ({"reason_pattern": "^(OPS"}, {(ERROR, "teams.platform.policy.high.reason_pattern")}),
        ({"reason_pattern": ""}, {(ERROR, "teams.platform.policy.high.reason_pattern")}),
        ({"require_reason": "yes"}, {(ERROR, "teams.platform.policy.high.require_reason")}),
        (
            {"require_reject_reason": 2},
            {(ERROR, "teams.platform.policy.high.require_reject_reason")},
        ),
        ({"reason_pattern": "^OPS-"}, {(WARNING, "teams.platform.policy.high.reason_pattern")}),
        ({"reason_pattern": "^OPS-", "require_reason": True, "require_reject_reason": True}, set()),
        ({"warn_before_seconds": -1}, {(ERROR, "teams.platform.policy.high.warn_before_seconds")}),
        ({"escalate_to": [0]}, {(ERROR, "teams.platform.policy.high.escalate_to")}),
        ({"escalate_to": [7, 7]}, {(ERROR, "teams.platform.policy.high.escalate_to")}),
        ({"escalate_to": [7, -1001], "warn_before_seconds": 0}, set()),
    ],
    ids=[
        "bad-regex",
        "empty-regex",
        "not-a-bool",
        "reject-not-a-bool",
        "pattern-alone",
        "good",
        "warn-negative",
        "target-zero",
        "target-twice",
        "targets-good",
    ],
)
def test_reason_keys_are_checked(rule: dict[str, Any], expected: set[Any]) -> None:
    assert found(check(settings(), policy(policy={"high": rule}))) == expected
