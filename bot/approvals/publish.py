"""What a change to a request shows: its cards queued or edited in every team chat, and the
alert it is linked to told."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from bot import alerts
from bot.approvals.card import awaiting_reason, card_markup, render_card
from bot.approvals.outcome import outcome_of, waiting_names
from bot.approvals.requester import requester_mention
from bot.policy import RiskLevel
from bot.routes import destinations
from bot.runtime import Runtime
from storage import approvals as repo
from storage import audit
from storage import votes as vote_repo
from storage.outbox import Priority, edit_message, put_message
from storage.teams import active_chats

# How long a rejecter's reason is awaited (bot.approvals.reasons asks for it).
REJECT_REASON_SECONDS = 600
URGENT_RISKS = frozenset({RiskLevel.HIGH.value, RiskLevel.CRITICAL.value})


def card_priority(risk_level: str) -> Priority:
    """High and critical cards jump the queue: a flood of low-risk cards cannot delay them."""
    return Priority.URGENT_CARD if risk_level in URGENT_RISKS else Priority.CARD


def _linked(req: repo.RequestRecord) -> bool:
    return req.fingerprint is not None or req.incident_id is not None


async def alert_line(session: AsyncSession, req: repo.RequestRecord) -> str | None:
    if not _linked(req):
        return None
    return await alerts.linked_alert_line(session, req.team_id, req.fingerprint, req.incident_id)


async def notify_alerts(rt: Runtime, session: AsyncSession, req: repo.RequestRecord) -> None:
    if not _linked(req):
        return
    await alerts.on_approval_changed(rt, session, req.team_id, req.fingerprint, req.incident_id)


async def post_cards(rt: Runtime, session: AsyncSession, req: repo.RequestRecord) -> None:
    """Queue a new request's card to every active chat of its team (in this transaction)."""
    outcome = outcome_of(rt, req, [], req.created_at)
    text_html = render_card(
        req,
        [],
        outcome,
        rt.zone,
        await alert_line(session, req),
        waiting=waiting_names(rt, req, outcome),
    )
    team = rt.team(req.team_id)
    where = (
        await destinations(session, team, req.team_id, kind="approval", risk_level=req.risk_level)
        if team is not None
        else [(c, None) for c in await active_chats(session, req.team_id)]
    )
    for chat_id, thread_id in where:
        row_id = await put_message(
            session,
            chat_id=chat_id,
            purpose="approval_card",
            text_html=text_html,
            reply_markup=card_markup(rt, req, chat_id),
            priority=card_priority(req.risk_level),
            approval_id=req.id,
            thread_id=thread_id,
        )
        await audit.record(
            session,
            "card.queued",
            team_id=req.team_id,
            approval_id=req.id,
            chat_id=chat_id,
            message_row=row_id,
        )


async def refresh_cards(
    rt: Runtime,
    session: AsyncSession,
    req: repo.RequestRecord,
    votes: Sequence[vote_repo.VoteRecord],
    now: datetime,
    cards: Sequence[tuple[int, int]] | None = None,
) -> None:
    """Edit every chat's card of the request in place (queued in this transaction)."""
    if cards is None:
        cards = await repo.cards_of(session, req.id)
    if not cards:
        return
    text_html = await card_html(rt, session, req, votes, now)
    for row_id, chat_id in cards:
        await edit_message(
            session,
            row_id,
            text_html=text_html,
            reply_markup=card_markup(rt, req, chat_id),
            priority=card_priority(req.risk_level),
        )


async def post_card_to(
    rt: Runtime,
    session: AsyncSession,
    req: repo.RequestRecord,
    votes: Sequence[vote_repo.VoteRecord],
    now: datetime,
    chat_id: int,
) -> int:
    """One more card of the request, as it stands now, in `chat_id` (a private chat's
    /pending): its buttons are signed for that chat and it is refreshed like the others."""
    return await put_message(
        session,
        chat_id=chat_id,
        purpose="approval_card",
        text_html=await card_html(rt, session, req, votes, now),
        reply_markup=card_markup(rt, req, chat_id),
        priority=card_priority(req.risk_level),
        approval_id=req.id,
    )


async def card_html(
    rt: Runtime,
    session: AsyncSession,
    req: repo.RequestRecord,
    votes: Sequence[vote_repo.VoteRecord],
    now: datetime,
) -> str:
    """The card's HTML with everything it shows besides the request and its votes."""
    outcome = outcome_of(rt, req, votes, now)
    closed_by = None
    if req.status == "cancelled":
        closed_by = await repo.closing_actor(session, req.id, "approval.cancelled")
    team = rt.team(req.team_id)
    required = team is not None and team.rule(RiskLevel(req.risk_level)).require_reject_reason
    return render_card(
        req,
        votes,
        outcome,
        rt.zone,
        await alert_line(session, req),
        waiting=waiting_names(rt, req, outcome),
        closed_by=closed_by,
        awaiting_reason=awaiting_reason(required, votes, now, REJECT_REASON_SECONDS),
        requester_line=await requester_mention(session, req, team),
    )
