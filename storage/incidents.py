"""Incidents and their timelines: each change writes its timeline row in the same transaction."""

from __future__ import annotations

import json
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, text, tuple_, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from storage.db import raw
from storage.models import Alert, ApprovalRequest, Incident, TimelineEvent

OPEN = ("investigating", "mitigating")
# The same as SQL (the partial index ix_incidents_open has this predicate).
OPEN_SQL = "status IN ('investigating', 'mitigating')"
_ID_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # no 0/O or 1/I to misread
_ID_ATTEMPTS = 5


@dataclass(frozen=True, slots=True)
class IncidentRecord:
    id: str
    team_id: int
    title: str
    severity: str
    status: str
    escalated_at: datetime | None
    commander_telegram_id: int | None
    commander_name: str | None
    services: tuple[str, ...]
    group_labels: dict[str, tuple[str, ...]]
    declared_by: str
    first_alert_at: datetime | None
    acknowledged_at: datetime | None
    created_at: datetime
    updated_at: datetime
    resolved_at: datetime | None
    closed_at: datetime | None

    @property
    def open(self) -> bool:
        return self.status in OPEN


@dataclass(frozen=True, slots=True)
class TimelineRecord:
    id: int
    incident_id: str
    at: datetime
    kind: str
    actor: str | None
    actor_telegram_id: int | None
    text: str
    alert_id: int | None
    approval_id: uuid.UUID | None
    count: int
    detail: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Event:
    """A timeline line to write beside a change (the incident is the change's)."""

    kind: str
    text: str
    actor: str | None = None
    actor_telegram_id: int | None = None
    alert_id: int | None = None
    approval_id: uuid.UUID | None = None
    detail: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class ApprovalLink:
    id: uuid.UUID
    action: str
    target: str
    status: str
    decided_by: list[Any]
    result_success: bool | None
    created_at: datetime


def incident_record(row: Incident) -> IncidentRecord:
    return IncidentRecord(
        id=row.id,
        team_id=row.team_id,
        title=row.title,
        severity=row.severity,
        status=row.status,
        escalated_at=row.escalated_at,
        commander_telegram_id=row.commander_telegram_id,
        commander_name=row.commander_name,
        services=tuple(str(s) for s in row.services or ()),
        group_labels={
            str(k): tuple(str(x) for x in v) for k, v in (row.group_labels or {}).items()
        },
        declared_by=row.declared_by,
        first_alert_at=row.first_alert_at,
        acknowledged_at=row.acknowledged_at,
        created_at=row.created_at,
        updated_at=row.updated_at,
        resolved_at=row.resolved_at,
        closed_at=row.closed_at,
    )


def _timeline_record(row: TimelineEvent, hits: int | None = None) -> TimelineRecord:
    """`hits`: an attached alert's hit count, which its line shows (its repeats coalesced)."""
    return TimelineRecord(
        id=row.id,
        incident_id=row.incident_id,
        at=row.at,
        kind=row.kind,
        actor=row.actor,
        actor_telegram_id=row.actor_telegram_id,
        text=row.text,
        alert_id=row.alert_id,
        approval_id=row.approval_id,
        count=hits if hits is not None else row.count,
        detail=dict(row.detail or {}),
    )


def _lines(incident_id: str) -> Any:
    """An incident's lines, each with its attached alert's hit count (or None)."""
    hits = (
        select(Alert.hit_count)
        .where(Alert.id == TimelineEvent.alert_id, TimelineEvent.kind == "alert.attached")
        .scalar_subquery()
    )
    return select(TimelineEvent, hits).where(TimelineEvent.incident_id == incident_id)


def new_incident_id(day: datetime) -> str:
    """`INC-YYYYMMDD-` and six random characters (32^6: a clash a day is one in a billion)."""
    tail = "".join(secrets.choice(_ID_ALPHABET) for _ in range(6))
    return f"INC-{day:%Y%m%d}-{tail}"


def _event_values(incident_id: str, event: Event) -> dict[str, Any]:
    return {
        "incident_id": incident_id,
        "kind": event.kind,
        "text": event.text,
        "actor": event.actor,
        "actor_telegram_id": event.actor_telegram_id,
        "alert_id": event.alert_id,
        "approval_id": event.approval_id,
        "detail": event.detail or {},
    }


async def add_events(session: AsyncSession, incident_id: str, events: list[Event]) -> None:
    """Append timeline lines to an incident (in the caller's transaction)."""
    if events:
        await session.execute(
            pg_insert(TimelineEvent).values([_event_values(incident_id, e) for e in events])
        )


