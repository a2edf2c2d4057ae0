"""API-key scopes in the policy: parsed, defaulted to all, unknown names refused everywhere."""

from __future__ import annotations

import copy
import hashlib
import tomllib
from typing import Any

import pytest

from bot.configcheck import ERROR, check
from bot.policy import ALL_SCOPES, DEFAULT_SCOPES, SCOPES, new_api_key, parse_policy, parse_scopes
from bot.settings import ConfigError, Settings
from handlers.openapi import OPERATION_SCOPES, document

KEY = "qk_the-forwarder-key"
SHA = hashlib.sha256(KEY.encode()).hexdigest()


def policy(*keys: dict[str, Any]) -> dict[str, Any]:
    return {
        "teams": {
            "platform": {
                "chat_ids": [-1001],
                "approvers": [{"telegram_id": 1, "name": "alice"}],
                "api_keys": [copy.deepcopy(k) for k in keys],
            }
        }
    }


def test_scopes_are_read_per_key_and_absent_means_all_but_audit_read() -> None:
    pol = parse_policy(
        policy(
            {"name": "forwarder", "sha256": SHA, "scopes": ["alerts:write"]},
            {"name": "old", "sha256": "ab" * 32},
            {"name": "none", "sha256": "cd" * 32, "scopes": []},
        )
    )
    forwarder, old, none = pol.team("platform").api_keys
    assert forwarder.scopes == frozenset({"alerts:write"})
    assert old.scopes == DEFAULT_SCOPES == frozenset(SCOPES) - {"audit:read"}
    assert none.scopes == frozenset()
    found = pol.api_key(KEY)
    assert found is not None and found[1].scopes == frozenset({"alerts:write"})


def test_an_unknown_scope_is_refused_naming_the_key() -> None:
    data = policy({"name": "fwd", "sha256": SHA, "scopes": ["alerts:write", "tokens:read"]})
    with pytest.raises(ConfigError) as info:
        parse_policy(data, "p.toml")
    message = str(info.value)
    assert message.startswith("policy file p.toml: teams.platform.api_keys.0.scopes: ")
    assert "'tokens:read'" in message and "tokens:redeem" in message


def test_check_config_reports_an_unknown_scope_beside_other_problems() -> None:
    data = policy({"name": "fwd", "sha256": SHA, "scopes": ["admin"]})
    data["timezone"] = "Mars/Olympus"
    data["teams"]["platform"]["alertmanager_url"] = "ftp://x"
    s = Settings(telegram_token="123456789:" + "A" * 35, token_secret="k" * 32)
    where = {
        p.where.removeprefix(f"policy file {s.policy_file}: ")
        for p in check(s, data)
        if p.level == ERROR
    }
    assert where >= {
        "teams.platform.api_keys.0.scopes",
        "timezone",
        "teams.platform.alertmanager_url",
    }


def test_new_api_key_line_carries_its_scopes() -> None:
    key, line = new_api_key("fwd", ("alerts:write", "approvals:read"))
    assert 'scopes = ["alerts:write", "approvals:read"]' in line
    text = '[teams.platform]\napprovers = [{ telegram_id = 1, name = "a" }]\n'
    pol = parse_policy(tomllib.loads(text + f"api_keys = [{line}]\n"))
    found = pol.api_key(key)
    assert found is not None
    assert found[1].scopes == frozenset({"alerts:write", "approvals:read"})
    _, unscoped = new_api_key("all")
    assert "scopes" not in unscoped


@pytest.mark.parametrize(
    ("text", "scopes"),
    [
        ("alerts:write", ("alerts:write",)),
        (" alerts:write , approvals:read,alerts:write", ("alerts:write", "approvals:read")),
    ],
)
def test_parse_scopes(text: str, scopes: tuple[str, ...]) -> None:
    assert parse_scopes(text) == scopes


@pytest.mark.parametrize("text", ["", " , ", "alerts:write,alerts", "ALERTS:WRITE"])
def test_parse_scopes_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="scope"):
        parse_scopes(text)


def test_openapi_names_each_operations_scope() -> None:
    doc = document()
    assert "alerts:write" in doc["components"]["securitySchemes"]["apiKey"]["description"]
    operations = {op["operationId"]: op for item in doc["paths"].values() for op in item.values()}
    assert set(OPERATION_SCOPES) == set(operations) - {"openapi"}
    assert set(OPERATION_SCOPES.values()) == ALL_SCOPES
    for name, scope in OPERATION_SCOPES.items():
        assert scope in operations[name]["description"]
        assert "403" in operations[name]["responses"]
