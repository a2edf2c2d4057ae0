"""An approval request's card: the HTML every team chat shows, and its vote buttons."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from bot.buttons import keyboard
from bot.policy import API_ACTOR
from bot.rendering import (
    MAX_TEXT,
    clip,
    esc,
    fit_html,
    fmt_duration,
    fmt_time,
    plural,
    visible_length,
)
from bot.rendering import card_link as card_link  # moved there; still importable here
from bot.rendering import mention as mention
from bot.runtime import Runtime
from bot.votes import APPROVE, Outcome, requester_id
from storage import approvals as repo
from storage import votes as vote_repo

RISK_BADGE = {"low": "🟢", "medium": "🟡", "high": "🟠", "critical": "🔴"}
STATUS_LINE = {
    "approved": "✅ <b>APPROVED</b>",
    "rejected": "❌ <b>REJECTED</b>",
    "expired": "⌛ <b>EXPIRED</b> without a decision",
    "cancelled": "🚫 <b>CANCELLED</b>",
}
MAX_VOTE_LINES = 15
MAX_DECIDER_NAMES = 10
MAX_WAITING_NAMES = 10
PASS_KEYS = ("pass", "passed", "ok", "success")  # a dry-run check's verdict, if it has one
NAME_KEYS = ("name", "check", "title", "id")
DETAIL_KEYS = ("detail", "message", "reason")


@dataclass(frozen=True, slots=True)
class Limits:
    """How much of the untrusted detail a card shows."""

    description: int
    detail_lines: int  # per section: blast radius, dry run, metadata
    value: int  # characters of one value


# Each step is tried until the card fits Telegram's 4096 visible characters.
CARD_LIMITS = (Limits(1000, 10, 160), Limits(100, 10, 80), Limits(100, 3, 60))


def _compact(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(", ", ": "), sort_keys=True)


def _text(value: Any) -> str:
    """A value as one readable line: strings as they are, anything else as compact JSON."""
    return value if isinstance(value, str) else _compact(value)


def actor_text(actor: str) -> str:
    """The audit log's actor as people read it: `api:ci` is the API key `ci`."""
    if actor.startswith(API_ACTOR):
        return f"{actor.removeprefix(API_ACTOR)} (API key)"
    return actor


def render_card(
    req: repo.RequestRecord,
    votes: Sequence[vote_repo.VoteRecord],
    outcome: Outcome,
    tz: ZoneInfo,
    alert_line: str | None = None,
    *,
    waiting: Sequence[str] = (),
    closed_by: str | None = None,
    awaiting_reason: Collection[int] = (),
    requester_line: str | None = None,
) -> str:
    """The card's HTML. `waiting` names the eligible approvers yet to vote (see
    Outcome.waiting); `closed_by` is the audit actor who cancelled the request;
    `awaiting_reason` the rejecters whose required reason has not come yet."""
    text_html = ""
    for limits in CARD_LIMITS:
        lines = [
            *_request_lines(req, tz, limits, closed_by),
            *_vote_lines(votes, outcome, tz, waiting if req.pending else (), awaiting_reason),
            *policy_lines(req, outcome, tz),
            *_closing_lines(req, tz, alert_line),
            *([requester_line] if requester_line else []),
        ]
        text_html = "\n".join(lines)
        if visible_length(text_html) <= MAX_TEXT:
            return text_html
    return fit_html(text_html)


def _head(req: repo.RequestRecord, closed_by: str | None) -> str:
    badge = RISK_BADGE.get(req.risk_level, "⚪")
    head = f"{badge} <b>Approval request</b> · risk <b>{esc(req.risk_level.upper())}</b>"
    if req.pending:
        return head
    status = STATUS_LINE.get(req.status, esc(req.status))
    if req.status == "cancelled" and closed_by:
        who = "the requester" if closed_by == req.requested_by else actor_text(closed_by)
        status += f" by {clip(who, 80)}"
    return f"{status} · {head}"


