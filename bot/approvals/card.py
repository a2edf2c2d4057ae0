"""An approval request's card: the HTML every team chat shows, and its vote buttons."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any
from zoneinfo import ZoneInfo

from bot.buttons import keyboard
from bot.rendering import MAX_TEXT, clip, esc, fmt_time, href, visible_length
from bot.runtime import Runtime
from bot.votes import APPROVE, Outcome
from storage import approvals as repo

RISK_BADGE = {"low": "🟢", "medium": "🟡", "high": "🟠", "critical": "🔴"}
STATUS_LINE = {
    "approved": "✅ <b>APPROVED</b>",
    "rejected": "❌ <b>REJECTED</b>",
    "expired": "⌛ <b>EXPIRED</b> without a decision",
    "cancelled": "🚫 <b>CANCELLED</b> by the requester",
}
MAX_VOTE_LINES = 15
MAX_DECIDER_NAMES = 10
SHORT_DESCRIPTION = 100  # what a card too long for Telegram keeps of the description


def card_link(chat_id: int, message_id: int) -> str | None:
    """t.me link to a message; only supergroups and channels (-100…) have one."""
    raw = str(chat_id)
    if raw.startswith("-100"):
        return f"https://t.me/c/{raw[4:]}/{message_id}"
    return None


def mention(telegram_id: int, name: str) -> str:
    return f'<a href="{href(f"tg://user?id={telegram_id}")}">{esc(name)}</a>'


def _compact(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(", ", ": "), sort_keys=True)


def render_card(
    req: repo.RequestRecord,
    votes: Sequence[repo.VoteRecord],
    outcome: Outcome,
    tz: ZoneInfo,
    alert_line: str | None = None,
    *,
    description_limit: int = 1000,
) -> str:
    lines = [
        *_request_lines(req, tz, description_limit),
        *_vote_lines(votes, outcome, tz),
        *_closing_lines(req, tz, alert_line),
    ]
    text_html = "\n".join(lines)
    if visible_length(text_html) > MAX_TEXT and description_limit > SHORT_DESCRIPTION:
        return render_card(req, votes, outcome, tz, alert_line, description_limit=SHORT_DESCRIPTION)
    return text_html


def _request_lines(req: repo.RequestRecord, tz: ZoneInfo, description_limit: int) -> list[str]:
    """The head and what was asked: action, target, context, requester."""
    badge = RISK_BADGE.get(req.risk_level, "⚪")
    head = f"{badge} <b>Approval request</b> · risk <b>{esc(req.risk_level.upper())}</b>"
    if not req.pending:
        head = f"{STATUS_LINE.get(req.status, esc(req.status))} · {head}"
    lines = [
        head,
        f"<b>Action:</b> <code>{clip(req.action, 300)}</code>",
        f"<b>Target:</b> <code>{clip(req.target, 300)}</code>",
    ]
    if req.description:
        lines.append(f"<blockquote>{clip(req.description, description_limit)}</blockquote>")
    if req.blast_radius:
        lines.append(f"<b>Blast radius:</b> {clip(_compact(req.blast_radius), 300)}")
    if req.dry_run_checks:
        lines.append(f"<b>Dry run:</b> {clip(_compact(req.dry_run_checks), 300)}")
    lines.append(f"<b>Requested by:</b> {clip(req.requested_by, 100)}")
    if req.hit_count > 1:
        lines.append(
            f"<b>Repeated:</b> {req.hit_count}× (last {esc(fmt_time(req.last_seen_at, tz))})"
        )
    return lines


def _vote_lines(votes: Sequence[repo.VoteRecord], outcome: Outcome, tz: ZoneInfo) -> list[str]:
    """The count, then one line per vote (up to MAX_VOTE_LINES)."""
    roles = " (needs an approver with a required role)" if outcome.missing_role else ""
    lines = [
        f"<b>Approvals:</b> {len(outcome.approvals)}/{outcome.required}{roles}"
        f" · <b>Rejects:</b> {len(outcome.rejects)}/{outcome.reject_threshold}"
    ]
    ignored = set(outcome.ignored)
    for v in votes[:MAX_VOTE_LINES]:
        mark = "✅" if v.decision == APPROVE else "❌"
        who = clip(v.voter_name, 40)
        if v.voter_telegram_id in ignored:
            lines.append(f"{mark} <s>{who}</s> (does not count)")
        else:
            lines.append(f"{mark} {who} · {esc(fmt_time(v.created_at, tz))}")
    if len(votes) > MAX_VOTE_LINES:
        lines.append(f"… +{len(votes) - MAX_VOTE_LINES} more votes")
    return lines


def _closing_lines(req: repo.RequestRecord, tz: ZoneInfo, alert_line: str | None) -> list[str]:
    """Expiry or decision, the linked alert, the executor's result and the id."""
    lines = []
    if req.pending:
        lines.append(f"<b>Expires:</b> {esc(fmt_time(req.expires_at, tz))}")
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
    lines.append(f"<i>id {req.id}</i>")
    return lines


def card_markup(rt: Runtime, req: repo.RequestRecord, chat_id: int) -> dict[str, Any] | None:
    """Approve and Reject buttons, signed for this chat; none once the request is closed."""
    if not req.pending:
        return None
    approve = rt.signer.approval_button(req.id, "a", chat_id)
    reject = rt.signer.approval_button(req.id, "r", chat_id)
    return keyboard([[("✅ Approve", approve), ("❌ Reject", reject)]])
