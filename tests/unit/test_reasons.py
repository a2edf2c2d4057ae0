"""Reasons as pure rules: a request's reason against its level, who owes a rejection reason,
and when the decision callback waits for it."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest

from bot.approvals.card import awaiting_reason
from bot.approvals.decision import callback_holds_for_reason, vote_reasons
from bot.approvals.reasons import reason_problem
from bot.policy import RiskLevel, Rule, parse_policy
from bot.settings import ConfigError
from storage.votes import VoteRecord
from tests.support import policy_data

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
PLAIN = Rule(1, 1, 3600, None)
REQUIRED = Rule(1, 1, 3600, None, require_reason=True)
TICKET = Rule(1, 1, 3600, None, require_reason=True, reason_pattern=re.compile("^(OPS|INC)-[0-9]+"))
PATTERN_ONLY = Rule(1, 1, 3600, None, reason_pattern=re.compile("^OPS-"))


@pytest.mark.parametrize(
    ("rule", "reason", "code"),
    [
        (PLAIN, None, None),
        (PLAIN, "anything", None),
        (REQUIRED, None, "reason_required"),
        (REQUIRED, "  \n", "reason_required"),
        (REQUIRED, "because", None),
        (TICKET, "because", "reason_invalid"),
        (TICKET, "see OPS-1", "reason_invalid"),
        (TICKET, "INC-42 rollback", None),
        (TICKET, "  OPS-7", None),  # surrounding blanks are not part of the reason
        (PATTERN_ONLY, None, None),
        (PATTERN_ONLY, "nope", "reason_invalid"),
    ],
)
def test_reason_rules(rule: Rule, reason: str | None, code: str | None) -> None:
    problem = reason_problem(rule, reason)
    assert (problem[0] if problem else None) == code


def test_the_invalid_message_names_the_pattern() -> None:
    problem = reason_problem(TICKET, "x")
    assert problem is not None and "'^(OPS|INC)-[0-9]+'" in problem[1]


def test_policy_keys_load_and_a_bad_pattern_is_refused() -> None:
    data = policy_data()
    data["teams"]["platform"]["policy"] = {
        "high": {"require_reason": True, "reason_pattern": "^OPS-", "require_reject_reason": True}
    }
    rule = parse_policy(data).team("platform").rule(RiskLevel.HIGH)
    assert rule.require_reason and rule.require_reject_reason
    assert rule.reason_pattern is not None and rule.reason_pattern.pattern == "^OPS-"
    low = parse_policy(data).team("platform").rule(RiskLevel.LOW)
    assert (low.require_reason, low.reason_pattern, low.require_reject_reason) == (
        False,
        None,
        False,
    )
    data["teams"]["platform"]["policy"]["high"]["reason_pattern"] = "(unclosed"
    with pytest.raises(ConfigError, match=r"policy\.high\.reason_pattern: not a valid regular"):
        parse_policy(data)


def ballot(who: int, decision: str, minutes_ago: float, reason: str | None = None) -> VoteRecord:
    at = NOW - timedelta(minutes=minutes_ago)
    return VoteRecord(who, who, f"u{who}", decision, at, reason=reason)


def test_who_still_owes_a_rejection_reason() -> None:
    votes = [
        ballot(1, "approve", 1),
        ballot(2, "reject", 1),
        ballot(3, "reject", 1, "wrong cluster"),
        ballot(4, "reject", 11),  # past the ten minutes
    ]
    assert awaiting_reason(True, votes, NOW, 600) == {2}
    assert awaiting_reason(False, votes, NOW, 600) == frozenset()


def test_the_callback_waits_only_for_a_required_missing_rejection_reason() -> None:
    missing = [ballot(2, "reject", 1)]
    given = [ballot(2, "reject", 1, "no")]
    assert callback_holds_for_reason(True, "rejected", missing)
    assert not callback_holds_for_reason(True, "rejected", given)
    assert not callback_holds_for_reason(False, "rejected", missing)
    assert not callback_holds_for_reason(True, "approved", [ballot(1, "approve", 1)])
    assert vote_reasons([*given, ballot(1, "approve", 1)]) == [
        {"voter_telegram_id": 2, "voter_name": "u2", "reason": "no"}
    ]


def test_warning_and_escalation_keys_load() -> None:
    data = policy_data()
    data["teams"]["platform"]["policy"] = {
        "high": {"warn_before_seconds": 120, "escalate_to": [1003, -1001000000300]}
    }
    team = parse_policy(data).team("platform")
    assert team.rule(RiskLevel.HIGH).warn_before_seconds == 120
    assert team.rule(RiskLevel.HIGH).escalate_to == (1003, -1001000000300)
    assert team.rule(RiskLevel.LOW).warn_before_seconds is None
    assert team.rule(RiskLevel.LOW).escalate_to == ()
