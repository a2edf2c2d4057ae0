"""Firing alerts in: the set-based upsert of a body's alerts, and the plain repeat."""

from __future__ import annotations

import json
from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncSession

from storage import audit
from storage.alerts import IncomingAlert, UpsertRow, iso
from storage.db import Raw, raw
from storage.incidents import OPEN_SQL

# SQL text, not Core: a set-based upsert over jsonb_to_recordset with a partial-index conflict
# target and an xmax test, which Core would only obscure. $1 the team, $2 the body's rows
# (_rows), $3 the card edit interval in seconds.
_BODY_ROWS = """jsonb_to_recordset($2::jsonb) AS r(fingerprint text, source text, title text,
        severity text, labels jsonb, annotations jsonb, url text, incident_id text,
        starts_at timestamptz, ends_at timestamptz, hits int, context jsonb)"""

_SILENCED = """EXISTS (SELECT 1 FROM silences s
        WHERE s.team_id = $1
          AND (s.fingerprint = r.fingerprint
               OR (s.fingerprint = 'maintenance' AND r.labels @> (s.matchers->'labels')))
          AND s.cancelled_at IS NULL AND s.starts_at <= now() AND s.ends_at > now())"""


def _repeat_set(new: str) -> str:
    """What a repeat changes on the firing row `a`, read from `new` (EXCLUDED in the upsert,
    the body's row in the plain repeat). A repeat never re-renders the card: it schedules a
    coalesced refresh (card_due_at) no earlier than one edit interval after the last one; a
    silenced alert schedules none."""
    return f"""hit_count = a.hit_count + {new}.hit_count,
        last_seen_at = now(),
        updated_at = now(),
        title = {new}.title,
        severity = {new}.severity,
        labels = {new}.labels,
        annotations = {new}.annotations,
        url = coalesce({new}.url, a.url),
        incident_id = coalesce({new}.incident_id, a.incident_id),
        ends_at = {new}.ends_at,
        context = {new}.context,
        silenced = {new}.silenced,
        card_due_at = CASE WHEN {new}.silenced THEN a.card_due_at
            ELSE coalesce(a.card_due_at, greatest(now(),
                a.last_card_edit_at + make_interval(secs => $3::float8)))
            END"""


# One statement per body: a conflict on the partial index uq_alerts_firing turns the insert
# into a repeat. Rows go in fingerprint order so concurrent bodies lock in the same order.
_UPSERT_FIRING = f"""
    INSERT INTO alerts AS a (team_id, fingerprint, occurrence, status, source, title, severity,
        labels, annotations, url, incident_id, starts_at, ends_at, hit_count, silenced, context)
    SELECT $1, r.fingerprint,
        coalesce((SELECT max(o.occurrence) FROM alerts o
                  WHERE o.team_id = $1 AND o.fingerprint = r.fingerprint), 0) + 1,
        'firing', r.source, r.title, r.severity, r.labels, r.annotations, r.url,
        r.incident_id, r.starts_at, r.ends_at, r.hits, {_SILENCED}, r.context
    FROM {_BODY_ROWS}
    ORDER BY r.fingerprint
    ON CONFLICT (team_id, fingerprint) WHERE status = 'firing' DO UPDATE SET
        {_repeat_set("EXCLUDED")}
    RETURNING a.id, a.fingerprint, (a.xmax = 0) AS inserted, a.silenced
"""  # noqa: S608 (fixed fragments of our own)

# The audit row of each alert the statement wrote (alert.received or alert.deduplicated).
_FIRING_AUDIT = audit.insert_from(
    """(SELECT CASE WHEN up.inserted THEN 'alert.received' ELSE 'alert.deduplicated' END
               AS event,
               r.source AS actor, NULL::bigint AS actor_telegram_id, $1::int AS team_id,
               NULL::uuid AS approval_id, up.id AS alert_id, NULL::bigint AS chat_id,
               jsonb_build_object('fingerprint', up.fingerprint, 'hits', r.hits,
                                  'silenced', up.silenced) AS detail
          FROM up JOIN jsonb_to_recordset($2::jsonb)
               AS r(fingerprint text, source text, hits int)
            ON r.fingerprint = up.fingerprint) AS r"""
)

