"""Incident cards: which bot message shows an incident in which chat, due refreshes, pins."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from storage.incidents import OPEN
from storage.models import Incident, IncidentCard, TelegramMessage


@dataclass(frozen=True, slots=True)
class CardRef:
    row_id: int  # telegram_messages.id
    chat_id: int
    message_id: int | None  # None until sent
    text: str
    reply_markup: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class PinJob:
    card_id: int
    chat_id: int
    message_id: int
    pin: bool  # pin it (open incident) or unpin it (closed)


async def add_card(session: AsyncSession, incident_id: str, row_id: int, chat_id: int) -> None:
    session.add(IncidentCard(incident_id=incident_id, message_row_id=row_id, chat_id=chat_id))
    await session.flush()


async def cards_of(session: AsyncSession, incident_id: str) -> list[CardRef]:
    rows = await session.execute(
        select(
            TelegramMessage.id,
            TelegramMessage.chat_id,
            TelegramMessage.message_id,
            TelegramMessage.text,
            TelegramMessage.reply_markup,
        )
        .join(IncidentCard, IncidentCard.message_row_id == TelegramMessage.id)
        .where(IncidentCard.incident_id == incident_id)
        .order_by(TelegramMessage.id)
    )
    return [CardRef(*r) for r in rows]


async def card_in_chat(session: AsyncSession, chat_id: int, message_id: int) -> str | None:
    """The incident whose card is this chat message, if it is one."""
    found: str | None = await session.scalar(
        select(IncidentCard.incident_id)
        .join(TelegramMessage, IncidentCard.message_row_id == TelegramMessage.id)
        .where(TelegramMessage.chat_id == chat_id, TelegramMessage.message_id == message_id)
    )
    return found


async def mark_due(session: AsyncSession, incident_ids: Sequence[str]) -> None:
    """Ask the card worker to re-render these incidents' cards."""
    if incident_ids:
        await session.execute(
            update(Incident)
            .where(Incident.id.in_(list(incident_ids)), Incident.card_due_at.is_(None))
            .values(card_due_at=func.now())
        )


async def claim_due(session: AsyncSession, limit: int) -> list[str]:
    """Incidents whose cards are due, locked (other workers skip them), no longer due."""
    ids = list(
        await session.scalars(
            select(Incident.id)
            .where(Incident.card_due_at.is_not(None), Incident.card_due_at <= func.now())
            .order_by(Incident.card_due_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
    )
    if ids:
        await session.execute(update(Incident).where(Incident.id.in_(ids)).values(card_due_at=None))
    return ids


async def claim_pins(session: AsyncSession, limit: int) -> list[PinJob]:
    """Sent cards of open incidents not pinned yet, and pinned cards of closed ones, locked."""
    wanted = Incident.status.in_(OPEN)
    rows = await session.execute(
        select(IncidentCard.id, IncidentCard.chat_id, TelegramMessage.message_id, wanted)
        .join(Incident, Incident.id == IncidentCard.incident_id)
        .join(TelegramMessage, TelegramMessage.id == IncidentCard.message_row_id)
        .where(
            TelegramMessage.message_id.is_not(None),
            IncidentCard.pinned.is_distinct_from(wanted),
            Incident.status != "resolved",  # a resolved card stays pinned until closed
        )
        .order_by(IncidentCard.id)
        .limit(limit)
        .with_for_update(of=IncidentCard, skip_locked=True)
    )
    return [PinJob(r[0], r[1], r[2] or 0, bool(r[3])) for r in rows]


async def set_pinned(session: AsyncSession, card_id: int, pinned: bool) -> None:
    await session.execute(
        update(IncidentCard).where(IncidentCard.id == card_id).values(pinned=pinned)
    )
