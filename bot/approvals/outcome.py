"""How a stored request stands: its votes tallied under its team's current rule."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
from typing import Protocol

from bot.policy import RiskLevel, Rule, Team
from bot.rules import Asked, GlassAsk, decide
from bot.runtime import Runtime
from bot.votes import Ballot, Outcome
from storage import approvals as repo
from storage import votes as vote_repo


class Judged(Asked, Protocol):
    """What judging a request needs of it: decide's fields, its team and its trust score (the
    repository's record and the plain vote's storage.votes.PlainRequest satisfy it)."""

    @property
    def team_id(self) -> int: ...
    @property
    def trust_score(self) -> int: ...


def judge(
    rt: Runtime,
    req: Judged,
    ballots: Sequence[Ballot],
    confirmed: frozenset[int],
    now: datetime,
    *,
    glass: GlassAsk | None = None,
    intake: bool = False,
) -> Outcome:
    """bot.rules.decide under the team's current policy, with the trust score the request was
    created with; a team gone from the policy file keeps the thresholds stored with it."""
    team = rt.team(req.team_id)
    if team is None:
        rule = Rule(req.required_approvals, req.reject_threshold, 0, None)
        team = Team("?", (), {}, dict.fromkeys(RiskLevel, rule))
    return decide(req, team, req.trust_score, ballots, confirmed, now, glass=glass, intake=intake)


def outcome_of(
    rt: Runtime,
    req: repo.RequestRecord,
    votes: Sequence[vote_repo.VoteRecord],
    now: datetime,
    *,
    glass: GlassAsk | None = None,
    intake: bool = False,
    confirmed: frozenset[int] | None = None,
) -> Outcome:
    """How a stored request stands (judge), and how it was closed if it is. `confirmed`: the
    voters whose step-up approval is confirmed, when `votes` do not say (a tap reads them
    separately, only under step-up)."""
    ballots = [Ballot(v.voter_telegram_id, v.decision) for v in votes]
    if confirmed is None:
        confirmed = frozenset(v.voter_telegram_id for v in votes if v.confirmed_at is not None)
    outcome = judge(rt, req, ballots, confirmed, now, glass=glass, intake=intake)
    if req.pending:
        return outcome
    return replace(outcome, reason=closed_reason(req))


def closed_reason(req: repo.RequestRecord) -> str:
    """How a closed request was decided, from what was stored when it was."""
    if req.revoked_at is not None:
        return f"revoked by {req.revoked_by}"
    if req.auto_rule is not None:
        return f"auto-approved by rule {req.auto_rule} (trust {req.trust_score})"
    names = ", ".join(str(d.get("name", d.get("id"))) for d in req.decided_by or [])
    if req.break_glass_reason is not None:
        return f"break-glass by {names}"
    return f"{req.status} by {names}" if names else req.status


def waiting_names(rt: Runtime, req: repo.RequestRecord, outcome: Outcome) -> list[str]:
    """The names of the approvers the card says it is waiting for (Outcome.waiting)."""
    team = rt.team(req.team_id)
    if team is None:
        return []
    return [team.approvers[i].name for i in outcome.waiting if i in team.approvers]
