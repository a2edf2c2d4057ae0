"""`quorum check-config`'s rules: every problem with the settings and the policy, at once."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import ValidationError

from bot.policy import (
    PolicyModel,
    RiskLevel,
    Team,
    TeamModel,
    build_team,
    prefix_problems,
    scope_problems,
)
from bot.settings import EXAMPLE_VALUES, Settings, known_zone, validation_messages
from bot.votes import reach, unreachable_reason

ERROR: Literal["error"] = "error"
WARNING: Literal["warning"] = "warning"


@dataclass(frozen=True, slots=True)
class Problem:
    level: Literal["error", "warning"]
    where: str  # a QUORUM_ variable, or "policy file <path>: <key path>"
    message: str

    @property
    def line(self) -> str:
        label = "configuration error" if self.level == ERROR else "warning"
        return f"quorum: {label}: {self.where}: {self.message}"


def check(settings: Settings, policy_data: Mapping[str, Any] | None) -> list[Problem]:
    """Every problem of valid-looking settings and a policy table (None: unreadable, already
    reported). Pure: reads no file and opens no connection."""
    problems = check_settings(settings)
    if policy_data is not None:
        problems += policy_problems(policy_data, f"policy file {settings.policy_file}")
    return problems


def has_errors(problems: list[Problem]) -> bool:
    return any(p.level == ERROR for p in problems)


# ---------------------------------------------------------------- settings


def check_settings(s: Settings) -> list[Problem]:
    problems = [Problem(ERROR, var, msg) for var, msg in s.runnable_problems()]
    published = "still the value from .env.example, which is published: set your own"
    secrets = {
        "telegram_token": s.telegram_token.get_secret_value(),
        "token_secret": s.token_secret.get_secret_value(),
        "webhook_secret": s.webhook_secret.get_secret_value(),
    }
    for field, value in secrets.items():
        if value == EXAMPLE_VALUES[field]:
            problems.append(Problem(ERROR, f"QUORUM_{field.upper()}", published))
    previous = [k.get_secret_value() for k in s.token_previous_secrets]
    if EXAMPLE_VALUES["token_secret"] in previous:
        problems.append(Problem(ERROR, "QUORUM_TOKEN_PREVIOUS_SECRETS", published))
    if s.telegram_mode == "webhook" and s.webhook_url == EXAMPLE_VALUES["webhook_url"]:
        problems.append(Problem(ERROR, "QUORUM_WEBHOOK_URL", published))
    problems += _replica_problems(s)
    if s.database_url == EXAMPLE_VALUES["database_url"]:
        problems.append(
            Problem(WARNING, "QUORUM_DATABASE_URL", "uses the password published in .env.example")
        )
    return problems


def _replica_problems(s: Settings) -> list[Problem]:
    """Webhook mode is how Quorum runs as replicas; the embedded stand-ins serve one process."""
    if s.telegram_mode != "webhook":
        return []
    missing = [
        v
        for v, url in (("QUORUM_DATABASE_URL", s.database_url), ("QUORUM_REDIS_URL", s.redis_url))
        if not url
    ]
    if not missing:
        return []
    message = (
        "webhook mode needs both QUORUM_DATABASE_URL and QUORUM_REDIS_URL: its replicas share "
        "one database, one Telegram pacing budget and one token-replay gate "
        "(without them, use QUORUM_TELEGRAM_MODE=polling: one process on embedded PostgreSQL "
        "and in-process Redis)"
    )
    return [Problem(ERROR, " and ".join(missing), message)]


def from_validation_error(exc: ValidationError) -> list[Problem]:
    """Each of pydantic's complaints about the settings, naming its variable."""
    problems = []
    for field, msg in validation_messages(exc):
        if field is None and ": " in msg:  # model-level checks name their variable themselves
            where, msg = msg.split(": ", 1)
        else:
            where = f"QUORUM_{(field or 'settings').upper()}"
        problems.append(Problem(ERROR, where, msg))
    return problems


# ---------------------------------------------------------------- policy


def policy_problems(data: Mapping[str, Any], source: str) -> list[Problem]:
    try:
        model = PolicyModel.model_validate(data)
    except ValidationError as exc:
        return [
            Problem(
                ERROR,
                f"{source}: {'.'.join(str(p) for p in err['loc']) or '(top level)'}",
                str(err["msg"]).removeprefix("Value error, "),
            )
            for err in exc.errors()
        ]
    problems: list[Problem] = []
    if model.timezone is not None and not known_zone(model.timezone):
        message = f"unknown timezone {model.timezone!r}"
        problems.append(Problem(ERROR, f"{source}: timezone", message))
    owner: dict[int, str] = {}
    for name, team in model.teams.items():
        for chat_id in team.chat_ids:
            if chat_id in owner:
                problems.append(
                    Problem(
                        ERROR,
                        f"{source}: teams.{name}.chat_ids",
                        f"chat {chat_id} already belongs to team {owner[chat_id]}",
                    )
                )
            owner.setdefault(chat_id, name)
        problems += _team_problems(f"{source}: teams.{name}", name, team)
    return problems


