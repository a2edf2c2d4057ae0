"""The requester in the loop: who asked (by Telegram id or an approver's name), a private
message when their request is decided, expires or is cancelled, and the card's mention when
Telegram will not let the bot write to them."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from bot import private
from bot.approvals.card import card_link, mention
from bot.policy import Team
from bot.rendering import clip, esc
from bot.votes import requester_id
from storage import approvals as repo
from storage.outbox import messages_for_approval

OUTCOME_WORDS = {
    "approved": "✅ was approved",
    "rejected": "❌ was rejected",
    "expired": "⌛ expired without a decision",
    "cancelled": "🚫 was cancelled",
}


def outcome_text(req: repo.RequestRecord, links: list[str]) -> str:
    """The private message: what was asked, what became of it, and where its card is."""
    words = OUTCOME_WORDS.get(req.status, esc(req.status))
    lines = [
        f"Your request <code>{clip(req.action, 200)}</code> on "
        f"<code>{clip(req.target, 200)}</code> {words}."
    ]
    if req.decided_by and req.status in ("approved", "rejected"):
        names = ", ".join(str(d.get("name", d.get("id"))) for d in req.decided_by[:10])
        lines.append(f"Decided by {clip(names, 300)}.")
    lines += [f'<a href="{esc(link)}">Open the card</a>' for link in links[:1]]
    lines.append(f"id <code>{req.id}</code>")
    return "\n".join(lines)


async def tell_requester(session: AsyncSession, req: repo.RequestRecord, team: Team | None) -> None:
    """Queue the requester's private message (in this transaction), if we know who they are.

    Always tried: a 403 (never started, blocked) is recorded by bot.private, not retried."""
    uid = requester_id(req, team.approvers) if team is not None else None
    if uid is None:
        return
    cards = await messages_for_approval(session, req.id)
    links = [
        link
        for m in cards
        if m.message_id is not None and (link := card_link(m.chat_id, m.message_id)) is not None
    ]
    await private.send(session, uid, outcome_text(req, links))


async def requester_mention(
    session: AsyncSession, req: repo.RequestRecord, team: Team | None
) -> str | None:
    """The closed card's mention of a requester the bot cannot write to privately."""
    uid = requester_id(req, team.approvers) if team is not None else None
    if uid is None or req.pending or await private.reachable(session, uid):
        return None
    words = OUTCOME_WORDS.get(req.status, esc(req.status))
    return f"🔔 {mention(uid, req.requested_by[:64])}: your request {words}."
