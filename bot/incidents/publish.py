"""Incident cards in the team chats: posted when declared, pinned while open, edited live."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from bot.runtime import Runtime
from storage.incidents import IncidentRecord


async def refresh_cards(rt: Runtime, session: AsyncSession, incident: IncidentRecord) -> None:
    """Bring the incident's cards up to date (posting them the first time)."""
