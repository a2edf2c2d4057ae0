"""The policy file: teams, their chats, approvers, API keys and per-risk approval rules."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
import tomllib
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    ValidationError,
    field_validator,
    model_validator,
)

from bot.callback_urls import CallbackPrefix, parse_prefix
from bot.hours import Hours, parse_hours
from bot.settings import ConfigError, known_zone


class RiskLevel(StrEnum):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"


RISK_ORDER = {level: i for i, level in enumerate(RiskLevel)}

# Low and medium are the original "standard" level (one approval); high and critical the
# "critical" level (two distinct approvers).
DEFAULT_REQUIRED = {
    RiskLevel.LOW: 1,
    RiskLevel.MEDIUM: 1,
    RiskLevel.HIGH: 2,
    RiskLevel.CRITICAL: 2,
}
APPROVAL_LEVEL = {
    RiskLevel.LOW: "standard",
    RiskLevel.MEDIUM: "standard",
    RiskLevel.HIGH: "critical",
    RiskLevel.CRITICAL: "critical",
}


API_ACTOR = "api:"  # the audit actor prefix of a caller authenticated by an API key

# What an API key may do, one scope per kind of route; a key without `scopes` holds them all.
Scope = Literal[
    "approvals:create",
    "approvals:read",  # includes an approved request's approval token
    "approvals:cancel",
    "tokens:redeem",
    "results:write",
    "alerts:write",
    "incidents:read",  # list and get incidents, their timelines and postmortem drafts
    "incidents:write",  # declare incidents, change their status and commander
    "trust:reset",  # reset an action pattern's trust score to 0
    "audit:read",  # the team's audit log (GET /api/v1/audit); never held without asking
]
SCOPES: tuple[str, ...] = get_args(Scope)
ALL_SCOPES = frozenset(SCOPES)
# What a key without `scopes` holds: every scope that existed before scopes did. Reading the
# audit log is a new power, so an old key does not gain it: it is granted by name only.
DEFAULT_SCOPES = ALL_SCOPES - {"audit:read"}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ApproverModel(_Strict):
    telegram_id: int = Field(gt=0)
    name: str = Field(min_length=1, max_length=64)
    roles: tuple[str, ...] = ()


# Approval requests one API key may create: a token bucket of `burst`, refilled per minute.
DEFAULT_RATE_PER_MINUTE = 60
DEFAULT_BURST = 30
# Pending requests a team may have before new ones are refused.
DEFAULT_MAX_PENDING = 200


def check_scopes(scopes: tuple[str, ...]) -> None:
    """ValueError naming every scope outside SCOPES."""
    unknown = [s for s in scopes if s not in ALL_SCOPES]
    if unknown:
        names = ", ".join(repr(s) for s in unknown)
        raise ValueError(f"unknown scope {names}; known: {', '.join(SCOPES)}")


class ApiKeyModel(_Strict):
    name: str = Field(min_length=1, max_length=64)
    sha256: str
    rate_per_minute: int = Field(default=DEFAULT_RATE_PER_MINUTE, ge=1, le=100_000)
    burst: int = Field(default=DEFAULT_BURST, ge=1, le=100_000)
    # Unset: every scope (keys written before scopes existed keep working). Names are
    # checked after the schema (scope_problems), so check-config reports them beside the rest.
    scopes: tuple[str, ...] | None = None

    @field_validator("sha256")
    @classmethod
    def _hex(cls, v: str) -> str:
        v = v.lower()
        if len(v) != 64 or any(c not in "0123456789abcdef" for c in v):
            raise ValueError("must be the 64-character hex SHA-256 of the key")
        return v


class RuleModel(_Strict):
    # Unset: the level's default (two for high and critical), never silently one.
    required_approvals: int | None = Field(default=None, ge=1, le=50)
    reject_threshold: int = Field(default=1, ge=1, le=50)
    ttl_seconds: int = Field(default=3600, ge=60, le=30 * 86400)
    escalate_after_seconds: int | None = Field(default=None, ge=30)
    # Roles of which at least one approver must be among the approvals (empty: any approver).
    required_roles: tuple[str, ...] = ()
    # One approval less once the request's action pattern has this trust score.
    trust_lowers_at: int | None = Field(default=None, ge=1, le=1_000_000)
    # Lets trust lower the critical level too (ignored elsewhere).
    allow_critical: bool = False
    # "private": an approval counts once its voter confirms it in a private chat (60 s);
    # "totp": with the code of the authenticator they enrolled (/enroll).
    step_up: Literal["private", "totp"] | None = None

    # Requests must say why (`reason`); the reason must match the pattern (re.search, so
    # anchor it: "^(OPS|INC)-[0-9]+" asks for a ticket id first).
    require_reason: StrictBool = False
    reason_pattern: str | None = Field(default=None, min_length=1, max_length=500)
    # A rejection counts at once, but the decision callback waits (at most 10 minutes) for
    # the rejecter's reason, and the card says "reason pending" meanwhile.
    require_reject_reason: StrictBool = False
    # One warning before expiry ("⏳ expires in N min" and a reply naming who has not voted):
    # this many seconds before; unset, ten minutes or a fifth of the lifetime if shorter; 0: none.
    warn_before_seconds: int | None = Field(default=None, ge=0, le=30 * 86400)
    # Where the warning and the escalation also go: a person's Telegram id (a private
    # message) or a chat id (a post there), besides the team's chats.
    escalate_to: tuple[int, ...] = Field(default=(), max_length=20)

    @field_validator("escalate_to")
    @classmethod
    def _targets(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        if any(t == 0 or abs(t) >= 2**52 for t in v):
            raise ValueError("each target is a Telegram user id (> 0) or a chat id (< 0)")
        if len(set(v)) != len(v):
            raise ValueError("a target appears twice")
        return v

    @field_validator("reason_pattern")
    @classmethod
    def _regex(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                re.compile(v)
            except re.error as exc:
                raise ValueError(f"not a valid regular expression: {exc}") from None
        return v


class MatcherModel(_Strict):
    """What an auto_approve or deny rule matches: globs, requesters, hours of the week."""

    name: str = Field(min_length=1, max_length=64)
    actions: tuple[str, ...] = ("*",)
    targets: tuple[str, ...] = ("*",)
    requesters: tuple[str | int, ...] = ()  # policy names, requested_by values or ids
    hours: str | None = None

    @field_validator("hours")
    @classmethod
    def _hours(cls, v: str | None) -> str | None:
        if v is not None:
            parse_hours(v)
        return v


class AutoApproveModel(MatcherModel):
    max_risk: RiskLevel = RiskLevel.LOW
    allow_critical: bool = False
    min_trust_score: int = Field(default=0, ge=0, le=1_000_000)

    @model_validator(mode="after")
    def _critical(self) -> AutoApproveModel:
        if self.max_risk is RiskLevel.CRITICAL and not self.allow_critical:
            raise ValueError(f"rule {self.name!r}: max_risk = critical needs allow_critical = true")
        return self


class BreakGlassModel(_Strict):
    roles: tuple[str, ...] = Field(min_length=1)
    require_reason: bool = True
    max_per_day: int = Field(default=3, ge=1, le=1000)


class RouteMatchModel(_Strict):
    """What a route takes; every key given must match (lists: any of them). Empty: all."""

    kind: Literal["approval", "alert"] | None = None
    risk_level: tuple[RiskLevel, ...] = ()
    severity: tuple[str, ...] = ()
    source: tuple[str, ...] = ()
    labels: dict[str, str] = Field(default_factory=dict)


class RouteModel(_Strict):
    chat_id: int = Field(lt=0, gt=-(2**52))
    thread_id: int | None = Field(default=None, gt=0, lt=2**52)  # a forum topic
    match: RouteMatchModel = Field(default_factory=RouteMatchModel)


class TeamModel(_Strict):
    chat_ids: tuple[int, ...] = ()
    routes: tuple[RouteModel, ...] = ()
    approvers: tuple[ApproverModel, ...] = ()
    api_keys: tuple[ApiKeyModel, ...] = ()
    policy: dict[RiskLevel, RuleModel] = Field(default_factory=dict)
    callback_url_prefixes: tuple[str, ...] = ()
    alertmanager_url: str | None = None
    max_pending: int = Field(default=DEFAULT_MAX_PENDING, ge=1, le=1_000_000)
    # Alerts whose values of these labels agree share one card; [] is one card per fingerprint.
    alert_group_by: tuple[Annotated[str, Field(min_length=1, max_length=100)], ...] = Field(
        default=("alertname",), max_length=10
    )
    # Alerts whose values of these labels match an open incident's attach to it.
    incident_group_by: tuple[str, ...] = ("service",)
    timezone: str | None = None  # the team's hours; unset: the policy's
    trust_key: Literal["action", "action+target"] = "action+target"
    auto_approve: tuple[AutoApproveModel, ...] = ()
    deny: tuple[MatcherModel, ...] = ()
    break_glass: BreakGlassModel | None = None

    @field_validator("approvers")
    @classmethod
    def _unique_ids(cls, v: tuple[ApproverModel, ...]) -> tuple[ApproverModel, ...]:
        ids = [a.telegram_id for a in v]
        if len(ids) != len(set(ids)):
            raise ValueError("an approver telegram_id appears twice")
        return v

    @field_validator("timezone")
    @classmethod
    def _zone(cls, v: str | None) -> str | None:
        if v is not None and not known_zone(v):
            raise ValueError(f"unknown timezone {v!r}")
        return v

    @model_validator(mode="after")
    def _rules(self) -> TeamModel:
        """Refuse what contradicts itself: a break-glass role no approver holds (a typo would
        leave nobody able to use it), two rules under one name (the audit log names them)."""
        held = {role for a in self.approvers for role in a.roles}
        if self.break_glass is not None:
            unknown = sorted(set(self.break_glass.roles) - held)
            if unknown:
                raise ValueError(f"break_glass.roles: no approver holds {', '.join(unknown)}")
        names = [r.name for r in (*self.auto_approve, *self.deny)]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"rule name {', '.join(twice)} appears twice")
        return self


class PolicyModel(_Strict):
    timezone: str | None = None
    teams: dict[str, TeamModel] = Field(min_length=1)


@dataclass(frozen=True, slots=True)
class Approver:
    telegram_id: int
    name: str
    roles: frozenset[str]


@dataclass(frozen=True, slots=True)
class ApiKey:
    name: str
    sha256: bytes
    rate_per_minute: int = DEFAULT_RATE_PER_MINUTE
    burst: int = DEFAULT_BURST
    scopes: frozenset[str] = DEFAULT_SCOPES


@dataclass(frozen=True, slots=True)
class Rule:
    required_approvals: int
    reject_threshold: int
    ttl_seconds: int
    escalate_after_seconds: int | None
    required_roles: frozenset[str] = frozenset()
    trust_lowers_at: int | None = None
    allow_critical: bool = False  # trust may lower this level even if it is critical
    step_up: str | None = None  # "private": an approval counts once confirmed in private

    require_reason: bool = False
    reason_pattern: re.Pattern[str] | None = None
    require_reject_reason: bool = False
    warn_before_seconds: int | None = None
    escalate_to: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class Matcher:
    """An auto_approve (max_risk set) or deny rule."""

    name: str
    actions: tuple[str, ...] = ("*",)
    targets: tuple[str, ...] = ("*",)
    requesters: frozenset[str] = frozenset()  # casefolded names and ids as text; empty: any
    hours: Hours | None = None
    max_risk: RiskLevel | None = None
    allow_critical: bool = False
    min_trust_score: int = 0


@dataclass(frozen=True, slots=True)
class BreakGlass:
    roles: frozenset[str]
    require_reason: bool = True
    max_per_day: int = 3


@dataclass(frozen=True, slots=True)
class Route:
    """A destination (a chat, maybe one forum topic) for the cards its match takes."""

    chat_id: int
    thread_id: int | None = None
    kind: str | None = None
    risk_levels: frozenset[str] = frozenset()
    severities: frozenset[str] = frozenset()
    sources: frozenset[str] = frozenset()
    labels: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class Team:
    name: str
    chat_ids: tuple[int, ...]
    approvers: dict[int, Approver]
    rules: dict[RiskLevel, Rule]
    callback_url_prefixes: tuple[CallbackPrefix, ...] = ()
    alertmanager_url: str | None = None
    api_keys: tuple[ApiKey, ...] = ()
    max_pending: int = DEFAULT_MAX_PENDING
    alert_group_by: tuple[str, ...] = ("alertname",)
    incident_group_by: tuple[str, ...] = ("service",)
    timezone: str | None = None
    trust_key: str = "action+target"
    auto_approve: tuple[Matcher, ...] = ()
    deny: tuple[Matcher, ...] = ()
    break_glass: BreakGlass | None = None
    routes: tuple[Route, ...] = ()

    @property
    def all_chat_ids(self) -> tuple[int, ...]:
        """Its chats and its routes' chats, each once."""
        return tuple(dict.fromkeys((*self.chat_ids, *(r.chat_id for r in self.routes))))

    def rule(self, level: RiskLevel) -> Rule:
        return self.rules[level]

    def is_approver(self, telegram_id: int) -> bool:
        return telegram_id in self.approvers


