"""Voting from a private chat: /pending there posts a card of each request waiting for this
person's vote, with buttons signed for that chat. A tap on it is an ordinary vote (the same
checks, audit and card refresh: it is one more card of the request)."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncSession

from bot.approvals.publish import post_card_to
from bot.rendering import esc, plural
from bot.runtime import Runtime
from bot.votes import requesters
from storage import approvals as repo
from storage import votes as vote_repo

MAX_PRIVATE_CARDS = 10


async def pending_privately(rt: Runtime, session: AsyncSession, user_id: int) -> str:
    """Queue the cards waiting for `user_id`'s vote in their private chat; the reply text."""
    teams = rt.policy.teams_of(user_id)
    team_ids = {rt.team_ids[t.name]: t for t in teams if t.name in rt.team_ids}
    if not team_ids:
        return "You are not an approver of any team, so nothing waits for your vote."
    found = await repo.waiting_for_voter(session, list(team_ids), user_id, 4 * MAX_PRIVATE_CARDS)
    mine = [r for r in found if user_id not in requesters(r, team_ids[r.team_id].approvers)]
    if not mine:
        return "Nothing waits for your vote. 🎉"
    posted = listed = 0
    now = datetime.now(UTC)
    votes = await vote_repo.votes_for(session, [r.id for r in mine[:MAX_PRIVATE_CARDS]])
    for req in mine[:MAX_PRIVATE_CARDS]:
        if await repo.has_card_in(session, req.id, user_id):
            listed += 1
            continue
        await post_card_to(rt, session, req, votes[req.id], now, user_id)
        posted += 1
    names = ", ".join(esc(t.name) for t in teams)
    lines = [f"<b>Waiting for your vote</b> ({names}): {len(mine)}"]
    if posted:
        lines.append(
            f"{plural(posted, 'card')} here with ✅ Approve / ❌ Reject: "
            "a vote counts as on the group card."
        )
    if listed:
        lines.append(f"{plural(listed, 'card')} already in this chat above.")
    if len(mine) > MAX_PRIVATE_CARDS:
        lines.append(f"… +{len(mine) - MAX_PRIVATE_CARDS} more: decide these first.")
    return "\n".join(lines)