def _request_lines(
    req: repo.RequestRecord, tz: ZoneInfo, limits: Limits, closed_by: str | None
) -> list[str]:
    """The head and what was asked: action, target, context, requester."""
    lines = [
        _head(req, closed_by),
        f"<b>Action:</b> <code>{clip(req.action, 300)}</code>",
        f"<b>Target:</b> <code>{clip(req.target, 300)}</code>",
    ]
    if req.reason:
        lines.append(f"<b>Reason:</b> {clip(req.reason, 300)}")
    if req.description:
        lines.append(f"<blockquote>{clip(req.description, limits.description)}</blockquote>")

    def pair(item: tuple[str, Any]) -> str:
        return clip(_pair(*item), limits.value + 40)

    if req.blast_radius:
        lines += _section("Blast radius", list(req.blast_radius.items()), pair, limits)
    if req.dry_run_checks:
        checks = req.dry_run_checks
        lines += _section("Dry run", checks, lambda c: _check_line(c, limits.value), limits)
    if req.metadata:
        lines += _section("Metadata", list(req.metadata.items()), pair, limits)
    lines.append(f"<b>Requested by:</b> {clip(req.requested_by, 100)}")
    if req.hit_count > 1:
        lines.append(
            f"<b>Repeated:</b> {req.hit_count}× (last {esc(fmt_time(req.last_seen_at, tz))})"
        )
    return lines


def _section(
    title: str, items: Sequence[Any], line: Callable[[Any], str], limits: Limits
) -> list[str]:
    """A titled list: one line per item, at most `limits.detail_lines` of them, then "+N more"."""
    shown = [f"  {line(item)}" for item in items[: limits.detail_lines]]
    extra = len(items) - limits.detail_lines
    if extra > 0:
        shown.append(f"  … +{extra} more")
    return [f"<b>{title}:</b>", *shown]


def _pair(key: Any, value: Any) -> str:
    """`key: value`, nested values as compact JSON (plain text, not yet escaped)."""
    return f"{key}: {_text(value)}"


def _check_line(check: Any, limit: int) -> str:
    """One dry-run check: ✓/✗ and its name when it carries a verdict, else what it says."""
    if not isinstance(check, dict):
        return clip(_text(check), limit)
    verdict = next((check[k] for k in PASS_KEYS if isinstance(check.get(k), bool)), None)
    if verdict is None:
        return clip(" · ".join(_pair(k, v) for k, v in list(check.items())[:10]), limit)
    name = next((check[k] for k in NAME_KEYS if check.get(k) not in (None, "")), "check")
    line = f"{'✓' if verdict else '✗'} {clip(_text(name), 60)}"
    detail = next((check[k] for k in DETAIL_KEYS if check.get(k) not in (None, "")), None)
    if detail is not None:
        line += f": {clip(_text(detail), limit)}"
    return line


def _vote_lines(
    votes: Sequence[vote_repo.VoteRecord],
    outcome: Outcome,
    tz: ZoneInfo,
    waiting: Sequence[str],
    awaiting_reason: Collection[int] = (),
) -> list[str]:
    """The count, one line per vote (up to MAX_VOTE_LINES), and who has yet to vote."""
    roles = " (needs an approver with a required role)" if outcome.missing_role else ""
    lines = [
        f"<b>Approvals:</b> {len(outcome.approvals)}/{outcome.required}{roles}"
        f" · <b>Rejects:</b> {len(outcome.rejects)}/{outcome.reject_threshold}"
    ]
    ignored = set(outcome.ignored)
    unconfirmed = set(outcome.unconfirmed)
    for v in votes[:MAX_VOTE_LINES]:
        mark = "✅" if v.decision == APPROVE else "❌"
        who = clip(v.voter_name, 40)
        if v.voter_telegram_id in ignored:
            lines.append(f"{mark} <s>{who}</s> (does not count)")
        elif v.voter_telegram_id in unconfirmed:
            lines.append(f"⏳ {who} · awaiting confirmation")
        else:
            if v.reason:
                who += f": {clip(v.reason, 200)}"
            elif v.voter_telegram_id in awaiting_reason:
                who += " (reason pending)"
            lines.append(f"{mark} {who} · {esc(fmt_time(v.created_at, tz))}")
    if len(votes) > MAX_VOTE_LINES:
        lines.append(f"… +{plural(len(votes) - MAX_VOTE_LINES, 'more vote')}")
    if waiting:
        names = ", ".join(clip(n, 40) for n in waiting[:MAX_WAITING_NAMES])
        extra = len(waiting) - MAX_WAITING_NAMES
        lines.append(f"<b>Waiting for:</b> {names}{f' +{extra} more' if extra > 0 else ''}")
    return lines