@dataclass(frozen=True, slots=True)
class Policy:
    teams: dict[str, Team]
    timezone: str | None = None
    source: str = "<memory>"
    _chat_index: dict[int, str] = field(default_factory=dict)

    def team(self, name: str) -> Team:
        return self.teams[name]

    def team_for_chat(self, chat_id: int) -> Team | None:
        name = self._chat_index.get(chat_id)
        return self.teams[name] if name else None

    def team_for_api_key(self, key: str) -> Team | None:
        """Find the team owning an API key; compares every hash in constant time."""
        found = self.api_key(key)
        return found[0] if found else None

    def api_key_owner(self, key: str) -> tuple[Team, str] | None:
        """The team owning an API key and the key's name."""
        found = self.api_key(key)
        return (found[0], found[1].name) if found else None

    def api_key(self, key: str) -> tuple[Team, ApiKey] | None:
        """The team and policy entry of an API key; compares every hash in constant time."""
        digest = hashlib.sha256(key.encode()).digest()
        found: tuple[Team, ApiKey] | None = None
        for team in self.teams.values():
            for entry in team.api_keys:
                if hmac.compare_digest(digest, entry.sha256) and found is None:
                    found = (team, entry)
        return found

    def teams_of(self, telegram_id: int) -> list[Team]:
        return [t for t in self.teams.values() if telegram_id in t.approvers]