def _team_problems(where: str, name: str, model: TeamModel) -> list[Problem]:
    problems: list[Problem] = []
    if not model.chat_ids:
        problems.append(
            Problem(WARNING, f"{where}.chat_ids", "no chats: its cards are posted nowhere")
        )
    if model.alertmanager_url is not None and not absolute_url(model.alertmanager_url):
        problems.append(
            Problem(ERROR, f"{where}.alertmanager_url", "must be an absolute http(s) URL")
        )
    problems += [Problem(ERROR, f"{where}.{key}", msg) for key, msg in scope_problems(model)]
    bad_prefixes = prefix_problems(model)
    problems += [Problem(ERROR, f"{where}.{key}", msg) for key, msg in bad_prefixes]
    bad = {key for key, _ in bad_prefixes}
    good = tuple(
        p
        for i, p in enumerate(model.callback_url_prefixes)
        if f"callback_url_prefixes.{i}" not in bad
    )
    # The rest is checked on the team the good prefixes make, so nothing hides behind them.
    team = build_team(name, model.model_copy(update={"callback_url_prefixes": good}))
    for level in RiskLevel:
        where_level = f"{where}.policy.{level}"
        if level in model.policy:
            problems += _level_problems(where_level, team, level)
            continue
        reason = unreachable_reason(team.rule(level), reach(team.rule(level), team.approvers))
        if reason is not None:
            # The level's default, never written down: worth knowing, not a broken file.
            problems.append(
                Problem(
                    WARNING, where_level, f"the default rule: {reason}; such requests are refused"
                )
            )
    return problems


def _level_problems(where: str, team: Team, level: RiskLevel) -> list[Problem]:
    rule = team.rule(level)
    approvers = team.approvers.values()
    problems = []
    if len(approvers) < rule.required_approvals:
        problems.append(
            Problem(
                ERROR,
                f"{where}.required_approvals",
                f"{rule.required_approvals} needed but the team has only "
                f"{len(approvers)} approvers",
            )
        )
    if rule.reason_pattern is not None and not rule.require_reason:
        problems.append(
            Problem(
                WARNING,
                f"{where}.reason_pattern",
                "checked only when a reason is given: set require_reason = true to refuse "
                "requests without one",
            )
        )
    held = {role for a in approvers for role in a.roles}
    if rule.required_roles and not rule.required_roles & held:
        roles = ", ".join(sorted(rule.required_roles))
        problems.append(
            Problem(ERROR, f"{where}.required_roles", f"no approver holds any of: {roles}")
        )
    elif rule.required_roles - held:
        roles = ", ".join(sorted(rule.required_roles - held))
        problems.append(
            Problem(WARNING, f"{where}.required_roles", f"no approver holds {roles} (a typo?)")
        )
    return problems


def absolute_url(url: str, *, with_path: bool = False) -> bool:
    """An http(s) URL with a host (and a valid port if any), and a path when asked."""
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises on a port that is not a number
    except ValueError:
        return False
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return False
    if parts.netloc.endswith(":"):
        return False
    return not with_path or parts.path.startswith("/")


def load_settings_reporting(**overrides: object) -> tuple[Settings, list[Problem]]:
    """Settings from the environment and each complaint about them. A refused value falls
    back to its default so that the rest can still be checked (see `combined`)."""
    problems: list[Problem] = []
    values: dict[str, object] = dict(overrides)
    for _ in range(4):  # field errors, then the webhook checks they may have hidden
        try:
            return Settings(**values), problems  # type: ignore[arg-type]
        except ValidationError as exc:
            problems += from_validation_error(exc)
            for field, _msg in validation_messages(exc):
                if field is None:  # the webhook checks; polling needs none of them
                    values["telegram_mode"] = "polling"
                else:
                    default = Settings.model_fields[field].get_default(call_default_factory=True)
                    values[field] = default
    raise AssertionError("the defaults of Settings are valid")


def combined(first: list[Problem], more: list[Problem]) -> list[Problem]:
    """`first`, then the problems of `more` about something `first` did not already name."""
    named = {p.where for p in first}
    return first + [p for p in more if p.where not in named]
