"""The alerts' background work: card refresh passes, Alertmanager sync, silences ending."""

from __future__ import annotations

import asyncio
import time

import aiohttp

from bot.alerts import storm
from bot.alerts.alertmanager import ALERTMANAGER_TIMEOUT, sync_alertmanager
from bot.alerts.maintenance import summarize_ended
from bot.alerts.publish import render_cards
from bot.runtime import Runtime
from storage import alert_groups as groups_store
from storage import alerts as store
from storage import audit
from storage.db import transaction

REFRESH_BATCH = 50
RELEASE_EVERY_SECONDS = 5
SETTLE_EVERY_SECONDS = 1.0
IDLE_SECONDS = 0.2


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


async def settle_digests(rt: Runtime) -> int:
    """The storm digests' pass: finalise those whose chat stayed under budget long enough, and
    give their groups still firing their own cards. Returns how many it finalised."""
    done = 0
    async with transaction(rt.sessions) as session:
        for digest in await groups_store.claim_open_digests(session):
            still = await storm.settle_one(rt, session, digest)
            if still is None:
                continue
            alerts = await store.get_alerts(session, still)
            rows = await render_cards(rt, session, alerts, create_missing=True, own_cards=True)
            await audit.record_many(session, rows)
            done += 1
    return done


async def run_maintenance(rt: Runtime) -> None:
    """Alertmanager silence sync, silences running out, storm digests settling."""
    last_release = last_settle = 0.0
    async with aiohttp.ClientSession(timeout=ALERTMANAGER_TIMEOUT) as http:
        while True:
            busy = await sync_alertmanager(rt, http)
            if time.monotonic() - last_settle > SETTLE_EVERY_SECONDS:
                last_settle = time.monotonic()
                await settle_digests(rt)
            if time.monotonic() - last_release > RELEASE_EVERY_SECONDS:
                last_release = time.monotonic()
                # Also releases what silences and windows that ended kept silenced.
                await summarize_ended(rt)
            if not busy:
                await asyncio.sleep(IDLE_SECONDS)  # nothing due: poll again shortly
