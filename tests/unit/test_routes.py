"""Routes as pure rules: which cards a route takes, and the policy keys that declare them."""

from __future__ import annotations

from typing import Any

import pytest

from bot.configcheck import ERROR, policy_problems
from bot.policy import Route, parse_policy
from bot.routes import route_matches
from tests.support import policy_data

APPROVALS_HIGH = Route(-1, 5, "approval", frozenset({"high", "critical"}))
ALERTS_DB = Route(-1, None, "alert", severities=frozenset({"critical"}), labels=(("team", "db"),))
ANYTHING = Route(-1)


@pytest.mark.parametrize(
    ("route", "card", "takes"),
    [
        (APPROVALS_HIGH, {"kind": "approval", "risk_level": "high"}, True),
        (APPROVALS_HIGH, {"kind": "approval", "risk_level": "low"}, False),
        (APPROVALS_HIGH, {"kind": "alert", "severity": "critical"}, False),
        (ALERTS_DB, {"kind": "alert", "severity": "critical", "labels": {"team": "db"}}, True),
        (ALERTS_DB, {"kind": "alert", "severity": "critical", "labels": {"team": "web"}}, False),
        (ALERTS_DB, {"kind": "alert", "severity": "critical", "labels": {}}, False),
        (ALERTS_DB, {"kind": "alert", "severity": "warning", "labels": {"team": "db"}}, False),
        (Route(-1, sources=frozenset({"grafana"})), {"kind": "alert", "source": "grafana"}, True),
        (Route(-1, sources=frozenset({"grafana"})), {"kind": "alert", "source": "generic"}, False),
        (ANYTHING, {"kind": "approval", "risk_level": "low"}, True),
        (ANYTHING, {"kind": "alert"}, True),
    ],
)
def test_route_matches(route: Route, card: dict[str, Any], takes: bool) -> None:
    assert route_matches(route, **card) is takes


def with_routes(routes: list[dict[str, Any]]) -> dict[str, Any]:
    data = policy_data()
    data["teams"]["platform"]["routes"] = routes
    return data


def test_routes_load_and_their_chats_answer_for_the_team() -> None:
    policy = parse_policy(
        with_routes(
            [
                {"chat_id": -100777, "thread_id": 3, "match": {"risk_level": ["critical"]}},
                {"chat_id": -100888, "match": {"kind": "alert", "labels": {"team": "db"}}},
            ]
        )
    )
    team = policy.team("platform")
    assert team.routes[0] == Route(-100777, 3, None, frozenset({"critical"}))
    assert team.routes[1].labels == (("team", "db"),)
    assert policy.team_for_chat(-100777) is team
    assert team.all_chat_ids == (*team.chat_ids, -100777, -100888)


@pytest.mark.parametrize(
    ("route", "key"),
    [
        ({"chat_id": 5}, "teams.platform.routes.0.chat_id"),
        ({"chat_id": -1, "thread_id": 0}, "teams.platform.routes.0.thread_id"),
        ({"chat_id": -1, "match": {"kind": "poll"}}, "teams.platform.routes.0.match.kind"),
        ({"chat_id": -1, "match": {"risk": ["high"]}}, "teams.platform.routes.0.match.risk"),
        (
            {"chat_id": -1, "match": {"risk_level": ["urgent"]}},
            "teams.platform.routes.0.match.risk_level.0",
        ),
    ],
)
def test_check_config_refuses_bad_routes(route: dict[str, Any], key: str) -> None:
    problems = policy_problems(with_routes([route]), "policy file p.toml")
    assert [(p.level, p.where) for p in problems if p.level == ERROR] == [
        (ERROR, f"policy file p.toml: {key}")
    ]
