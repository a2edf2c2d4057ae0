"""Incident cards in the team chats: posted when declared, pinned while open, edited live."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from bot.incidents.card import CARD_LINES, card_markup, render_card
from bot.runtime import Runtime
from storage import incident_cards as cards
from storage import incidents as store
from storage.incidents import IncidentRecord
from storage.outbox import Priority, edit_message, enqueue_call, put_message
from storage.teams import active_chats

CARD_PURPOSE = "incident_card"
PIN_BATCH = 20


async def render(rt: Runtime, session: AsyncSession, incident: IncidentRecord) -> str:
    firing, resolved = await store.alert_counts(session, incident.id)
    return render_card(
        incident,
        tz=rt.zone,
        now=await store.db_now(session),
        firing=firing,
        resolved=resolved,
        approvals=await store.linked_approvals(session, incident.team_id, incident.id),
        lines=await store.last_lines(session, incident.id, CARD_LINES),
    )


async def refresh_cards(rt: Runtime, session: AsyncSession, incident: IncidentRecord) -> None:
    """Bring the incident's cards up to date, posting one in each team chat the first time."""
    html = await render(rt, session, incident)
    shown = await cards.cards_of(session, incident.id)
    if not shown and incident.status != "closed":
        for chat_id in await active_chats(session, incident.team_id):
            row_id = await put_message(
                session,
                chat_id=chat_id,
                purpose=CARD_PURPOSE,
                text_html=html,
                reply_markup=card_markup(rt.signer, incident, chat_id),
                priority=Priority.CARD,
            )
            await cards.add_card(session, incident.id, row_id, chat_id)
    for card in shown:
        markup = card_markup(rt.signer, incident, card.chat_id)
        if card.text == html and card.reply_markup == markup:
            continue  # Telegram refuses an edit that changes nothing
        await edit_message(
            session, card.row_id, text_html=html, reply_markup=markup, priority=Priority.CARD
        )


async def refresh_due(rt: Runtime, session: AsyncSession, limit: int) -> int:
    """Re-render the cards of incidents marked due (alerts and approvals changed them)."""
    ids = await cards.claim_due(session, limit)
    for incident_id in ids:
        incident = await store.get_by_id(session, incident_id)
        if incident is not None:
            await refresh_cards(rt, session, incident)
    return len(ids)


async def queue_pins(session: AsyncSession, limit: int = PIN_BATCH) -> int:
    """Pin sent cards of open incidents, unpin those of closed ones (a card is pinned once
    Telegram has given it a message id, so this follows the send)."""
    jobs = await cards.claim_pins(session, limit)
    for job in jobs:
        payload: dict[str, object] = {"chat_id": job.chat_id, "message_id": job.message_id}
        if job.pin:
            payload["disable_notification"] = True
        await enqueue_call(
            session,
            "pinChatMessage" if job.pin else "unpinChatMessage",
            payload,
            chat_id=job.chat_id,
            priority=Priority.CARD,
            kind="pin" if job.pin else "unpin",
        )
        await cards.set_pinned(session, job.card_id, job.pin)
    return len(jobs)
