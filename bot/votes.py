"""Pure vote counting: who counts, how many are needed, and whether a request is decided."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Protocol

from bot.policy import Approver, Rule

APPROVE = "approve"
REJECT = "reject"


class Decision(StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"
    EXPIRED = "expired"


@dataclass(frozen=True, slots=True)
class Ballot:
    voter_telegram_id: int
    decision: str  # "approve" | "reject"


class Subject(Protocol):
    """What tally needs to know about a request (the repository record satisfies it)."""

    @property
    def required_approvals(self) -> int: ...
    @property
    def reject_threshold(self) -> int: ...
    @property
    def requester_telegram_id(self) -> int | None: ...
    @property
    def requested_by(self) -> str: ...
    @property
    def expires_at(self) -> datetime: ...


@dataclass(frozen=True, slots=True)
class Outcome:
    decision: Decision
    required: int
    reject_threshold: int
    approvals: tuple[int, ...]  # eligible approvers who approved, in vote order
    rejects: tuple[int, ...]  # eligible approvers who rejected, in vote order
    ignored: tuple[int, ...]  # votes that do not count (removed approver, requester)
    missing_role: bool  # enough approvals, but none by a required role
    # Eligible approvers who have not voted yet, in policy order; once only a required role is
    # missing, just those holding one (nobody else can move the request any more).
    waiting: tuple[int, ...] = ()
    # What bot.rules.decide adds: why, in words, and which rule or person decided it.
    reason: str = ""
    auto_rule: str | None = None  # the auto_approve rule that approved it
    deny_rule: str | None = None  # the deny rule that keeps it for human votes
    trust: int = 0  # the action pattern's trust score it was judged with
    lowered: bool = False  # trust took one approval off the level's count
    glass_by: int | None = None  # the approver who broke the glass
    unconfirmed: tuple[int, ...] = ()  # approvals awaiting their step-up confirmation

    @property
    def decided(self) -> bool:
        return self.decision is not Decision.PENDING

    @property
    def deciders(self) -> tuple[int, ...]:
        if self.glass_by is not None:
            return (self.glass_by,)
        if self.decision is Decision.APPROVED:
            return self.approvals
        if self.decision is Decision.REJECTED:
            return self.rejects
        return ()


def name_key(name: str) -> str:
    """A name as requesters compares it (stored with each request for the plain vote)."""
    return name.strip().casefold()


def requesters(request: Subject, approvers: Mapping[int, Approver]) -> frozenset[int]:
    """The approvers who asked for a request: its requester's Telegram id if given, and any
    approver whose policy name is its `requested_by` (ignoring case and blanks). The id is
    optional for the client, so the name alone must also keep a requester from approving."""
    name = name_key(request.requested_by)
    ids = {a.telegram_id for a in approvers.values() if name_key(a.name) == name}
    if request.requester_telegram_id is not None:
        ids.add(request.requester_telegram_id)
    return frozenset(ids)


def requester_id(request: Subject, approvers: Mapping[int, Approver]) -> int | None:
    """The one person to tell about the request and let withdraw it: the Telegram id given,
    else the approver its `requested_by` names; None when neither is known."""
    if request.requester_telegram_id is not None:
        return request.requester_telegram_id
    name = name_key(request.requested_by)
    return next((a.telegram_id for a in approvers.values() if name_key(a.name) == name), None)


def counts(voter: int, asked: frozenset[int], approvers: Mapping[int, Approver]) -> bool:
    """Whether this person's vote counts: a current approver who did not ask for the request
    (`asked` is `requesters(request, approvers)`)."""
    return voter in approvers and voter not in asked


def _sort_ballots(
    votes: Iterable[Ballot], asked: frozenset[int], approvers: Mapping[int, Approver]
) -> tuple[set[int], list[int], list[int], list[int]]:
    """(everyone who voted, counted approvals, counted rejects, votes that do not count)."""
    seen: set[int] = set()
    approvals: list[int] = []
    rejects: list[int] = []
    ignored: list[int] = []
    for ballot in votes:
        voter = ballot.voter_telegram_id
        if voter in seen:
            continue  # the database keeps one vote per voter; be safe anyway
        seen.add(voter)
        if not counts(voter, asked, approvers):
            ignored.append(voter)
        elif ballot.decision == APPROVE:
            approvals.append(voter)
        elif ballot.decision == REJECT:
            rejects.append(voter)
        else:
            ignored.append(voter)
    return seen, approvals, rejects, ignored


def tally(
    request: Subject,
    rule: Rule,
    approvers: Mapping[int, Approver],
    votes: Iterable[Ballot],
    now: datetime,
    *,
    lower_by: int = 0,
) -> Outcome:
    """Count the votes of a pending request against the CURRENT policy.

    `approvers` is the team's approver list as it is now: a vote by someone since removed no
    longer counts, and the requester's vote never does. The stricter of the stored and the
    current approval count applies, so editing the policy can never weaken a pending request
    (only trust may, by `lower_by`, and never below one approval).
    Expiry wins over everything: at or past expires_at nothing can be decided any more.
    """
    required = max(1, max(request.required_approvals, rule.required_approvals) - lower_by)
    reject_threshold = request.reject_threshold
    asked = requesters(request, approvers)
    seen, approvals, rejects, ignored = _sort_ballots(votes, asked, approvers)
    role_ok = not rule.required_roles or any(
        approvers[v].roles & rule.required_roles for v in approvals
    )
    missing_role = len(approvals) >= required and not role_ok
    waiting = tuple(
        who
        for who, a in approvers.items()
        if who not in seen
        and counts(who, asked, approvers)
        and (not missing_role or a.roles & rule.required_roles)
    )
    if now >= request.expires_at:
        decision = Decision.EXPIRED
    elif len(rejects) >= reject_threshold:
        decision = Decision.REJECTED
    elif len(approvals) >= required and role_ok:
        decision = Decision.APPROVED
    else:
        decision = Decision.PENDING
    return Outcome(
        decision=decision,
        required=required,
        reject_threshold=reject_threshold,
        approvals=tuple(approvals),
        rejects=tuple(rejects),
        ignored=tuple(ignored),
        missing_role=missing_role,
        waiting=waiting,
    )


@dataclass(frozen=True, slots=True)
class Reach:
    """Whether a rule can ever be met by a team's approvers (as `tally` counts them)."""

    needed: int
    voters: int  # approvers whose vote would count
    role_holders: int  # of those, holders of a required role (all of them if none is required)
    requester_excluded: bool

    @property
    def reachable(self) -> bool:
        return self.voters >= self.needed and self.role_holders > 0


