"""The policy engine's one decision (bot.rules.decide): every rule interaction in a table,
and its invariants as Hypothesis properties."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.hours import parse_hours
from bot.policy import (
    Approver,
    BreakGlass,
    Matcher,
    RiskLevel,
    Rule,
    Team,
    parse_policy,
)
from bot.rules import GlassAsk, decide, trust_pattern
from bot.settings import ConfigError
from bot.votes import APPROVE, REJECT, Ballot, Decision

# A Wednesday, 10:00 UTC (11:00 in Berlin).
NOW = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
A, B, C, L = 1, 2, 3, 4


@dataclass(frozen=True)
class Req:
    action: str = "restart"
    target: str = "prod/api"
    risk_level: str = "medium"
    required_approvals: int = 1
    reject_threshold: int = 1
    requester_telegram_id: int | None = None
    requested_by: str = "ci"
    expires_at: datetime = NOW + timedelta(hours=1)


APPROVERS = {
    A: Approver(A, "alice", frozenset({"sre"})),
    B: Approver(B, "bob", frozenset({"sre"})),
    C: Approver(C, "carol", frozenset()),
    L: Approver(L, "lena", frozenset({"lead"})),
}


def team(**over: Any) -> Team:
    rules = {
        level: Rule(1 if level in ("low", "medium") else 2, 1, 3600, None) for level in RiskLevel
    }
    rules.update(over.pop("rules", {}))
    base = Team("platform", (), APPROVERS, rules, timezone="Europe/Berlin")
    return replace(base, **over)


def auto(name: str = "routine", **over: Any) -> Matcher:
    return Matcher(name, max_risk=over.pop("max_risk", RiskLevel.MEDIUM), **over)


def deny(name: str = "no-db", **over: Any) -> Matcher:
    return Matcher(name, **over)


def votes(*pairs: tuple[int, str]) -> list[Ballot]:
    return [Ballot(v, d) for v, d in pairs]


GLASS = BreakGlass(frozenset({"lead"}), require_reason=True, max_per_day=3)

BERLIN_11 = parse_hours("Wed 11:00-12:00")
BERLIN_10 = parse_hours("Wed 10:00-11:00")
WEEKEND = parse_hours("Sat-Sun 00:00-24:00")
STEP_UP = {RiskLevel.MEDIUM: Rule(1, 1, 3600, None, step_up="private")}
HIGH_TRUST = {RiskLevel.HIGH: Rule(2, 1, 3600, None, trust_lowers_at=10)}
CRIT_TRUST = {RiskLevel.CRITICAL: Rule(2, 1, 3600, None, trust_lowers_at=1)}
CRIT_TRUST_OK = {RiskLevel.CRITICAL: Rule(2, 1, 3600, None, trust_lowers_at=1, allow_critical=True)}
HIGH = Req(risk_level="high", required_approvals=2)
CRITICAL = Req(risk_level="critical", required_approvals=2)
AUTO = "auto-approved by rule routine (trust 0)"


def case(
    name: str,
    decision: Decision,
    reason: str,
    t: Team | None = None,
    req: Req = Req(),
    *,
    trust: int = 0,
    ballots: tuple[tuple[int, str], ...] = (),
    confirmed: frozenset[int] = frozenset(),
    glass: GlassAsk | None = None,
) -> Any:
    args = (t or team(), req, trust, votes(*ballots), confirmed, glass, decision, reason)
    return pytest.param(*args, id=name)


P, AP, R, E = Decision.PENDING, Decision.APPROVED, Decision.REJECTED, Decision.EXPIRED
ONE_MORE = "needs 1 more"
CASES = [
    case("no rules: one more", P, ONE_MORE),
    case("a vote approves", AP, "approved (1/1 approvals)", ballots=((A, APPROVE),)),
    case("a reject rejects", R, "rejected (1/1 rejects)", ballots=((A, REJECT),)),
    case("auto rule approves", AP, AUTO, team(auto_approve=(auto(),))),
    case(
        "deny wins over auto",
        P,
        "deny rule no-db matched: needs 1 more",
        team(auto_approve=(auto(),), deny=(deny(targets=("prod/*",)),)),
    ),
    case("deny elsewhere", AP, AUTO, team(auto_approve=(auto(),), deny=(deny(targets=("db/*",)),))),
    case("auto above max_risk", P, ONE_MORE, team(auto_approve=(auto(max_risk=RiskLevel.LOW),))),
    case("auto needs trust", P, ONE_MORE, team(auto_approve=(auto(min_trust_score=5),)), trust=4),
    case(
        "auto with trust",
        AP,
        "auto-approved by rule routine (trust 5)",
        team(auto_approve=(auto(min_trust_score=5),)),
        trust=5,
    ),
    case("auto action glob", P, ONE_MORE, team(auto_approve=(auto(actions=("scale *",)),))),
    case(
        "auto requester by name", AP, AUTO, team(auto_approve=(auto(requesters=frozenset({"ci"})),))
    ),
    case(
        "auto requester by id",
        AP,
        AUTO,
        team(auto_approve=(auto(requesters=frozenset({"1"})),)),
        Req(requested_by="alice"),
    ),
    case(
        "auto other requester",
        P,
        ONE_MORE,
        team(auto_approve=(auto(requesters=frozenset({"deployer"})),)),
    ),
    case("auto in Berlin hours", AP, AUTO, team(auto_approve=(auto(hours=BERLIN_11),))),
    case("auto out of Berlin hours", P, ONE_MORE, team(auto_approve=(auto(hours=BERLIN_10),))),
    case("deny only in hours", AP, AUTO, team(auto_approve=(auto(),), deny=(deny(hours=WEEKEND),))),
    case(
        "critical never without allow",
        P,
        "needs 2 more",
        team(auto_approve=(auto(max_risk=RiskLevel.CRITICAL),)),
        CRITICAL,
    ),
    case(
        "critical with allow",
        AP,
        AUTO,
        team(auto_approve=(auto(max_risk=RiskLevel.CRITICAL, allow_critical=True),)),
        CRITICAL,
    ),
    case(
        "trust lowers high",
        AP,
        "approved (1/1 approvals, one less for trust)",
        team(rules=HIGH_TRUST),
        HIGH,
        trust=10,
        ballots=((A, APPROVE),),
    ),
    case(
        "trust below the mark",
        P,
        ONE_MORE,
        team(rules=HIGH_TRUST),
        HIGH,
        trust=9,
        ballots=((A, APPROVE),),
    ),
    case(
        "trust never below one",
        P,
        ONE_MORE,
        team(rules={RiskLevel.MEDIUM: Rule(1, 1, 3600, None, trust_lowers_at=1)}),
        trust=50,
    ),
    case(
        "trust not on critical",
        P,
        ONE_MORE,
        team(rules=CRIT_TRUST),
        CRITICAL,
        trust=50,
        ballots=((A, APPROVE),),
    ),
    case(
        "trust on critical if allowed",
        AP,
        "approved (1/1 approvals, one less for trust)",
        team(rules=CRIT_TRUST_OK),
        CRITICAL,
        trust=50,
        ballots=((A, APPROVE),),
    ),
    case(
        "requester's vote never counts",
        P,
        ONE_MORE,
        req=Req(requester_telegram_id=A),
        ballots=((A, APPROVE),),
    ),
    case(
        "votes, no auto after intake",
        P,
        ONE_MORE,
        team(auto_approve=(auto(),)),
        Req(required_approvals=2),
        ballots=((A, APPROVE),),
    ),
    case(
        "break-glass by a lead",
        AP,
        "break-glass by lena",
        team(break_glass=GLASS),
        CRITICAL,
        glass=GlassAsk(L, "db down", 0),
    ),
    case(
        "break-glass on own request",
        AP,
        "break-glass by lena",
        team(break_glass=GLASS),
        Req(requester_telegram_id=L),
        glass=GlassAsk(L, "db down", 0),
    ),
    case(
        "break-glass over the limit",
        P,
        "break-glass refused: break-glass was used 3 times today (max_per_day)",
        team(break_glass=GLASS),
        glass=GlassAsk(L, "db down", 3),
    ),
    case(
        "break-glass without role",
        P,
        "break-glass refused: break-glass needs the role lead",
        team(break_glass=GLASS),
        glass=GlassAsk(A, "db down", 0),
    ),
    case(
        "break-glass without reason",
        P,
        "break-glass refused: break-glass needs a reason",
        team(break_glass=GLASS),
        glass=GlassAsk(L, "  ", 0),
    ),
    case(
        "break-glass not configured",
        P,
        "break-glass refused: team platform has no break_glass",
        glass=GlassAsk(L, "x", 0),
    ),
    case(
        "break-glass after rejection",
        R,
        "rejected (1/1 rejects)",
        team(break_glass=GLASS),
        ballots=((A, REJECT),),
        glass=GlassAsk(L, "x", 0),
    ),
    case(
        "step-up waits",
        P,
        "awaiting confirmation of alice",
        team(rules=STEP_UP),
        ballots=((A, APPROVE),),
    ),
    case(
        "step-up confirmed",
        AP,
        "approved (1/1 approvals)",
        team(rules=STEP_UP),
        ballots=((A, APPROVE),),
        confirmed=frozenset({A}),
    ),
    case(
        "step-up: rejects need none",
        R,
        "rejected (1/1 rejects)",
        team(rules=STEP_UP),
        ballots=((A, REJECT),),
    ),
    case(
        "expiry wins",
        E,
        "expired",
        team(auto_approve=(auto(),)),
        Req(expires_at=NOW),
        ballots=((A, APPROVE),),
    ),
]


@pytest.mark.parametrize(
    ("t", "req", "trust", "ballots", "confirmed", "glass", "decision", "reason"), CASES
)
def test_decide_table(
    t: Team,
    req: Req,
    trust: int,
    ballots: list[Ballot],
    confirmed: frozenset[int],
    glass: GlassAsk | None,
    decision: Decision,
    reason: str,
) -> None:
    out = decide(req, t, trust, ballots, confirmed, NOW, glass=glass, intake=not ballots)
    assert (out.decision, out.reason) == (decision, reason)


def test_deciders_of_auto_and_break_glass() -> None:
    approved = decide(Req(), team(auto_approve=(auto(),)), 3, [], frozenset(), NOW, intake=True)
    assert (approved.auto_rule, approved.deciders, approved.trust) == ("routine", (), 3)
    glass = decide(
        Req(), team(break_glass=GLASS), 0, [], frozenset(), NOW, glass=GlassAsk(L, "x", 0)
    )
    assert (glass.glass_by, glass.deciders) == (L, (L,))


def test_auto_rules_only_at_intake() -> None:
    out = decide(Req(), team(auto_approve=(auto(),)), 0, [], frozenset(), NOW)
    assert (out.decision, out.auto_rule) == (Decision.PENDING, None)


def test_unconfirmed_voter_is_not_waited_for() -> None:
    t = team(rules={RiskLevel.MEDIUM: Rule(1, 1, 3600, None, step_up="private")})
    out = decide(Req(), t, 0, votes((A, APPROVE)), frozenset(), NOW)
    assert out.unconfirmed == (A,) and A not in out.waiting and out.approvals == ()


@pytest.mark.parametrize(
    ("key", "action", "target", "pattern"),
    [
        ("action", "delete", "nginx-frontend-7f9c4d", "delete"),
        ("action+target", "delete", "nginx-frontend-7f9c4d", "delete:nginx-frontend-*"),
        ("action+target", "delete", "nginx-frontend-81ab3e", "delete:nginx-frontend-*"),
        ("action+target", "restart", "prod/api", "restart:prod/api"),
        ("action+target", "restart", "db-12/replica3", "restart:db-*/replica*"),
        ("action+target", "drop", "users_2024", "drop:users_*"),
        ("action+target", "scale", "cafe", "scale:cafe"),  # a word, not an id
    ],
)
def test_trust_pattern(key: str, action: str, target: str, pattern: str) -> None:
    assert trust_pattern(key, action, target) == pattern


@pytest.mark.parametrize(
    ("text", "inside", "outside"),
    [
        ("Mon-Fri 09:00-18:00", datetime(2026, 11, 25, 9, 0), datetime(2026, 11, 25, 18, 0)),
        ("Fri-Mon 00:00-24:00", datetime(2026, 11, 30, 23, 59), datetime(2026, 11, 25, 12, 0)),
        (
            "Sat,Sun 10:00-12:00; Wed 07:00-08:00",
            datetime(2026, 11, 25, 7, 30),
            datetime(2026, 11, 28, 12, 0),
        ),
    ],
)
def test_hours(text: str, inside: datetime, outside: datetime) -> None:
    hours = parse_hours(text)
    assert hours.contains(inside) and not hours.contains(outside)


@pytest.mark.parametrize(
    "text",
    ["Mon-Fri", "Mon-Fri 9:00-18:00", "Mox 09:00-10:00", "Mon 18:00-09:00", "Mon 25:00-26:00", ""],
)
def test_malformed_hours_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match=r"hours|day|time of day"):
        parse_hours(text)


BASE_POLICY: dict[str, Any] = {
    "teams": {
        "platform": {
            "approvers": [
                {"telegram_id": 1, "name": "alice", "roles": ["sre"]},
                {"telegram_id": 2, "name": "bob", "roles": ["lead"]},
            ]
        }
    }
}


def with_team(**keys: Any) -> dict[str, Any]:
    team_table = {**BASE_POLICY["teams"]["platform"], **keys}
    return {"teams": {"platform": team_table}}


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ({"auto_approve": [{"name": "x", "max_risk": "critical"}]}, "allow_critical"),
        ({"break_glass": {"roles": ["captain"]}}, "no approver holds captain"),
        ({"deny": [{"name": "x", "hours": "weekdays"}]}, "malformed hours"),
        ({"deny": [{"name": "x"}], "auto_approve": [{"name": "x"}]}, "appears twice"),
        ({"timezone": "Mars/Olympus"}, "unknown timezone"),
    ],
)
def test_contradictory_rules_are_refused(keys: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_policy(with_team(**keys))


def test_rules_load_from_the_policy() -> None:
    policy = parse_policy(
        {
            "timezone": "Europe/Berlin",
            **with_team(
                trust_key="action",
                auto_approve=[{"name": "r", "actions": ["restart"], "requesters": ["ci", 7]}],
                deny=[{"name": "d", "targets": ["db/*"], "hours": "Mon-Fri 09:00-18:00"}],
                break_glass={"roles": ["lead"], "max_per_day": 2},
                policy={"high": {"trust_lowers_at": 10}},
            ),
        }
    )
    t = policy.team("platform")
    assert t.timezone == "Europe/Berlin" and t.trust_key == "action"
    assert t.auto_approve[0].requesters == frozenset({"ci", "7"})
    assert t.deny[0].hours is not None and t.break_glass == BreakGlass(frozenset({"lead"}), True, 2)
    assert t.rule(RiskLevel.HIGH).trust_lowers_at == 10


# ---------------------------------------------------------------- properties

risks = st.sampled_from(list(RiskLevel))
globs = st.sampled_from(["*", "restart", "re*", "scale", "prod/*", "db/*"])
matchers = st.builds(
    Matcher,
    name=st.sampled_from(["m1", "m2", "m3"]),
    actions=st.tuples(globs),
    targets=st.tuples(globs),
    max_risk=st.one_of(st.none(), risks),
    allow_critical=st.booleans(),
    min_trust_score=st.integers(0, 12),
)
rules = st.builds(
    Rule,
    required_approvals=st.integers(1, 4),
    reject_threshold=st.integers(1, 3),
    ttl_seconds=st.just(3600),
    escalate_after_seconds=st.none(),
    trust_lowers_at=st.one_of(st.none(), st.integers(1, 12)),
    allow_critical=st.booleans(),
    step_up=st.sampled_from([None, "private"]),
)
teams = st.builds(
    lambda levels, autos, denies, glass: team(
        rules=dict(zip(RiskLevel, levels, strict=True)),
        auto_approve=tuple(autos),
        deny=tuple(denies),
        break_glass=glass,
    ),
    st.lists(rules, min_size=4, max_size=4),
    st.lists(matchers, max_size=3),
    st.lists(matchers, max_size=2),
    st.one_of(
        st.none(),
        st.builds(BreakGlass, st.just(frozenset({"lead"})), st.booleans(), st.integers(1, 4)),
    ),
)
requests = st.builds(
    Req,
    action=st.sampled_from(["restart", "scale", "drop"]),
    target=st.sampled_from(["prod/api", "db/users", "staging/x"]),
    risk_level=risks.map(str),
    required_approvals=st.integers(1, 4),
    requester_telegram_id=st.one_of(st.none(), st.sampled_from([A, B, C, L])),
)
ballot_lists = st.lists(
    st.builds(Ballot, st.sampled_from([A, B, C, L, 99]), st.sampled_from([APPROVE, REJECT])),
    max_size=6,
)
glasses = st.one_of(
    st.none(),
    st.builds(
        GlassAsk, st.sampled_from([A, L]), st.sampled_from(["", "db down"]), st.integers(0, 6)
    ),
)
now_times = st.integers(0, 7 * 24 * 60).map(lambda m: NOW + timedelta(minutes=m))


@settings(max_examples=400, deadline=None)
@given(
    teams,
    requests,
    st.integers(0, 20),
    ballot_lists,
    st.frozensets(st.sampled_from([A, B, C, L])),
    glasses,
    now_times,
    st.booleans(),
)
def test_decide_invariants(
    t: Team,
    req: Req,
    trust: int,
    ballots: list[Ballot],
    confirmed: frozenset[int],
    glass: GlassAsk | None,
    now: datetime,
    intake: bool,
) -> None:
    req = replace(req, expires_at=NOW + timedelta(days=8))
    out = decide(req, t, trust, ballots, confirmed, now, glass=glass, intake=intake)
    risk = RiskLevel(req.risk_level)
    # Deny always wins over every auto-approve rule.
    if out.deny_rule is not None:
        assert out.auto_rule is None
    # Critical is never auto-approved without allow_critical on the rule that approved it.
    if out.auto_rule is not None and risk is RiskLevel.CRITICAL:
        assert next(m for m in t.auto_approve if m.name == out.auto_rule).allow_critical
    # Trust never lowers a threshold below one, nor by more than one.
    assert out.required >= 1
    assert out.required >= max(req.required_approvals, t.rule(risk).required_approvals) - 1
    # Break-glass never exceeds its daily limit, and needs a listed role.
    if out.glass_by is not None:
        assert glass is not None and t.break_glass is not None
        assert glass.used_today < t.break_glass.max_per_day
        assert t.approvers[out.glass_by].roles & t.break_glass.roles
    # The requester's vote never counts.
    if req.requester_telegram_id is not None:
        assert req.requester_telegram_id not in out.approvals + out.rejects + out.unconfirmed
    # An approval is explained: by votes, a rule or a person, never silently.
    if out.decision is Decision.APPROVED:
        assert (
            out.auto_rule is not None
            or out.glass_by is not None
            or len(out.approvals) >= out.required
        )
