"""The chat commands' answers about approvals: /pending, /status and /whoami."""

from __future__ import annotations

import string
from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncSession

from bot.approvals.card import RISK_BADGE, card_link
from bot.approvals.outcome import waiting_names
from bot.approvals.requests import Details, find_by_prefix, find_requests
from bot.rendering import clip, esc, fmt_duration, fmt_time, href
from bot.runtime import Runtime
from bot.votes import APPROVE

NOT_IN_POLICY = "This chat is not in the policy file, so it has no requests."
MAX_LISTED = 20
MIN_PREFIX = 8  # hex digits of a request id /status needs: 4 billion ids apart
STATUS_USAGE = (
    "Usage: /status &lt;request id&gt;: the id at the bottom of a card, or at least its first "
    f"{MIN_PREFIX} characters."
)


def id_prefix(arg: str) -> str | None:
    """The hex digits of a request id (or of its start) as typed or copied from a card."""
    digits = arg.strip().lower().replace("-", "")
    if not MIN_PREFIX <= len(digits) <= 32 or not set(digits) <= set(string.hexdigits):
        return None
    return digits


def _status_word(d: Details) -> str:
    return (
        f"{d.request.status} · {len(d.outcome.approvals)}/{d.outcome.required} approvals"
        f" · {len(d.outcome.rejects)}/{d.outcome.reject_threshold} rejects"
    )


def _link_in(d: Details, chat_id: int) -> str | None:
    """The link to the request's card in this chat, if it has one there."""
    return next((card_link(c, m) for c, m in d.cards if c == chat_id), None)


async def pending_text(rt: Runtime, session: AsyncSession, chat_id: int) -> str:
    team = rt.policy.team_for_chat(chat_id)
    if team is None:
        return NOT_IN_POLICY
    items = await find_requests(rt, session, team, "pending")
    if not items:
        return f"No open requests for team <b>{esc(team.name)}</b>."
    tz = rt.zone
    lines = [f"<b>Open requests</b> of team <b>{esc(team.name)}</b>: {len(items)}"]
    for d in items[:MAX_LISTED]:
        r = d.request
        link = _link_in(d, chat_id)
        title = f"{clip(r.action, 60)} → {clip(r.target, 60)}"
        if link:
            title = f'<a href="{href(link)}">{title}</a>'
        lines.append(
            f"• {RISK_BADGE.get(r.risk_level, '')} {title} · "
            f"{len(d.outcome.approvals)}/{d.outcome.required} · {clip(d.outcome.reason, 120)} · "
            f"expires {esc(fmt_time(r.expires_at, tz))}\n  <code>{r.id}</code>"
        )
    if len(items) > MAX_LISTED:
        lines.append(f"… +{len(items) - MAX_LISTED} more")
    return "\n".join(lines)


async def status_text(rt: Runtime, session: AsyncSession, chat_id: int, arg: str) -> str:
    team = rt.policy.team_for_chat(chat_id)
    if team is None:
        return NOT_IN_POLICY
    prefix = id_prefix(arg)
    if prefix is None:
        return STATUS_USAGE
    found = await find_by_prefix(rt, session, team, prefix)
    shown = clip(arg.strip(), 64)
    if not found:
        return f"No request <code>{shown}</code> in team <b>{esc(team.name)}</b>."
    if len(found) > 1:
        return (
            f"<code>{shown}</code> is ambiguous: more than one request of team "
            f"<b>{esc(team.name)}</b> starts with it. Send more of the id."
        )
    d = found[0]
    r, tz = d.request, rt.zone
    lines = [
        f"{RISK_BADGE.get(r.risk_level, '')} <b>{clip(r.action, 200)}</b> → "
        f"<code>{clip(r.target, 200)}</code>",
        f"Status: <b>{esc(_status_word(d))}</b>",
        f"Requested by {clip(r.requested_by, 100)} at {esc(fmt_time(r.created_at, tz))}",
    ]
    if r.pending:
        left = (r.expires_at - datetime.now(UTC)).total_seconds()
        lines.append(f"Expires {esc(fmt_time(r.expires_at, tz))} (in {fmt_duration(left)})")
        waiting = waiting_names(rt, r, d.outcome)
        if waiting:
            lines.append(f"Waiting for: {clip(', '.join(waiting), 400)}")
    for v in d.votes[:MAX_LISTED]:
        lines.append(f"{'✅' if v.decision == APPROVE else '❌'} {clip(v.voter_name, 40)}")
    link = _link_in(d, chat_id)
    if link:
        lines.append(f'<a href="{href(link)}">Open the card</a>')
    lines.append(f"id <code>{r.id}</code>")
    return "\n".join(lines)


def whoami_text(rt: Runtime, user_id: int, first_name: str) -> str:
    lines = [f"{esc(first_name)}: your Telegram id is <code>{user_id}</code>."]
    teams = rt.policy.teams_of(user_id)
    if not teams:
        lines.append("You are not an approver in any team.")
    for t in teams:
        roles = ", ".join(sorted(t.approvers[user_id].roles)) or "no roles"
        lines.append(f"Approver in <b>{esc(t.name)}</b> ({esc(roles)})")
    return "\n".join(lines)