def reach(
    rule: Rule,
    approvers: Mapping[int, Approver],
    *,
    requester_telegram_id: int | None = None,
    requester_name: str | None = None,
) -> Reach:
    """Count who could vote on a request under `rule`: never the requester, who is matched
    by Telegram id or by an approver's policy name (case-insensitive)."""
    name = requester_name.casefold() if requester_name is not None else None
    voters = [
        a
        for a in approvers.values()
        if a.telegram_id != requester_telegram_id and a.name.casefold() != name
    ]
    holders = [a for a in voters if not rule.required_roles or a.roles & rule.required_roles]
    return Reach(
        needed=rule.required_approvals,
        voters=len(voters),
        role_holders=len(holders),
        requester_excluded=len(voters) < len(approvers),
    )


def unreachable_reason(rule: Rule, r: Reach) -> str | None:
    """Why no set of votes can ever approve, in words; None when some set can."""
    if r.voters < r.needed:
        who = "approver" if r.voters == 1 else "approvers"
        besides = " besides the requester" if r.requester_excluded else ""
        return f"{r.needed} approvals needed but only {r.voters} {who}{besides} could vote"
    if r.role_holders == 0:
        roles = ", ".join(sorted(rule.required_roles))
        return f"{r.voters} approvers could vote but none holds a required role ({roles})"
    return None
