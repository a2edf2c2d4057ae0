"""The alerts' background work: card refresh passes, Alertmanager sync, silences ending."""

from __future__ import annotations

import aiohttp

from bot.alerts.alertmanager import ALERTMANAGER_TIMEOUT, sync_alertmanager
from bot.alerts.publish import render_cards
from bot.runtime import Runtime
from bot.wakeups import sleep_for
from storage import alerts as store
from storage import audit, wakeups
from storage.db import transaction

REFRESH_BATCH = 50


async def refresh_due_cards(rt: Runtime, limit: int = REFRESH_BATCH) -> int:
    """The alert cards' pass of the card worker (bot.cards): re-render those due."""
    async with transaction(rt.sessions) as session:
        due = await store.claim_due_cards(session, limit)
        if not due:
            return 0
        firing = [a for a in due if a.status == "firing"]
        rows = await render_cards(rt, session, firing, create_missing=True)
        await store.mark_cards_rendered(session, [a.id for a in due])
        await audit.record_many(session, rows)
        return len(due)


async def maintain_once(rt: Runtime, http: aiohttp.ClientSession) -> float | None:
    """Alertmanager jobs, then silences that ended; seconds until the next is due."""
    busy = await sync_alertmanager(rt, http)
    async with transaction(rt.sessions) as session:
        await store.release_silenced(session)
        due_in = await wakeups.alerts_due_in(session)
    return 0.0 if busy else due_in


async def run_maintenance(rt: Runtime) -> None:
    """Alertmanager silence sync and silences running out: a pass, then sleep until the next
    is due or a silence changes (NOTIFY)."""
    async with aiohttp.ClientSession(timeout=ALERTMANAGER_TIMEOUT) as http:
        with rt.wakeups.watch(wakeups.ALERTS) as woken:
            while True:
                due_in = await maintain_once(rt, http)
                await woken.sleep(sleep_for(due_in, did_work=due_in == 0.0))