def api_actor(key_name: str) -> str:
    """How the audit log (and a card) names a caller authenticated by the API key `key_name`."""
    return f"{API_ACTOR}{key_name}"


def build_team(name: str, model: TeamModel) -> Team:
    """The team a validated model describes, with each level's default rule filled in."""
    rules = {}
    for level in RiskLevel:
        m = model.policy.get(level)
        if m is None:
            rules[level] = Rule(DEFAULT_REQUIRED[level], 1, 3600, None)
        else:
            rules[level] = Rule(
                m.required_approvals or DEFAULT_REQUIRED[level],
                m.reject_threshold,
                m.ttl_seconds,
                m.escalate_after_seconds,
                frozenset(m.required_roles),
                m.trust_lowers_at,
                m.allow_critical,
                m.step_up,
                m.require_reason,
                re.compile(m.reason_pattern) if m.reason_pattern is not None else None,
                m.require_reject_reason,
                m.warn_before_seconds,
                m.escalate_to,
            )
    return Team(
        name=name,
        chat_ids=model.chat_ids,
        approvers={
            a.telegram_id: Approver(a.telegram_id, a.name, frozenset(a.roles))
            for a in model.approvers
        },
        rules=rules,
        callback_url_prefixes=tuple(parse_prefix(p) for p in model.callback_url_prefixes),
        alertmanager_url=model.alertmanager_url,
        api_keys=tuple(
            ApiKey(
                k.name,
                bytes.fromhex(k.sha256),
                k.rate_per_minute,
                k.burst,
                DEFAULT_SCOPES if k.scopes is None else frozenset(k.scopes),
            )
            for k in model.api_keys
        ),
        max_pending=model.max_pending,
        routes=tuple(
            Route(
                r.chat_id,
                r.thread_id,
                r.match.kind,
                frozenset(level.value for level in r.match.risk_level),
                frozenset(r.match.severity),
                frozenset(r.match.source),
                tuple(sorted(r.match.labels.items())),
            )
            for r in model.routes
        ),
        alert_group_by=model.alert_group_by,
        incident_group_by=model.incident_group_by,
        timezone=model.timezone,
        trust_key=model.trust_key,
        auto_approve=tuple(_matcher(m) for m in model.auto_approve),
        deny=tuple(_matcher(m) for m in model.deny),
        break_glass=None
        if model.break_glass is None
        else BreakGlass(
            frozenset(model.break_glass.roles),
            model.break_glass.require_reason,
            model.break_glass.max_per_day,
        ),
    )