async def create(
    session: AsyncSession,
    *,
    team_id: int,
    title: str,
    severity: str,
    services: list[str],
    group_labels: dict[str, list[str]],
    declared_by: str,
    event: Event,
) -> IncidentRecord:
    """A new incident, investigating, with its first timeline line."""
    day = await db_now(session)
    for _ in range(_ID_ATTEMPTS):
        row = await session.scalar(
            pg_insert(Incident)
            .values(
                id=new_incident_id(day),
                team_id=team_id,
                title=title,
                severity=severity,
                services=services,
                group_labels=group_labels,
                declared_by=declared_by,
            )
            .on_conflict_do_nothing()
            .returning(Incident),
            execution_options={"synchronize_session": False},
        )
        if row is not None:
            await add_events(session, row.id, [event])
            return incident_record(row)
    raise RuntimeError("could not draw a free incident id")


async def db_now(session: AsyncSession) -> datetime:
    """The database's clock, the one every stored time comes from."""
    now: datetime | None = await session.scalar(select(func.now()))
    assert now is not None
    return now


async def get_by_id(session: AsyncSession, incident_id: str) -> IncidentRecord | None:
    """Any team's incident: for workers, which act on what the database names."""
    row = await session.scalar(select(Incident).where(Incident.id == incident_id))
    return incident_record(row) if row else None


async def get(
    session: AsyncSession, team_id: int, incident_id: str, *, for_update: bool = False
) -> IncidentRecord | None:
    """The team's incident; another team's is None, like a missing one."""
    stmt = select(Incident).where(Incident.id == incident_id, Incident.team_id == team_id)
    if for_update:
        stmt = stmt.with_for_update()
    row = await session.scalar(stmt)
    return incident_record(row) if row else None


async def change(
    session: AsyncSession, incident_id: str, values: dict[str, Any], events: list[Event]
) -> IncidentRecord:
    """Update a (locked) incident and append the lines that record the change."""
    row = await session.scalar(
        update(Incident)
        .where(Incident.id == incident_id)
        .values(**values, updated_at=func.now())
        .returning(Incident),
        execution_options={"synchronize_session": False},
    )
    if row is None:
        raise LookupError(incident_id)
    await add_events(session, incident_id, events)
    return incident_record(row)


async def list_for_team(
    session: AsyncSession,
    team_id: int,
    statuses: tuple[str, ...] | None,
    limit: int,
    *,
    before: tuple[datetime, str] | None = None,
) -> list[IncidentRecord]:
    """The team's incidents newest first, those older than `before` (created_at, id) if given."""
    stmt = select(Incident).where(Incident.team_id == team_id)
    if statuses is not None:
        stmt = stmt.where(Incident.status.in_(statuses))
    if before is not None:
        stmt = stmt.where(tuple_(Incident.created_at, Incident.id) < before)
    rows = await session.scalars(
        stmt.order_by(Incident.created_at.desc(), Incident.id.desc()).limit(limit)
    )
    return [incident_record(r) for r in rows]


# The status list spelled as the partial index ix_incidents_open's predicate, so the planner
# uses it. Run on the session's asyncpg connection: through the ORM this one query cost a
# quarter of a single alert's intake CPU (bench.alerts, py-spy).
_OPEN_GROUPS = (
    "SELECT id, group_labels FROM incidents"  # noqa: S608 (fixed fragments of our own)
    f" WHERE team_id = $1 AND {OPEN_SQL}"
    " ORDER BY created_at, id"
)


async def open_groups(
    session: AsyncSession, team_id: int
) -> list[tuple[str, dict[str, list[str]]]]:
    """(id, grouping labels) of the team's open incidents, oldest first: the one cheap query
    alert intake makes per batch (partial index ix_incidents_open; usually no row)."""
    rows = await (await raw(session)).fetch(_OPEN_GROUPS, team_id)
    return [(r[0], dict(r[1])) for r in rows]


async def timeline(
    session: AsyncSession, incident_id: str, limit: int, *, after: int | None = None
) -> list[TimelineRecord]:
    """Timeline lines in order, those after line id `after` if given."""
    stmt = _lines(incident_id)
    if after is not None:
        stmt = stmt.where(TimelineEvent.id > after)
    rows = await session.execute(stmt.order_by(TimelineEvent.id).limit(limit))
    return [_timeline_record(r, hits) for r, hits in rows]


