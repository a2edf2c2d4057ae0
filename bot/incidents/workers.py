"""The incident cards' pass of the card worker: due refreshes, then pins and unpins."""

from __future__ import annotations

from bot.incidents.publish import queue_pins, refresh_due
from bot.runtime import Runtime
from storage.db import transaction

REFRESH_BATCH = 20


async def refresh_due_cards(rt: Runtime, limit: int = REFRESH_BATCH) -> int:
    """Cards of incidents marked due re-rendered, and pins queued; how many of both."""
    async with transaction(rt.sessions) as session:
        done = await refresh_due(rt, session, limit)
        return done + await queue_pins(session, limit)
