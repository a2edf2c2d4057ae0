"""Votes by button: a signed tap checked, counted, and the request decided when it tips."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TypeVar

from sqlalchemy.ext.asyncio import AsyncSession

from bot.approvals.decision import after_decision, decided_by
from bot.approvals.outcome import outcome_of
from bot.approvals.reasons import ask_reject_reason
from bot.approvals.stepup import ask, before_vote
from bot.buttons import ref_uuid
from bot.errors import (
    AlreadyVoted,
    ForgedButton,
    NotAnApprover,
    NotTheRequester,
    Refused,
    RequestClosed,
    RequesterCannotVote,
    RequestExpired,
)
from bot.policy import Approver
from bot.runtime import Runtime
from bot.votes import APPROVE, REJECT, Decision, Outcome, requester_id, requesters
from storage import approvals as repo
from storage import audit
from storage import incidents as incident_timeline
from storage import votes as vote_repo

VOTE_CODES = {"a": APPROVE, "r": REJECT}
# A card under a storm of votes is re-rendered at most every 3 s: Telegram allows 20 edits a
# minute per group, so faster renders would only be overwritten before the sender could send
# them (they cost a third of the bot's CPU in bench.votes at 1 s). A vote after a quiet spell
# still shows at once (marking the card due wakes the card worker: NOTIFY, bot.wakeups).
CARD_REFRESH_SECONDS = 3.0

E = TypeVar("E", bound=Refused)


@dataclass(frozen=True, slots=True)
class Tap:
    ref: str
    vote: str
    tag: str
    chat_id: int
    message_id: int
    user_id: int
    user_name: str = ""


@dataclass(frozen=True, slots=True)
class VoteResult:
    request_id: uuid.UUID
    decision: Decision
    toast: str


async def _refuse(
    rt: Runtime,
    session: AsyncSession,
    tap: Tap,
    error: E,
    reason: str,
    *,
    team_id: int | None = None,
    approval_id: uuid.UUID | None = None,
) -> E:
    """Audit a refused tap in `session` and count it; returns the error for the caller to raise."""
    event = "security.forged_button" if isinstance(error, ForgedButton) else "vote.refused"
    await audit.record(
        session,
        event,
        actor=tap.user_name[:128] or None,
        actor_telegram_id=tap.user_id,
        team_id=team_id,
        approval_id=approval_id,
        chat_id=tap.chat_id,
        reason=reason,
        message_id=tap.message_id,
        vote=tap.vote[:8],
    )
    rt.metrics.votes.labels(error.code).inc()
    return error


async def vote(rt: Runtime, session: AsyncSession, tap: Tap) -> VoteResult:
    """Count one tap. Refusals raise Refused after writing their audit row to `session`."""
    ctx, decision = await _genuine_card(rt, session, tap)
    req = ctx.request
    approver = await _eligible_voter(rt, session, tap, ctx)
    confirmed = await before_vote(rt, session, req, decision, tap.user_id)
    inserted, votes = await vote_repo.add_vote(
        session,
        req.id,
        team_id=req.team_id,
        voter=tap.user_id,
        name=approver.name,
        decision=decision,
        chat_id=tap.chat_id,
        message_id=tap.message_id,
        refresh_interval=CARD_REFRESH_SECONDS,
    )
    if not inserted:
        earlier = next((v.decision for v in votes if v.voter_telegram_id == tap.user_id), "")
        raise await _refuse(
            rt,
            session,
            tap,
            AlreadyVoted(f"You already voted: {earlier}."),
            "already_voted",
            team_id=req.team_id,
            approval_id=req.id,
        )
    if req.incident_id:
        # The incident's timeline has each vote, written in the vote's transaction.
        verb = "approved" if decision == APPROVE else "rejected"
        await incident_timeline.approval_event(
            session,
            req.id,
            "approval.voted",
            f"{approver.name} {verb} {req.action[:200]} on {req.target[:200]}",
            actor=approver.name,
            actor_telegram_id=tap.user_id,
        )
    outcome = outcome_of(rt, req, votes, ctx.db_now, confirmed=confirmed)
    rt.metrics.votes.labels(decision).inc()
    if decision == REJECT:
        await _ask_why(session, tap, req.id, votes, approver)
    if outcome.decision in (Decision.APPROVED, Decision.REJECTED):
        toast = await _decide(rt, session, tap, ctx, votes, outcome, approver)
        if toast is not None:
            return VoteResult(req.id, outcome.decision, toast)
    # The cards show this vote once the card worker re-renders them (add_vote scheduled it).
    if confirmed is not None and decision == APPROVE:
        await ask(rt, session, req, tap.user_id)
        return VoteResult(req.id, Decision.PENDING, "🔐 Confirm it in your private chat with me.")
    return VoteResult(req.id, Decision.PENDING, recorded_toast(decision, outcome))


def recorded_toast(decision: str, outcome: Outcome) -> str:
    """The toast of a vote counted on a request it left pending."""
    mark = "✅ Approval" if decision == APPROVE else "❌ Rejection"
    return f"{mark} recorded ({len(outcome.approvals)}/{outcome.required} approvals)."


async def _ask_why(
    session: AsyncSession,
    tap: Tap,
    request_id: uuid.UUID,
    votes: list[vote_repo.VoteRecord],
    approver: Approver,
) -> None:
    """After the rejection counted: ask its reason by ForceReply (outside the vote statement)."""
    mine = next(v for v in votes if v.voter_telegram_id == tap.user_id)
    await ask_reject_reason(
        session,
        approval_id=request_id,
        vote_id=mine.id,
        voter_id=tap.user_id,
        voter_name=approver.name,
        chat_id=tap.chat_id,
        card_message_id=tap.message_id,
    )


async def _genuine_card(
    rt: Runtime, session: AsyncSession, tap: Tap
) -> tuple[repo.VoteContext, str]:
    """The request locked for the vote and the decision, if the button is ours and on its card."""
    decision = VOTE_CODES.get(tap.vote)
    request_id = ref_or_none(tap.ref)
    if decision is None or request_id is None:
        raise await _refuse(rt, session, tap, ForgedButton("This button is not valid."), "bad_ref")
    if not rt.signer.check("ap", tap.ref, tap.vote, tap.chat_id, tap.tag):
        raise await _refuse(
            rt, session, tap, ForgedButton("This button is not valid here."), "bad_tag"
        )
    ctx = await repo.lock_for_vote(session, request_id, tap.chat_id, tap.message_id)
    if ctx is None:
        raise await _refuse(
            rt,
            session,
            tap,
            ForgedButton("This button does not belong to this card."),
            "card_mismatch",
            approval_id=request_id,
        )
    return ctx, decision


async def _eligible_voter(
    rt: Runtime, session: AsyncSession, tap: Tap, ctx: repo.VoteContext
) -> Approver:
    """The tapping approver, if they may vote on this request now."""
    req = ctx.request
    team = rt.team(req.team_id)
    approver = team.approvers.get(tap.user_id) if team else None
    refusal: tuple[Refused, str] | None
    if team is None or approver is None:
        team_name = team.name if team else "?"
        refusal = (NotAnApprover(f"You are not an approver for team {team_name}."), "not_approver")
    else:
        refusal = _closed_to(tap, ctx, team.approvers)
        if refusal is None:
            return approver
    error, reason = refusal
    raise await _refuse(rt, session, tap, error, reason, team_id=req.team_id, approval_id=req.id)


def _closed_to(
    tap: Tap, ctx: repo.VoteContext, approvers: Mapping[int, Approver]
) -> tuple[Refused, str] | None:
    """Why an approver's tap cannot count on this request (with the audit reason), if so."""
    req = ctx.request
    if not req.pending:
        return RequestClosed(f"This request is already {req.status}."), "closed"
    if ctx.db_now >= req.expires_at:
        return RequestExpired("This request has expired."), "expired"
    if tap.user_id in requesters(req, approvers):
        return RequesterCannotVote("Requesters cannot vote on their own request."), "requester"
    return None