async def last_lines(session: AsyncSession, incident_id: str, n: int) -> list[TimelineRecord]:
    """The newest `n` lines, oldest of them first."""
    rows = await session.execute(_lines(incident_id).order_by(TimelineEvent.id.desc()).limit(n))
    return [_timeline_record(r, hits) for r, hits in reversed(list(rows))]


async def attach_alerts(
    session: AsyncSession, team_id: int, incident_id: str, alert_ids: list[int], actor: str
) -> list[int]:
    """Link the team's alerts to the incident (ids of other teams' alerts change nothing);
    returns the ids attached now, each with its timeline line."""
    if not alert_ids:
        return []
    rows = await session.execute(
        update(Alert)
        .where(
            Alert.id.in_(alert_ids),
            Alert.team_id == team_id,
            Alert.incident_id.is_distinct_from(incident_id),
        )
        # Their cards re-render (the alert card drops its Declare button).
        .values(
            incident_id=incident_id,
            updated_at=func.now(),
            card_due_at=func.coalesce(Alert.card_due_at, func.now()),
        )
        .returning(Alert.id, Alert.title, Alert.hit_count, Alert.first_seen_at),
        execution_options={"synchronize_session": False},
    )
    attached = list(rows)
    events = [
        Event("alert.attached", f"alert {r.title} attached", actor=actor, alert_id=r.id)
        for r in attached
    ]
    await add_events(session, incident_id, events)
    if attached:
        first = min(r.first_seen_at for r in attached)
        await session.execute(
            update(Incident)
            .where(Incident.id == incident_id)
            .values(first_alert_at=func.least(func.coalesce(Incident.first_alert_at, first), first))
        )
    return [r.id for r in attached]


# What one alert batch did to the alerts of open incidents, in one statement: a line per alert
# attached (a repeat of an alert that joined its incident by the grouping labels on a repeat
# adds its line once; other repeats add nothing: the line shows the alert's hit count, so a
# storm writes no timeline rows) and per alert resolved, and the incidents' cards due after
# `interval` seconds. Alerts in no incident add nothing.
_INGESTED = text(
    """
    WITH r AS (
        SELECT r.id, r.kind, a.incident_id, a.title, a.source, a.first_seen_at
        FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS r(id bigint, kind text)
        JOIN alerts a ON a.id = r.id AND a.incident_id IS NOT NULL
    ), attached AS (
        INSERT INTO timeline_events (incident_id, kind, text, alert_id, actor)
        SELECT incident_id, 'alert.attached', 'alert ' || title || ' attached', id, source
        FROM r WHERE kind = 'attached'
        ON CONFLICT (incident_id, alert_id) WHERE kind = 'alert.attached' DO NOTHING
    ), resolved AS (
        INSERT INTO timeline_events (incident_id, kind, text, alert_id, actor)
        SELECT incident_id, 'alert.resolved', 'alert ' || title || ' resolved', id, source
        FROM r WHERE kind = 'resolved'
    )
    UPDATE incidents i SET
        card_due_at = coalesce(i.card_due_at, now() + make_interval(secs => :interval)),
        first_alert_at = least(coalesce(i.first_alert_at, f.first_seen), f.first_seen)
    FROM (SELECT incident_id, min(first_seen_at) AS first_seen FROM r GROUP BY incident_id) f
    WHERE i.id = f.incident_id
      -- Only when something changes: concurrent batches of a storm would otherwise queue on
      -- the incident's row lock; while a refresh is already due, they pass it by.
      AND (i.card_due_at IS NULL OR i.first_alert_at IS NULL OR f.first_seen < i.first_alert_at)
    """
)


async def record_ingest(
    session: AsyncSession, attached: list[int], resolved: list[int], *, edit_interval: float
) -> None:
    """Timeline lines for a batch's alerts (ids) that belong to incidents: stored (new, or
    repeats: a line only for one not on its incident's timeline yet) and resolved. The
    incidents' cards refresh after `edit_interval` seconds, one edit per interval in a storm."""
    rows = [
        *({"id": i, "kind": "attached"} for i in attached),
        *({"id": i, "kind": "resolved"} for i in resolved),
    ]
    if rows:
        params = {"rows": json.dumps(rows), "interval": float(edit_interval)}
        await session.execute(_INGESTED, params)