def _matcher(m: MatcherModel) -> Matcher:
    auto = m if isinstance(m, AutoApproveModel) else None
    return Matcher(
        name=m.name,
        actions=m.actions,
        targets=m.targets,
        requesters=frozenset(str(r).strip().casefold() for r in m.requesters),
        hours=parse_hours(m.hours) if m.hours is not None else None,
        max_risk=auto.max_risk if auto else None,
        allow_critical=auto.allow_critical if auto else False,
        min_trust_score=auto.min_trust_score if auto else 0,
    )


def prefix_problems(model: TeamModel) -> list[tuple[str, str]]:
    """(key path below the team, what is wrong) for each callback prefix the rule refuses.

    Checked after the schema, so that check-config can report these beside every other
    problem instead of stopping at the first."""
    problems = []
    for i, prefix in enumerate(model.callback_url_prefixes):
        try:
            parse_prefix(prefix)
        except ValueError as exc:
            problems.append((f"callback_url_prefixes.{i}", str(exc)))
    return problems


def scope_problems(model: TeamModel) -> list[tuple[str, str]]:
    """(key path below the team, what is wrong) for each API key naming an unknown scope."""
    problems = []
    for i, key in enumerate(model.api_keys):
        try:
            check_scopes(key.scopes or ())
        except ValueError as exc:
            problems.append((f"api_keys.{i}.scopes", str(exc)))
    return problems


