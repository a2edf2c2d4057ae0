"""The policy engine's one pure decision: votes, trust, auto-approve and deny rules,
break-glass and step-up confirmations, judged together (bot.votes.tally counts the votes)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime
from fnmatch import fnmatchcase
from typing import Protocol
from zoneinfo import ZoneInfo

from bot.policy import RISK_ORDER, Matcher, RiskLevel, Team
from bot.votes import APPROVE, Ballot, Decision, Outcome, Subject, requesters, tally

# A target's ids (runs of hex holding a digit, e.g. a pod hash) and numbers become `*`, so
# that `nginx-frontend-7f9c4d-2` and `nginx-frontend-81ab3e-5` share one pattern.
_HEX_ID = re.compile(r"(?<![A-Za-z0-9])(?=[A-Fa-f]*[0-9])[0-9A-Fa-f]+(?![A-Za-z0-9])")
_DIGITS = re.compile(r"[0-9]+")
PATTERN_MAX = 512


class Asked(Subject, Protocol):
    """What decide needs to know of a request (the repository record satisfies it)."""

    @property
    def action(self) -> str: ...
    @property
    def target(self) -> str: ...
    @property
    def risk_level(self) -> str: ...


@dataclass(frozen=True, slots=True)
class GlassAsk:
    """An approver asking to break the glass: who, why, and how often the team did today."""

    by: int
    reason: str
    used_today: int


def trust_pattern(trust_key: str, action: str, target: str) -> str:
    """The action pattern a request's trust is kept under, as the team's `trust_key` derives
    it: the action alone, or `action:target` with ids and numbers in the target masked."""
    if trust_key == "action":
        return action[:PATTERN_MAX]
    masked = _DIGITS.sub("*", _HEX_ID.sub("*", target))
    return f"{action}:{masked}"[:PATTERN_MAX]


def _glob(patterns: tuple[str, ...], value: str) -> bool:
    return any(fnmatchcase(value, p) for p in patterns)


def matches(rule: Matcher, request: Asked, team: Team, now: datetime) -> bool:
    """Whether a deny or auto_approve rule's matchers (not its risk or trust) hold."""
    if not (_glob(rule.actions, request.action) and _glob(rule.targets, request.target)):
        return False
    if rule.requesters:
        who = {str(i) for i in requesters(request, team.approvers)}
        who.add(request.requested_by.strip().casefold())
        if not who & rule.requesters:
            return False
    if rule.hours is not None:
        local = now.astimezone(ZoneInfo(team.timezone or "UTC"))
        return rule.hours.contains(local)
    return True


def auto_allows(rule: Matcher, risk: RiskLevel, trust: int) -> bool:
    """An auto_approve rule's own limits: its risk (critical only with allow_critical) and
    the minimum trust score."""
    if rule.max_risk is None or RISK_ORDER[risk] > RISK_ORDER[rule.max_risk]:
        return False
    if risk is RiskLevel.CRITICAL and not rule.allow_critical:
        return False
    return trust >= rule.min_trust_score


def trust_lowers(team: Team, risk: RiskLevel, trust: int) -> bool:
    """Whether the level's `trust_lowers_at` takes one approval off (critical only if the
    level allows it)."""
    rule = team.rule(risk)
    if rule.trust_lowers_at is None or trust < rule.trust_lowers_at:
        return False
    return risk is not RiskLevel.CRITICAL or rule.allow_critical


def glass_refusal(team: Team, ask: GlassAsk) -> str | None:
    """Why this approver may not break the glass now; None when they may."""
    glass = team.break_glass
    approver = team.approvers.get(ask.by)
    if glass is None:
        return f"team {team.name} has no break_glass"
    if approver is None or not approver.roles & glass.roles:
        return f"break-glass needs the role {', '.join(sorted(glass.roles))}"
    if ask.used_today >= glass.max_per_day:
        return f"break-glass was used {ask.used_today} times today (max_per_day)"
    if glass.require_reason and not ask.reason.strip():
        return "break-glass needs a reason"
    return None


def decide(
    request: Asked,
    team: Team,
    trust: int,
    votes: Iterable[Ballot],
    confirmations: frozenset[int],
    now: datetime,
    *,
    glass: GlassAsk | None = None,
    intake: bool = False,
) -> Outcome:
    """How a request stands under its team's policy, with the reason in words.

    Expiry first, then a rejection, then break-glass, then (at `intake` only: rules decide
    as a request arrives, never later behind its voters' backs) deny rules, which always
    win, and auto_approve rules in order; then the votes. Under `step_up` an approval
    counts once its voter is in `confirmations`. The requester's vote never counts (tally).
    """
    risk = RiskLevel(request.risk_level)
    rule = team.rule(risk)
    ballots = list(votes)
    pending_ids: tuple[int, ...] = ()
    if rule.step_up is not None:
        pending_ids = tuple(
            b.voter_telegram_id
            for b in ballots
            if b.decision == APPROVE and b.voter_telegram_id not in confirmations
        )
        ballots = [b for b in ballots if b.voter_telegram_id not in pending_ids]
    lowered = trust_lowers(team, risk, trust)
    out = tally(request, rule, team.approvers, ballots, now, lower_by=int(lowered))
    asked = requesters(request, team.approvers)
    unconfirmed = tuple(v for v in pending_ids if v in team.approvers and v not in asked)
    deny = next((d for d in team.deny if matches(d, request, team, now)), None)
    out = replace(
        out,
        trust=trust,
        lowered=lowered,
        unconfirmed=unconfirmed,
        waiting=tuple(w for w in out.waiting if w not in pending_ids),
        deny_rule=deny.name if deny else None,
    )
    if out.decision is not Decision.PENDING:
        return replace(out, reason=_closed_reason(out))
    if glass is not None:
        refused = glass_refusal(team, glass)
        if refused is None:
            name = team.approvers[glass.by].name
            return replace(
                out, decision=Decision.APPROVED, glass_by=glass.by, reason=f"break-glass by {name}"
            )
        return replace(out, reason=f"break-glass refused: {refused}")
    if intake and not ballots and not pending_ids and deny is None:
        for auto in team.auto_approve:
            if auto_allows(auto, risk, trust) and matches(auto, request, team, now):
                reason = f"auto-approved by rule {auto.name} (trust {trust})"
                return replace(out, decision=Decision.APPROVED, auto_rule=auto.name, reason=reason)
    return replace(out, reason=_pending_reason(out, team))


def _closed_reason(out: Outcome) -> str:
    if out.decision is Decision.EXPIRED:
        return "expired"
    if out.decision is Decision.REJECTED:
        return f"rejected ({len(out.rejects)}/{out.reject_threshold} rejects)"
    lowered = ", one less for trust" if out.lowered else ""
    return f"approved ({len(out.approvals)}/{out.required} approvals{lowered})"


def _pending_reason(out: Outcome, team: Team) -> str:
    if out.unconfirmed:
        names = ", ".join(team.approvers[v].name for v in out.unconfirmed)
        why = f"awaiting confirmation of {names}"
    elif out.missing_role:
        why = "needs an approval by a required role"
    else:
        why = f"needs {out.required - len(out.approvals)} more"
    if out.deny_rule is not None:
        return f"deny rule {out.deny_rule} matched: {why}"
    return why
