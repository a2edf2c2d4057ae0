"""Alert intake: a batch from one request stored in one transaction, its cards queued with it."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.exc import DBAPIError

from bot.alerts.group_card import group_key
from bot.alerts.publish import render_cards
from bot.alerts.sources import Kind
from bot.incidents.rules import group_alerts
from bot.policy import Team
from bot.runtime import Runtime
from storage import alert_firing, audit, incidents
from storage import alert_groups as groups_store
from storage import alerts as store
from storage.alerts import AlertRecord, IncomingAlert
from storage.db import autocommit, transaction
from storage.outbox import Priority

RACE_RETRIES = 3
# unique_violation, deadlock_detected, serialization_failure
RETRYABLE_SQLSTATES = frozenset({"23505", "40P01", "40001"})


@dataclass(frozen=True, slots=True)
class IngestResult:
    received: int
    new: int
    repeats: int
    resolved: int
    silenced: int


@dataclass(frozen=True, slots=True)
class _Batch:
    """A request's alerts folded by fingerprint: the last word on each, and firing hits."""

    team_id: int
    received: int
    latest: dict[str, IncomingAlert]
    hits: Counter[str]
    firing: list[tuple[IncomingAlert, int]]
    resolved: dict[str, datetime | None]


def _fold(team_id: int, alerts: Sequence[IncomingAlert]) -> _Batch:
    latest: dict[str, IncomingAlert] = {}
    hits: Counter[str] = Counter()
    for a in alerts:
        latest[a.fingerprint] = a
        if a.status == "firing":
            hits[a.fingerprint] += 1
    firing = sorted(
        ((a, hits[fp]) for fp, a in latest.items() if a.status == "firing"),
        key=lambda pair: pair[0].fingerprint,
    )
    resolved = {fp: a.ends_at for fp, a in latest.items() if a.status == "resolved"}
    return _Batch(team_id, len(alerts), latest, hits, firing, resolved)


async def ingest(
    rt: Runtime, team: Team, alerts: Sequence[IncomingAlert], *, kind: Kind
) -> IngestResult:
    """Store a batch of alerts from one request in one transaction; cards are queued with it.

    New occurrences get a card in every team chat; repeats bump the count and schedule a
    coalesced card refresh; resolved alerts get their cards edited. Silenced: counted only.
    """
    batch = _fold(rt.team_ids[team.name], alerts)
    # Labelled by intake route, never by the sender's free-text `source`: every distinct label
    # value is a series kept for the life of the process and listed on each /metrics scrape.
    rt.metrics.alerts_received.labels(kind).inc(len(alerts))
    if len(batch.firing) == 1 and not batch.resolved:
        counted = await _count_repeat(rt, batch)
        if counted is not None:
            return counted
    for attempt in range(RACE_RETRIES):
        try:
            return await _ingest_once(rt, team, batch)
        except DBAPIError as exc:
            # Two requests opening the same new alert at once: the loser hits the occurrence
            # key (ON CONFLICT arbitrates only the firing index) or a deadlock; a retry sees
            # the winner's row and counts as a repeat.
            code = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
            if code not in RETRYABLE_SQLSTATES or attempt == RACE_RETRIES - 1:
                raise
    raise AssertionError("unreachable")


async def _count_repeat(rt: Runtime, batch: _Batch) -> IngestResult | None:
    """A body of one firing alert that repeats a firing one, counted by one autocommit
    statement (storage.alert_firing.count_repeat) with its audit row; None when it wrote
    nothing (a new occurrence, an open incident): the body then takes the transaction."""
    alert, hits = batch.firing[0]
    async with autocommit(rt.engine) as conn:
        row = await alert_firing.count_repeat(
            conn, batch.team_id, alert, hits, edit_interval=rt.settings.alert_edit_interval_seconds
        )
    if row is None:
        return None
    rt.metrics.alerts_plain.inc()
    return IngestResult(
        received=batch.received, new=0, repeats=1, resolved=0, silenced=int(row.silenced)
    )


async def _ingest_once(rt: Runtime, team: Team, batch: _Batch) -> IngestResult:
    interval = rt.settings.alert_edit_interval_seconds
    team_id = batch.team_id
    async with transaction(rt.sessions) as session:
        # The one query incidents add to every batch (usually no row: no open incident).
        groups = await incidents.open_groups(session, team_id)
        firing = group_alerts(batch.firing, groups) if groups else batch.firing
        rows = await alert_firing.upsert_firing(session, team_id, firing, edit_interval=interval)
        done = await store.resolve_firing(session, team_id, batch.resolved, edit_interval=interval)
        if groups:
            await incidents.record_ingest(
                session,
                attached=[r.id for r in rows],
                resolved=[a.id for a in done],
                edit_interval=interval,
            )
        audit_rows = _audit_rows(batch, done)
        keys = [
            (
                r.id,
                group_key(batch.latest[r.fingerprint].labels, team.alert_group_by, r.fingerprint),
            )
            for r in rows
            if r.inserted
        ]
        group_of = await groups_store.assign_groups(session, team_id, keys)
        new_ids = [r.id for r in rows if r.inserted and not r.silenced]
        if new_ids:
            fresh = await store.get_alerts(session, new_ids)
            # A first alert of its group gets the group's card; another joins it, shown at
            # the card's next refresh (a count refresh, after every new group's card).
            opened = [a for a in fresh if group_of.get(a.id) == a.id]
            audit_rows.extend(await render_cards(rt, session, opened, create_missing=True))
            joined = [a.id for a in fresh if group_of.get(a.id) != a.id]
            await store.schedule_refresh(session, joined, edit_interval=interval)
        if done:
            await render_cards(rt, session, done, priority=Priority.ALERT_RESOLVE)
        await audit.record_many(session, audit_rows)
    return IngestResult(
        received=batch.received,
        new=sum(1 for r in rows if r.inserted),
        repeats=sum(1 for r in rows if not r.inserted),
        resolved=len(done),
        silenced=sum(1 for r in rows if r.silenced),
    )


def _audit_rows(batch: _Batch, done: list[AlertRecord]) -> list[dict[str, Any]]:
    """One row per alert resolved and per resolve matching nothing (upsert_firing wrote those
    of the firing alerts)."""
    team_id = batch.team_id
    out: list[dict[str, Any]] = []
    out.extend(
        {
            "event": "alert.resolved",
            "team_id": team_id,
            "alert_id": a.id,
            "actor": a.source,
            "detail": {"fingerprint": a.fingerprint, "hits": a.hit_count, "by": "source"},
        }
        for a in done
    )
    resolved_fps = {a.fingerprint for a in done}
    out.extend(
        {
            "event": "alert.received",
            "team_id": team_id,
            "actor": batch.latest[fp].source,
            "detail": {"fingerprint": fp, "status": "resolved", "matched": False},
        }
        for fp in batch.resolved
        if fp not in resolved_fps
    )
    return out
