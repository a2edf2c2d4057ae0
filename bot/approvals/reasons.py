"""Reasons: a request's justification checked against its level's rule, and a rejecter's
reason asked by ForceReply after the tap (the tap itself counts at once)."""

from __future__ import annotations

import uuid

from sqlalchemy.ext.asyncio import AsyncSession

from bot import questions
from bot.approvals.card import mention
from bot.approvals.decision import vote_reasons
from bot.approvals.publish import REJECT_REASON_SECONDS, refresh_cards
from bot.policy import Rule
from bot.runtime import Runtime
from storage import approvals as repo
from storage import audit
from storage import questions as questions_repo
from storage import tokens as tokens_repo
from storage import votes as vote_repo

MAX_REASON = 1000
REJECT_REASON = "reject_reason"


def reason_problem(rule: Rule, reason: str | None) -> tuple[str, str] | None:
    """(error code, message) when the request's reason breaks its level's rule, else None."""
    text = (reason or "").strip()
    if not text:
        if rule.require_reason:
            return "reason_required", "this risk level requires a reason (require_reason)"
        return None
    if rule.reason_pattern is not None and rule.reason_pattern.search(text) is None:
        return (
            "reason_invalid",
            f"must match the policy's reason_pattern {rule.reason_pattern.pattern!r}",
        )
    return None


async def ask_reject_reason(
    session: AsyncSession,
    *,
    approval_id: uuid.UUID,
    vote_id: int,
    voter_id: int,
    voter_name: str,
    chat_id: int,
    card_message_id: int,
) -> None:
    """Ask the rejecter why, under the card they tapped, by a ForceReply addressed to them."""
    await questions.ask(
        session,
        kind=REJECT_REASON,
        chat_id=chat_id,
        user_id=voter_id,
        # The mention (by id) is what makes the selective ForceReply reach this voter.
        text_html=f"{mention(voter_id, voter_name)}, why reject? Reply to this message.",
        subject={"approval_id": str(approval_id), "vote_id": vote_id},
        ttl_seconds=REJECT_REASON_SECONDS,
        placeholder="the reason for your rejection",
        reply_to=card_message_id,
    )


@questions.on_answer(REJECT_REASON)
async def store_reject_reason(rt: Runtime, session: AsyncSession, answer: questions.Answer) -> None:
    """The rejecter's reply: on the vote, audited, on the card, and in a waiting callback."""
    subject = answer.question.subject
    approval_id = uuid.UUID(str(subject["approval_id"]))
    reason = answer.text.strip()[:MAX_REASON]
    # The request first, as a vote locks it: the two never wait on each other crosswise.
    locked = await repo.lock(session, approval_id) if reason else None
    if locked is None:
        return
    req, now = locked
    if not await vote_repo.set_vote_reason(session, int(subject["vote_id"]), reason):
        return
    await audit.record(
        session,
        "vote.reason",
        actor_telegram_id=answer.user_id,
        team_id=req.team_id,
        approval_id=approval_id,
        chat_id=answer.chat_id,
        reason=reason,
    )
    votes = (await vote_repo.votes_for(session, [approval_id]))[approval_id]
    await refresh_cards(rt, session, req, votes, now)
    if not await reasons_pending(session, approval_id):
        await tokens_repo.release_held_callback(
            session, approval_id, {"vote_reasons": vote_reasons(votes)}
        )


async def reasons_pending(session: AsyncSession, approval_id: uuid.UUID) -> bool:
    """Whether a rejecter of this request may still give their reason."""
    return bool(await questions_repo.open_for(session, REJECT_REASON, "approval_id", approval_id))
