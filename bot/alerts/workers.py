"""The alerts' background work: card refresh passes, Alertmanager sync, silences ending."""

from __future__ import annotations

import aiohttp

from bot.alerts import storm
from bot.alerts.alertmanager import ALERTMANAGER_TIMEOUT, sync_alertmanager
from bot.alerts.maintenance import summarize_ended
from bot.alerts.publish import render_cards
from bot.runtime import Runtime
from bot.wakeups import sleep_for
from storage import alert_groups as groups_store
from storage import alerts as store
from storage import audit, wakeups
from storage.db import transaction

REFRESH_BATCH = 50
# While a storm digest is open, whether its chat calmed down is checked this often.
SETTLE_EVERY_SECONDS = 1.0


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


async def settle_digests(rt: Runtime) -> tuple[int, int]:
    """The storm digests' pass: finalise those whose chat stayed under budget long enough, and
    give their groups still firing their own cards. Returns (finalised, still open)."""
    done = still_open = 0
    async with transaction(rt.sessions) as session:
        for digest in await groups_store.claim_open_digests(session):
            still = await storm.settle_one(rt, session, digest)
            if still is None:
                still_open += 1
                continue
            alerts = await store.get_alerts(session, still)
            rows = await render_cards(rt, session, alerts, create_missing=True, own_cards=True)
            await audit.record_many(session, rows)
            done += 1
    return done, still_open


async def maintain_once(rt: Runtime, http: aiohttp.ClientSession) -> float | None:
    """Alertmanager jobs, storm digests settling, then silences and maintenance windows that
    ended (summed up, their alerts released); seconds until the next is due."""
    busy = await sync_alertmanager(rt, http)
    _, digests_open = await settle_digests(rt)
    await summarize_ended(rt)
    async with transaction(rt.sessions) as session:
        due_in = await wakeups.alerts_due_in(session)
    if busy:
        return 0.0
    if digests_open:
        return SETTLE_EVERY_SECONDS if due_in is None else min(due_in, SETTLE_EVERY_SECONDS)
    return due_in


async def run_maintenance(rt: Runtime) -> None:
    """Alertmanager silence sync, silences and windows running out, storm digests settling: a
    pass, then sleep until the next is due or a silence changes (NOTIFY)."""
    async with aiohttp.ClientSession(timeout=ALERTMANAGER_TIMEOUT) as http:
        with rt.wakeups.watch(wakeups.ALERTS) as woken:
            while True:
                due_in = await maintain_once(rt, http)
                await woken.sleep(sleep_for(due_in, did_work=due_in == 0.0))