# The upsert with its audit rows, as one prepared statement on the session's asyncpg
# connection: a concurrent body repeating the same fingerprints waits on these rows' locks
# until this transaction commits, so every round trip and every turn of the event loop between
# the upsert and COMMIT is time the others queue (one alert per request at 32 senders over 20
# fingerprints ran at a fifth of its SQL's rate with the audit as a second statement).
_UPSERT_FIRING_AUDITED = f"""
    WITH up AS ({_UPSERT_FIRING}), audited AS ({_FIRING_AUDIT})
    SELECT id, fingerprint, inserted, silenced FROM up
"""  # noqa: S608 (fixed fragments of our own)

# The plain repeat: a body's one firing alert that repeats a firing row of a team with no open
# incident, counted with its audit row by one autocommit statement, which holds the row's
# lock only while PostgreSQL runs it (the transaction held it across the client's turn and the
# COMMIT round trip, while every other sender of that fingerprint queued). Anything else (a
# new occurrence and its card, an open incident to attach to) writes nothing here and takes
# the transaction. The same SET as the upsert's repeat, from the same fragment.
_COUNT_REPEAT = f"""
    WITH r AS (
        SELECT r.*, r.hits AS hit_count, {_SILENCED} AS silenced FROM {_BODY_ROWS}
    ), up AS (
        UPDATE alerts AS a SET {_repeat_set("r")}
          FROM r
         WHERE a.team_id = $1 AND a.fingerprint = r.fingerprint AND a.status = 'firing'
           AND NOT EXISTS (SELECT 1 FROM incidents WHERE team_id = $1 AND {OPEN_SQL})
        RETURNING a.id, a.fingerprint, false AS inserted, a.silenced
    ), audited AS ({_FIRING_AUDIT})
    SELECT id, fingerprint, inserted, silenced FROM up
"""  # noqa: S608 (fixed fragments of our own)


def _rows(alerts: Sequence[tuple[IncomingAlert, int]]) -> str:
    """The body's rows as _BODY_ROWS reads them: (alert, hits) per fingerprint."""
    return json.dumps(
        [
            {
                "fingerprint": a.fingerprint,
                "source": a.source,
                "title": a.title,
                "severity": a.severity,
                "labels": a.labels,
                "annotations": a.annotations,
                "url": a.url,
                "incident_id": a.incident_id,
                "starts_at": iso(a.starts_at),
                "ends_at": iso(a.ends_at),
                "hits": hits,
                "context": a.context,
            }
            for a, hits in alerts
        ]
    )


async def upsert_firing(
    session: AsyncSession,
    team_id: int,
    alerts: Sequence[tuple[IncomingAlert, int]],
    *,
    edit_interval: float,
) -> list[UpsertRow]:
    """Insert new occurrences or count repeats, each with its audit row (alert.received or
    alert.deduplicated); `alerts` holds (alert, hits) per fingerprint."""
    if not alerts:
        return []
    result = await (await raw(session)).fetch(
        _UPSERT_FIRING_AUDITED, team_id, _rows(alerts), float(edit_interval)
    )
    return [UpsertRow(r[0], r[1], bool(r[2]), bool(r[3])) for r in result]


async def count_repeat(
    conn: Raw, team_id: int, alert: IncomingAlert, hits: int, *, edit_interval: float
) -> UpsertRow | None:
    """The plain repeat (_COUNT_REPEAT) on an autocommit connection; None when it wrote
    nothing (no firing row to repeat, or the team has an open incident)."""
    row = await conn.fetchrow(_COUNT_REPEAT, team_id, _rows([(alert, hits)]), float(edit_interval))
    return None if row is None else UpsertRow(row[0], row[1], bool(row[2]), bool(row[3]))