# One statement, so the approval paths add a single call to their transactions: a line on the
# timeline of the request's incident, when it names one of its team's incidents.
_APPROVAL_EVENT = text(
    """
    WITH line AS (
        INSERT INTO timeline_events (incident_id, kind, text, actor, actor_telegram_id,
            approval_id, detail)
        SELECT i.id, :kind, :text, :actor, :actor_telegram_id, r.id, CAST(:detail AS jsonb)
        FROM approval_requests r
        JOIN incidents i ON i.id = r.incident_id AND i.team_id = r.team_id
        WHERE r.id = :approval_id
        RETURNING incident_id
    )
    UPDATE incidents SET card_due_at = coalesce(card_due_at, now())
    WHERE id IN (SELECT incident_id FROM line)
    """
)


async def approval_event(
    session: AsyncSession,
    approval_id: uuid.UUID,
    kind: str,
    text_line: str,
    *,
    actor: str | None = None,
    actor_telegram_id: int | None = None,
    detail: dict[str, Any] | None = None,
) -> None:
    """Record an approval's step on its incident's timeline, if it belongs to one, and have
    the incident's cards show it."""
    await session.execute(
        _APPROVAL_EVENT,
        {
            "approval_id": approval_id,
            "kind": kind,
            "text": text_line,
            "actor": actor,
            "actor_telegram_id": actor_telegram_id,
            "detail": json.dumps(detail or {}, default=str),
        },
    )


async def alert_counts(session: AsyncSession, incident_id: str) -> tuple[int, int]:
    """(firing, resolved) alerts attached to the incident."""
    rows = await session.execute(
        select(Alert.status, func.count())
        .where(Alert.incident_id == incident_id)
        .group_by(Alert.status)
    )
    counts = {status: int(n) for status, n in rows}
    return counts.get("firing", 0), counts.get("resolved", 0)


async def alert_ids(session: AsyncSession, incident_id: str, limit: int = 100) -> list[int]:
    rows = await session.scalars(
        select(Alert.id).where(Alert.incident_id == incident_id).order_by(Alert.id).limit(limit)
    )
    return list(rows)


async def linked_approvals(
    session: AsyncSession, team_id: int, incident_id: str, limit: int = 50
) -> list[ApprovalLink]:
    """The team's approval requests proposed for this incident, oldest first."""
    R = ApprovalRequest
    rows = await session.execute(
        select(R.id, R.action, R.target, R.status, R.decided_by, R.result_success, R.created_at)
        .where(R.team_id == team_id, R.incident_id == incident_id)
        .order_by(R.created_at, R.id)
        .limit(limit)
    )
    return [
        ApprovalLink(r.id, r.action, r.target, r.status, list(r.decided_by or []), *r[5:])
        for r in rows
    ]


@dataclass(frozen=True, slots=True)
class Acknowledged:
    """An incident acknowledged for the first time: what time to acknowledge is measured by."""

    severity: str
    started: datetime
    at: datetime


# One statement, so the alert buttons add a single call: a line on the timeline of the alert's
# incident (if it is in one), its cards marked due, and a first acknowledgement stamped.
_ALERT_EVENT = text(
    """
    WITH line AS (
        INSERT INTO timeline_events (incident_id, kind, text, actor, actor_telegram_id, alert_id)
        SELECT a.incident_id, :kind, :text, :actor, :actor_telegram_id, a.id
        FROM alerts a WHERE a.id = :alert_id AND a.incident_id IS NOT NULL
        RETURNING incident_id
    ), before AS (
        SELECT i.id, i.acknowledged_at IS NULL AS unacknowledged
        FROM incidents i JOIN line ON line.incident_id = i.id
    )
    UPDATE incidents i SET card_due_at = coalesce(i.card_due_at, now()),
        acknowledged_at = CASE WHEN :ack THEN coalesce(i.acknowledged_at, now())
                               ELSE i.acknowledged_at END
    FROM before WHERE i.id = before.id
    RETURNING i.severity, coalesce(i.first_alert_at, i.created_at) AS started,
        i.acknowledged_at, before.unacknowledged
    """
)


async def alert_event(
    session: AsyncSession,
    alert_id: int,
    kind: str,
    text_line: str,
    *,
    actor: str,
    actor_telegram_id: int | None,
    acknowledges: bool = False,
) -> Acknowledged | None:
    """Record a person's action on an alert on its incident's timeline, if it is in one;
    the incident's first acknowledgement, when `acknowledges` makes it one."""
    row = (
        await session.execute(
            _ALERT_EVENT,
            {
                "alert_id": alert_id,
                "kind": kind,
                "text": text_line,
                "actor": actor,
                "actor_telegram_id": actor_telegram_id,
                "ack": acknowledges,
            },
        )
    ).first()
    if row is None or not (acknowledges and row.unacknowledged):
        return None
    return Acknowledged(row.severity, row.started, row.acknowledged_at)
