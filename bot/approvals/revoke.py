"""⛔ Revoke on an auto-approved card: the token refused from then on, the trust reset."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from bot.approvals.publish import refresh_cards
from bot.buttons import ref_uuid
from bot.errors import ForgedButton, NotAnApprover, RequestClosed
from bot.runtime import Runtime
from bot.trust import on_revoke
from storage import approvals as repo
from storage import audit
from storage import tokens as tokens_repo


async def revoke_by_button(
    rt: Runtime,
    session: AsyncSession,
    *,
    ref: str,
    tag: str,
    chat_id: int,
    user_id: int,
) -> str:
    """A team approver's revocation of an auto-approval not redeemed yet, in `session`."""
    try:
        request_id = ref_uuid(ref)
    except ValueError:
        request_id = None
    if request_id is None or not rt.signer.check("pe", ref, "rv", chat_id, tag):
        await audit.record(
            session,
            "security.forged_button",
            actor_telegram_id=user_id,
            chat_id=chat_id,
            reason="bad_tag",
        )
        raise ForgedButton()
    locked = await repo.lock(session, request_id)
    team = rt.policy.team_for_chat(chat_id)
    if locked is None or team is None or locked[0].team_id != rt.team_ids.get(team.name):
        raise ForgedButton("This button does not belong to this chat.")
    req, now = locked
    approver = team.approvers.get(user_id)
    if approver is None:
        raise NotAnApprover(f"Only approvers of team {team.name} can revoke.")
    token = (await tokens_repo.tokens_for(session, [req.id])).get(req.id)
    if token is not None and token.redeemed_at is not None:
        raise RequestClosed("Too late: the executor already redeemed the token.")
    revoked = await repo.revoke(session, req.id, approver.name)
    if revoked is None:
        raise RequestClosed("This approval is already revoked.")
    await audit.record(
        session,
        "approval.revoked",
        actor=approver.name,
        actor_telegram_id=user_id,
        team_id=req.team_id,
        approval_id=req.id,
        rule=req.auto_rule,
    )
    await on_revoke(session, revoked, approver.name)
    await refresh_cards(rt, session, revoked, [], now)
    return "⛔ Revoked: the token will be refused."
