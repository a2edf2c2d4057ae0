"""Whether a request can ever be approved: who could vote, against what the rule needs."""

from __future__ import annotations

import pytest

from bot.policy import Approver, Rule
from bot.votes import reach, unreachable_reason

A, B, C = 1, 2, 3
APPROVERS = {
    A: Approver(A, "Alice", frozenset({"sre"})),
    B: Approver(B, "bob", frozenset({"sre", "lead"})),
    C: Approver(C, "carol", frozenset()),
}


def rule(required: int, roles: frozenset[str] = frozenset()) -> Rule:
    return Rule(required, 1, 3600, None, roles)


@pytest.mark.parametrize(
    ("required", "roles", "requester_id", "requester_name", "voters", "reachable"),
    [
        (1, frozenset(), None, None, 3, True),
        (3, frozenset(), None, None, 3, True),
        (4, frozenset(), None, None, 3, False),
        (3, frozenset(), A, None, 2, False),  # the requester never counts
        (2, frozenset(), A, None, 2, True),
        (3, frozenset(), None, "alice", 2, False),  # matched by policy name, any case
        (3, frozenset(), None, "ALICE", 2, False),
        (3, frozenset(), None, "ci", 3, True),
        (3, frozenset(), 999, None, 3, True),  # a requester who is no approver
        (2, frozenset({"lead"}), None, None, 3, True),  # one lead among the approvals
        (2, frozenset({"lead"}), B, None, 2, False),  # the only lead asked
        (2, frozenset({"lead"}), None, "Bob", 2, False),
        (1, frozenset({"dba"}), None, None, 3, False),  # a role nobody holds
        (1, frozenset({"dba", "sre"}), None, None, 3, True),  # any of the roles
    ],
)
def test_reach(
    required: int,
    roles: frozenset[str],
    requester_id: int | None,
    requester_name: str | None,
    voters: int,
    reachable: bool,
) -> None:
    r = rule(required, roles)
    got = reach(r, APPROVERS, requester_telegram_id=requester_id, requester_name=requester_name)
    assert got.voters == voters
    assert got.reachable is reachable
    assert (unreachable_reason(r, got) is None) is reachable


def test_reasons_name_the_counts() -> None:
    r = rule(3)
    got = reach(r, APPROVERS, requester_telegram_id=A)
    assert unreachable_reason(r, got) == (
        "3 approvals needed but only 2 approvers besides the requester could vote"
    )
    r = rule(1, frozenset({"dba"}))
    assert unreachable_reason(r, reach(r, APPROVERS)) == (
        "3 approvers could vote but none holds a required role (dba)"
    )
    r = rule(2)
    one = {A: APPROVERS[A]}
    assert (
        unreachable_reason(r, reach(r, one)) == "2 approvals needed but only 1 approver could vote"
    )