def policy_lines(req: repo.RequestRecord, outcome: Outcome, tz: ZoneInfo) -> list[str]:
    """What the policy engine did or waits for: a rule, trust, break-glass, a revocation."""
    lines = []
    if req.auto_rule is not None:
        lines.append(
            f"🤖 auto-approved by rule <b>{clip(req.auto_rule, 64)}</b> (trust {req.trust_score})"
        )
    if req.break_glass_reason is not None:
        lines.append(f"🚨 <b>Break glass</b>: {clip(req.break_glass_reason, 300)}")
    if req.revoked_at is not None:
        who = clip(req.revoked_by or "?", 80)
        lines.append(f"⛔ <b>Revoked</b> by {who} at {esc(fmt_time(req.revoked_at, tz))}")
    if not req.pending:
        return lines
    if outcome.deny_rule is not None:
        lines.append(f"🛑 deny rule <b>{clip(outcome.deny_rule, 64)}</b>: needs human votes")
    if outcome.lowered:
        lines.append(f"🤝 trust {outcome.trust}: one approval less")
    if outcome.unconfirmed:
        lines.append(f"⏳ awaiting confirmation: {plural(len(outcome.unconfirmed), 'voter')}")
    return lines


def _closing_lines(req: repo.RequestRecord, tz: ZoneInfo, alert_line: str | None) -> list[str]:
    """Times, the decision, the linked alert, the executor's result and the id."""
    created = f"<b>Created</b> {esc(fmt_time(req.created_at, tz))}"
    if req.pending:
        # A card is edited only when something changes, so a countdown ("in 58m") would be
        # stale by the time anyone reads it; the lifetime relative to creation never is.
        ttl = fmt_duration((req.expires_at - req.created_at).total_seconds())
        created += f" · <b>expires</b> {esc(fmt_time(req.expires_at, tz))} ({ttl} after creation)"
    lines = [created]
    if req.pending and req.warned_at is not None:
        left = max(1, math.ceil((req.expires_at - req.warned_at).total_seconds() / 60))
        lines.append(f"⏳ <b>expires in {left} min</b>")
    if alert_line:
        lines.append(alert_line)
    if req.status in ("approved", "rejected") and req.decided_by:
        deciders = req.decided_by[:MAX_DECIDER_NAMES]
        names = ", ".join(str(d.get("name", d.get("id"))) for d in deciders)
        extra = len(req.decided_by) - MAX_DECIDER_NAMES
        more = f" +{extra}" if extra > 0 else ""
        lines.append(
            f"<b>Decided by</b> {clip(names, 400)}{more} at {esc(fmt_time(req.decided_at, tz))}"
        )
    if req.result_at is not None:
        mark = "🏁 ✅ succeeded" if req.result_success else "🏁 ⚠️ failed"
        lines.append(f"<b>Executor:</b> {mark}: {clip(req.result_detail or '', 300)}")
    lines.append(f"id <code>{req.id}</code>")
    return lines


WITHDRAW = "w"  # the Withdraw button's action: only the requester may use it


def card_markup(rt: Runtime, req: repo.RequestRecord, chat_id: int) -> dict[str, Any] | None:
    """Approve and Reject buttons, signed for this chat, Break glass when the team allows it
    and Withdraw when the requester is known; once closed, only an auto-approval's Revoke
    (until it is revoked)."""
    if req.status == "approved" and req.auto_rule is not None and req.revoked_at is None:
        return keyboard([[("⛔ Revoke", rt.signer.policy_button(req.id, "rv", chat_id))]])
    if not req.pending:
        return None
    approve = rt.signer.approval_button(req.id, "a", chat_id)
    reject = rt.signer.approval_button(req.id, "r", chat_id)
    rows = [[("✅ Approve", approve), ("❌ Reject", reject)]]
    team = rt.team(req.team_id)
    if team is not None and team.break_glass is not None:
        rows.append([("🚨 Break glass", rt.signer.policy_button(req.id, "bg", chat_id))])
    if team is not None and requester_id(req, team.approvers) is not None:
        rows.append([("🚫 Withdraw", rt.signer.approval_button(req.id, WITHDRAW, chat_id))])
    return keyboard(rows)


def awaiting_reason(
    required: bool, votes: Sequence[vote_repo.VoteRecord], now: datetime, wait_seconds: float
) -> frozenset[int]:
    """Rejecters whose reason the level requires and who may still give it."""
    if not required:
        return frozenset()
    return frozenset(
        v.voter_telegram_id
        for v in votes
        if v.decision != APPROVE
        and v.reason is None
        and (now - v.created_at).total_seconds() < wait_seconds
    )