def parse_policy(data: dict[str, Any], source: str = "<memory>") -> Policy:
    try:
        model = PolicyModel.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = str(err["msg"]).removeprefix("Value error, ")
        raise ConfigError(f"policy file {source}: {key}: {msg}") from None
    for name, team_model in model.teams.items():
        for key, msg in prefix_problems(team_model) + scope_problems(team_model):
            raise ConfigError(f"policy file {source}: teams.{name}.{key}: {msg}")
    teams = {
        name: build_team(name, m.model_copy(update={"timezone": m.timezone or model.timezone}))
        for name, m in model.teams.items()
    }
    index: dict[int, str] = {}
    for team in teams.values():
        for chat_id in team.chat_ids:
            if chat_id in index:
                raise ConfigError(
                    f"policy file {source}: teams.{team.name}.chat_ids: chat {chat_id} "
                    f"already belongs to team {index[chat_id]}"
                )
            index[chat_id] = team.name
    for team in teams.values():  # a route's chat answers commands for its team too
        for route in team.routes:
            index.setdefault(route.chat_id, team.name)
    return Policy(teams=teams, timezone=model.timezone, source=source, _chat_index=index)


def read_policy_data(path: Path) -> dict[str, Any]:
    """The policy file's TOML as a table, or a ConfigError naming the file."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"QUORUM_POLICY_FILE: {path} does not exist") from None
    except OSError as exc:
        raise ConfigError(f"QUORUM_POLICY_FILE: {path}: {exc.strerror}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"policy file {path}: not valid TOML: {exc}") from None
    return data


def load_policy(path: Path) -> Policy:
    return parse_policy(read_policy_data(path), str(path))


def parse_scopes(text: str) -> tuple[str, ...]:
    """Comma-separated scope names, each checked; ValueError naming any unknown one."""
    scopes = tuple(dict.fromkeys(s.strip() for s in text.split(",") if s.strip()))
    if not scopes:
        raise ValueError(f"name at least one scope of: {', '.join(SCOPES)}")
    check_scopes(scopes)
    return scopes


def new_api_key(name: str, scopes: tuple[str, ...] | None = None) -> tuple[str, str]:
    """A fresh key and the policy line that stores only its hash (and its scopes, if given:
    None writes none, which grants DEFAULT_SCOPES)."""
    key = "qk_" + secrets.token_urlsafe(32)
    digest = hashlib.sha256(key.encode()).hexdigest()
    # A JSON string is a valid TOML basic string, so any name pastes safely.
    line = f'name = {json.dumps(name)}, sha256 = "{digest}"'
    if scopes is not None:
        line += f", scopes = {json.dumps(list(scopes))}"
    return key, f"{{ {line} }}"
