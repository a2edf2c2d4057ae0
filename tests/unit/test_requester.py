"""The requester never counts, named by Telegram id or by an approver's policy name."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from bot.policy import Approver, Rule
from bot.votes import APPROVE, REJECT, Ballot, Decision, tally

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
A, B, C, X = 1, 2, 3, 99
APPROVERS = {
    A: Approver(A, "alice", frozenset()),
    B: Approver(B, "Bob", frozenset()),
    C: Approver(C, "carol", frozenset()),
}


@dataclass(frozen=True)
class Req:
    requested_by: str
    requester_telegram_id: int | None = None
    required_approvals: int = 1
    reject_threshold: int = 1
    expires_at: datetime = NOW + timedelta(hours=1)


@pytest.mark.parametrize(
    ("req", "votes", "decision", "ignored"),
    [
        # By name, whatever the case or surrounding blanks: her own tap does not count.
        (Req("alice"), [(A, APPROVE)], Decision.PENDING, (A,)),
        (Req("ALICE"), [(A, APPROVE)], Decision.PENDING, (A,)),
        (Req(" Alice "), [(A, REJECT)], Decision.PENDING, (A,)),
        (Req("bob"), [(B, APPROVE), (A, APPROVE)], Decision.APPROVED, (B,)),
        # By Telegram id, as before; with both, both are the requester.
        (Req("ci", A), [(A, APPROVE)], Decision.PENDING, (A,)),
        (Req("carol", A), [(A, APPROVE), (C, APPROVE), (B, APPROVE)], Decision.APPROVED, (A, C)),
        # A requester who is no approver changes nothing.
        (Req("ci"), [(A, APPROVE)], Decision.APPROVED, ()),
        (Req("alicex"), [(A, APPROVE)], Decision.APPROVED, ()),
        (Req("deploy-bot", X), [(A, APPROVE)], Decision.APPROVED, ()),
    ],
)
def test_requester_by_name_or_id_never_counts(
    req: Req, votes: list[tuple[int, str]], decision: Decision, ignored: tuple[int, ...]
) -> None:
    out = tally(req, Rule(1, 1, 3600, None), APPROVERS, [Ballot(v, d) for v, d in votes], NOW)
    assert out.decision is decision
    assert out.ignored == ignored
