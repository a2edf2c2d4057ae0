"""Alert cards in the team chats: sent once per chat, then kept up to date by edits."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from bot.alerts.card import card_markup, render_card
from bot.routes import Destination, destinations
from bot.runtime import Runtime
from storage import alerts as store
from storage.alerts import AckRecord, AlertRecord, CardRef, LinkedApproval, SilenceRecord
from storage.outbox import Priority, edit_message, put_message
from storage.teams import active_chats

CARD_PURPOSE = "alert_card"


@dataclass(frozen=True, slots=True)
class _Context:
    """What a batch of cards shows beside the alerts themselves."""

    acks: dict[int, list[AckRecord]]
    approvals: dict[int, list[LinkedApproval]]
    silences: dict[tuple[int, str], SilenceRecord]

    def render(self, rt: Runtime, alert: AlertRecord) -> str:
        return render_card(
            alert,
            tz=rt.zone,
            acks=self.acks.get(alert.id, ()),
            silence=self.silences.get((alert.team_id, alert.fingerprint)),
            approvals=self.approvals.get(alert.id, ()),
        )


async def render_cards(
    rt: Runtime,
    session: AsyncSession,
    alerts: Sequence[AlertRecord],
    *,
    not_before: dict[int, datetime] | None = None,
    create_missing: bool = False,
) -> list[dict[str, Any]]:
    """Bring every card of these alerts up to date; returns audit rows for new cards."""
    if not alerts:
        return []
    refs = await store.card_refs(session, [a.id for a in alerts])
    context = await _load_context(session, alerts)
    audit_rows: list[dict[str, Any]] = []
    for alert in alerts:
        html = context.render(rt, alert)
        cards = refs.get(alert.id, [])
        if cards:
            when = (not_before or {}).get(alert.id)
            await _edit_cards(rt, session, alert, cards, html, when)
        elif create_missing and alert.status == "firing" and not alert.silenced:
            where = await _destinations(rt, session, alert)
            audit_rows += await _send_cards(rt, session, alert, where, html)
    return audit_rows


async def _load_context(session: AsyncSession, alerts: Sequence[AlertRecord]) -> _Context:
    ids = [a.id for a in alerts]
    acks = await store.acks_for(session, ids)
    approvals = await store.pending_approvals_for(session, alerts)
    silences: dict[tuple[int, str], SilenceRecord] = {}
    for team_id in {a.team_id for a in alerts if a.silenced}:
        fps = [a.fingerprint for a in alerts if a.silenced and a.team_id == team_id]
        for s in await store.active_silences(session, team_id, fps):
            silences.setdefault((team_id, s.fingerprint), s)
    return _Context(acks=acks, approvals=approvals, silences=silences)


async def _destinations(
    rt: Runtime, session: AsyncSession, alert: AlertRecord
) -> list[Destination]:
    team = rt.team(alert.team_id)
    if team is None:
        return [(c, None) for c in await active_chats(session, alert.team_id)]
    return await destinations(
        session,
        team,
        alert.team_id,
        kind="alert",
        severity=alert.severity,
        source=alert.source,
        labels=alert.labels,
    )


async def _send_cards(
    rt: Runtime,
    session: AsyncSession,
    alert: AlertRecord,
    where: list[Destination],
    html: str,
) -> list[dict[str, Any]]:
    """Queue the alert's first card in each chat (and topic); returns their audit rows."""
    audit_rows = []
    for chat_id, thread_id in where:
        await put_message(
            session,
            chat_id=chat_id,
            purpose=CARD_PURPOSE,
            text_html=html,
            reply_markup=card_markup(rt.signer, alert, chat_id),
            priority=Priority.ALERT_SEND,
            alert_id=alert.id,
            thread_id=thread_id,
        )
        audit_rows.append(
            {
                "event": "alert.sent",
                "team_id": alert.team_id,
                "alert_id": alert.id,
                "chat_id": chat_id,
                "detail": {"fingerprint": alert.fingerprint, "occurrence": alert.occurrence},
            }
        )
    return audit_rows


async def _edit_cards(
    rt: Runtime,
    session: AsyncSession,
    alert: AlertRecord,
    cards: list[CardRef],
    html: str,
    not_before: datetime | None,
) -> None:
    for card in cards:
        markup = card_markup(rt.signer, alert, card.chat_id)
        if card.text == html and card.reply_markup == markup:
            continue  # Telegram refuses an edit that changes nothing
        await edit_message(
            session,
            card.row_id,
            text_html=html,
            reply_markup=markup,
            priority=Priority.ALERT_EDIT,
            not_before=not_before,
        )
