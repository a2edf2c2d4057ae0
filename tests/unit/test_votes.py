"""Pure vote counting: table tests of tally against the current policy."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from bot.policy import Approver, Rule
from bot.votes import APPROVE, REJECT, Ballot, Decision, tally

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
A, B, C, D, X = 1, 2, 3, 4, 99


@dataclass(frozen=True)
class Req:
    required_approvals: int
    reject_threshold: int = 1
    requester_telegram_id: int | None = None
    expires_at: datetime = NOW + timedelta(hours=1)
    requested_by: str = "ci"


APPROVERS = {
    A: Approver(A, "a", frozenset({"sre"})),
    B: Approver(B, "b", frozenset({"sre", "lead"})),
    C: Approver(C, "c", frozenset()),
    D: Approver(D, "d", frozenset({"dba"})),
}


def rule(required: int = 1, roles: frozenset[str] = frozenset()) -> Rule:
    return Rule(required, 1, 3600, None, roles)


def ballots(*pairs: tuple[int, str]) -> list[Ballot]:
    return [Ballot(v, d) for v, d in pairs]


@pytest.mark.parametrize(
    ("req", "votes", "expected", "approvals", "rejects"),
    [
        (Req(1), [], Decision.PENDING, (), ()),
        (Req(1), [(A, APPROVE)], Decision.APPROVED, (A,), ()),
        (Req(2), [(A, APPROVE)], Decision.PENDING, (A,), ()),
        (Req(2), [(A, APPROVE), (B, APPROVE)], Decision.APPROVED, (A, B), ()),
        # The same voter twice counts once.
        (Req(2), [(A, APPROVE), (A, APPROVE)], Decision.PENDING, (A,), ()),
        # Non-approvers and the requester never count.
        (Req(2), [(A, APPROVE), (X, APPROVE)], Decision.PENDING, (A,), ()),
        (Req(2, 1, A), [(A, APPROVE), (B, APPROVE)], Decision.PENDING, (B,), ()),
        (Req(1, 1, A), [(A, REJECT)], Decision.PENDING, (), ()),
        # reject_threshold both ways.
        (Req(2, 1), [(A, APPROVE), (B, REJECT)], Decision.REJECTED, (A,), (B,)),
        (Req(2, 2), [(A, APPROVE), (B, REJECT)], Decision.PENDING, (A,), (B,)),
        (Req(2, 2), [(A, REJECT), (B, REJECT)], Decision.REJECTED, (), (A, B)),
        (Req(2, 2), [(A, APPROVE), (B, REJECT), (C, APPROVE)], Decision.APPROVED, (A, C), (B,)),
        # Expiry wins.
        (Req(1, 1, None, NOW), [(A, APPROVE)], Decision.EXPIRED, (A,), ()),
    ],
)
def test_tally_table(
    req: Req,
    votes: list[tuple[int, str]],
    expected: Decision,
    approvals: tuple[int, ...],
    rejects: tuple[int, ...],
) -> None:
    out = tally(req, rule(), APPROVERS, ballots(*votes), NOW)
    assert out.decision is expected
    assert out.approvals == approvals and out.rejects == rejects


def test_removed_approver_no_longer_counts() -> None:
    votes = ballots((A, APPROVE), (B, APPROVE))
    assert tally(Req(2), rule(), APPROVERS, votes, NOW).decision is Decision.APPROVED
    current = {k: v for k, v in APPROVERS.items() if k != A}
    out = tally(Req(2), rule(), current, votes, NOW)
    assert out.decision is Decision.PENDING and out.ignored == (A,)


def test_stricter_of_stored_and_current_requirement() -> None:
    votes = ballots((A, APPROVE), (B, APPROVE))
    assert tally(Req(2), rule(3), APPROVERS, votes, NOW).decision is Decision.PENDING
    assert tally(Req(2), rule(1), APPROVERS, votes, NOW).decision is Decision.APPROVED


def test_required_roles() -> None:
    r = rule(2, frozenset({"lead"}))
    out = tally(Req(2), r, APPROVERS, ballots((A, APPROVE), (C, APPROVE)), NOW)
    assert out.decision is Decision.PENDING and out.missing_role
    out = tally(Req(2), r, APPROVERS, ballots((A, APPROVE), (C, APPROVE), (B, APPROVE)), NOW)
    assert out.decision is Decision.APPROVED and out.deciders == (A, C, B)


def test_unknown_decision_is_ignored() -> None:
    out = tally(Req(1), rule(), APPROVERS, ballots((A, "maybe")), NOW)
    assert out.decision is Decision.PENDING and out.ignored == (A,)