async def _decide(
    rt: Runtime,
    session: AsyncSession,
    tap: Tap,
    ctx: repo.VoteContext,
    votes: list[vote_repo.VoteRecord],
    outcome: Outcome,
    approver: Approver,
) -> str | None:
    """The terminal transition this vote tipped, with its aftermath; None if another won it."""
    decided = await repo.transition(
        session,
        ctx.request.id,
        outcome.decision.value,
        decided_by=decided_by(votes, outcome.deciders),
    )
    if decided is None:
        return None
    await after_decision(
        rt,
        session,
        decided,
        votes,
        ctx.db_now,
        ctx.cards,
        actor=approver.name,
        actor_telegram_id=tap.user_id,
    )
    return (
        "✅ Approved: the executor can go ahead."
        if decided.status == "approved"
        else "❌ Rejected."
    )


async def withdraw(rt: Runtime, session: AsyncSession, tap: Tap) -> str:
    """The requester's 🚫 Withdraw: the request is cancelled with them as the actor (audited);
    anyone else is refused with a toast (and audited)."""
    request_id = ref_or_none(tap.ref)
    if request_id is None or not rt.signer.check("ap", tap.ref, tap.vote, tap.chat_id, tap.tag):
        raise await _refuse(rt, session, tap, ForgedButton(), "bad_tag")
    ctx = await repo.lock_for_vote(session, request_id, tap.chat_id, tap.message_id)
    if ctx is None:
        raise await _refuse(
            rt, session, tap, ForgedButton(), "card_mismatch", approval_id=request_id
        )
    req = ctx.request
    team = rt.team(req.team_id)
    refusal: tuple[Refused, str] | None = None
    if team is None or requester_id(req, team.approvers) != tap.user_id:
        refusal = (NotTheRequester("Only the requester can withdraw this request."), "withdraw")
    elif not req.pending or ctx.db_now >= req.expires_at:
        refusal = (RequestClosed(f"This request is already {req.status}."), "closed")
    if refusal is not None:
        error, reason = refusal
        raise await _refuse(
            rt, session, tap, error, reason, team_id=req.team_id, approval_id=req.id
        )
    cancelled = await repo.transition(session, req.id, "cancelled", require_live=False)
    if cancelled is None:
        raise await _refuse(
            rt, session, tap, RequestClosed("This request is already closed."), "closed"
        )
    votes = (await vote_repo.votes_for(session, [req.id]))[req.id]
    await after_decision(
        rt,
        session,
        cancelled,
        votes,
        ctx.db_now,
        ctx.cards,
        actor=req.requested_by[:200],
        actor_telegram_id=tap.user_id,
    )
    return "🚫 Withdrawn: the request is cancelled."


def ref_or_none(ref: str) -> uuid.UUID | None:
    try:
        return ref_uuid(ref)
    except ValueError:
        return None


async def refuse_malformed(
    rt: Runtime, session: AsyncSession, *, chat_id: int, message_id: int, user_id: int
) -> ForgedButton:
    """A tap whose callback_data is not even shaped like ours: audited as forged."""
    tap = Tap("", "", "", chat_id, message_id, user_id)
    return await _refuse(rt, session, tap, ForgedButton("This button is not valid."), "malformed")
