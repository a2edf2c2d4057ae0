"""Alert intake: a batch from one request stored in one transaction, its cards queued with it."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.exc import DBAPIError

from bot.alerts.publish import render_cards
from bot.alerts.sources import Kind
from bot.policy import Team
from bot.runtime import Runtime
from storage import alerts as store
from storage import audit
from storage.alerts import AlertRecord, IncomingAlert
from storage.db import transaction

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
    for attempt in range(RACE_RETRIES):
        try:
            return await _ingest_once(rt, batch)
        except DBAPIError as exc:
            # Two requests opening the same new alert at once: the loser hits the occurrence
            # key (ON CONFLICT arbitrates only the firing index) or a deadlock; a retry sees
            # the winner's row and counts as a repeat.
            code = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
            if code not in RETRYABLE_SQLSTATES or attempt == RACE_RETRIES - 1:
                raise
    raise AssertionError("unreachable")


async def _ingest_once(rt: Runtime, batch: _Batch) -> IngestResult:
    interval = rt.settings.alert_edit_interval_seconds
    team_id = batch.team_id
    async with transaction(rt.sessions) as session:
        rows = await store.upsert_firing(session, team_id, batch.firing, edit_interval=interval)
        done = await store.resolve_firing(session, team_id, batch.resolved, edit_interval=interval)
        audit_rows = _audit_rows(batch, done)
        new_ids = [r.id for r in rows if r.inserted and not r.silenced]
        if new_ids:
            fresh = await store.get_alerts(session, new_ids)
            audit_rows.extend(await render_cards(rt, session, fresh, create_missing=True))
            await store.mark_cards_rendered(session, new_ids)
        if done:
            when = {a.id: a.last_card_edit_at for a in done if a.last_card_edit_at is not None}
            await render_cards(rt, session, done, not_before=when)
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
