"""Incidents: declare, read, change status, severity and commander, notes; each change commits
with its audit row and its timeline line."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import func
from sqlalchemy.ext.asyncio import AsyncSession

from bot import cursors
from bot.errors import Conflict, Invalid, NotFound
from bot.incidents import publish
from bot.incidents.postmortem import render as render_postmortem
from bot.incidents.rules import ESCALATED, ID_PATTERN, group_labels, move_problem
from bot.policy import Team
from bot.runtime import Runtime
from storage import alerts as alert_store
from storage import audit
from storage import incidents as store
from storage.db import transaction
from storage.incidents import ApprovalLink, Event, IncidentRecord, TimelineRecord

T = TypeVar("T")

PAGE_SIZE = 50
PAGE_MAX = 100
POSTMORTEM_LINES = 2000


@dataclass(frozen=True, slots=True)
class Actor:
    """Who changes an incident: an approver in the chat (with a Telegram id) or an API key."""

    name: str
    telegram_id: int | None = None


@dataclass(frozen=True, slots=True)
class Details:
    incident: IncidentRecord
    firing: int
    resolved: int
    alert_ids: list[int]
    approvals: list[ApprovalLink]


@dataclass(frozen=True, slots=True)
class Page:
    items: list[IncidentRecord]
    next: str | None


@dataclass(frozen=True, slots=True)
class TimelinePage:
    events: list[TimelineRecord]
    next: str | None


async def _changed(rt: Runtime, session: AsyncSession, incident: IncidentRecord) -> None:
    """What follows any change, in its transaction: the incident's cards are brought up to date."""
    await publish.refresh_cards(rt, session, incident)


def team_id_of(rt: Runtime, team: Team) -> int:
    return rt.team_ids[team.name]


async def _lock(rt: Runtime, session: AsyncSession, team: Team, incident_id: str) -> IncidentRecord:
    found = None
    if ID_PATTERN.fullmatch(incident_id):
        found = await store.get(session, team_id_of(rt, team), incident_id, for_update=True)
    if found is None:
        raise NotFound("no such incident")
    return found


async def _audit(
    session: AsyncSession, event: str, incident: IncidentRecord, actor: Actor, **detail: Any
) -> None:
    await audit.record(
        session,
        event,
        actor=actor.name[:200],
        actor_telegram_id=actor.telegram_id,
        team_id=incident.team_id,
        incident=incident.id,
        **detail,
    )


async def run(rt: Runtime, change: Callable[[AsyncSession], Awaitable[T]]) -> T:
    """One change in its own transaction (the HTTP routes; chat handlers have theirs)."""
    async with transaction(rt.sessions) as session:
        return await change(session)


async def declare(
    rt: Runtime,
    session: AsyncSession,
    team: Team,
    *,
    title: str,
    severity: str,
    actor: Actor,
    services: list[str] | None = None,
    alert_ids: list[int] | None = None,
) -> IncidentRecord:
    """A new incident, its alerts attached, grouping by the team's `incident_group_by`."""
    team_id = team_id_of(rt, team)
    alerts = await alert_store.get_alerts(session, alert_ids or [])
    known = {a.id for a in alerts if a.team_id == team_id}
    missing = [i for i in alert_ids or [] if i not in known]
    if missing:
        raise Invalid("alert_ids", f"no alert {missing[0]} in this team")
    labels = alerts[0].labels if alerts else {}
    incident = await store.create(
        session,
        team_id=team_id,
        title=title,
        severity=severity,
        services=sorted(set(services or [])),
        group_labels=group_labels(team.incident_group_by, labels, services or []),
        declared_by=actor.name[:200],
        event=Event(
            "incident.declared",
            f"{severity} declared by {actor.name}: {title}",
            actor=actor.name[:200],
            actor_telegram_id=actor.telegram_id,
        ),
    )
    await _audit(session, "incident.declared", incident, actor, severity=severity)
    if known:
        await store.attach_alerts(session, team_id, incident.id, sorted(known), actor.name)
        incident = await _lock(rt, session, team, incident.id)
    await _changed(rt, session, incident)
    return incident


async def details(rt: Runtime, session: AsyncSession, incident: IncidentRecord) -> Details:
    firing, resolved = await store.alert_counts(session, incident.id)
    return Details(
        incident,
        firing,
        resolved,
        await store.alert_ids(session, incident.id),
        await store.linked_approvals(session, incident.team_id, incident.id),
    )


async def get(rt: Runtime, team: Team, incident_id: str) -> Details:
    async with rt.sessions() as session:
        return await details(rt, session, await get_in(rt, session, team, incident_id))


def _check_limit(limit: int) -> None:
    if not 1 <= limit <= PAGE_MAX:
        raise Invalid("limit", f"an integer from 1 to {PAGE_MAX}")


async def list_page(
    rt: Runtime, team: Team, statuses: tuple[str, ...] | None, *, limit: int, cursor: str | None
) -> Page:
    """Up to `limit` of the team's incidents, newest first, after `cursor` if given."""
    _check_limit(limit)
    before = None
    if cursor is not None:
        at, ident = cursors.decode(cursor, 2)
        try:
            before = (datetime.fromisoformat(at), ident)
        except ValueError:
            raise Invalid("cursor", "not a cursor from a previous page's `next`") from None
    async with rt.sessions() as session:
        items = await store.list_for_team(
            session, team_id_of(rt, team), statuses, limit + 1, before=before
        )
    page = items[:limit]
    after = (
        cursors.encode(page[-1].created_at.isoformat(), page[-1].id) if len(items) > limit else None
    )
    return Page(page, after)


async def timeline_page(
    rt: Runtime, team: Team, incident_id: str, *, limit: int, cursor: str | None
) -> TimelinePage:
    _check_limit(limit)
    after = None
    if cursor is not None:
        (text,) = cursors.decode(cursor, 1)
        if not (text.isascii() and text.isdigit() and len(text) <= 18):
            raise Invalid("cursor", "not a cursor from a previous page's `next`")
        after = int(text)
    async with rt.sessions() as session:
        await get_in(rt, session, team, incident_id)
        events = await store.timeline(session, incident_id, limit + 1, after=after)
    page = events[:limit]
    return TimelinePage(page, cursors.encode(str(page[-1].id)) if len(events) > limit else None)


async def get_in(
    rt: Runtime, session: AsyncSession, team: Team, incident_id: str
) -> IncidentRecord:
    found = None
    if ID_PATTERN.fullmatch(incident_id):
        found = await store.get(session, team_id_of(rt, team), incident_id)
    if found is None:
        raise NotFound("no such incident")
    return found


async def _status_values(
    session: AsyncSession, incident: IncidentRecord, status: str
) -> dict[str, Any]:
    values: dict[str, Any] = {"status": status}
    if status == "resolved":
        values["resolved_at"] = func.now()
    elif status == "closed":
        values["closed_at"] = func.now()
    elif incident.status == "resolved":
        values["resolved_at"] = None  # reopened: the next resolution is the one that counts
    return values


async def set_status(
    rt: Runtime, session: AsyncSession, team: Team, incident_id: str, status: str, actor: Actor
) -> IncidentRecord:
    """Move the incident on (or flag it escalated); Conflict for a move its status forbids."""
    incident = await _lock(rt, session, team, incident_id)
    if status == ESCALATED:
        if incident.escalated_at is not None:
            raise Conflict("the incident is already escalated", code="already_escalated")
        values: dict[str, Any] = {"escalated_at": func.now()}
        line = f"escalated by {actor.name}"
    else:
        problem = move_problem(incident.status, status)
        if problem is not None:
            raise Conflict(problem, code="invalid_transition")
        values = await _status_values(session, incident, status)
        line = f"{incident.status} → {status} by {actor.name}"
    event = Event("incident.status", line, actor.name[:200], actor.telegram_id)
    changed = await store.change(session, incident.id, values, [event])
    await _audit(session, "incident.status", changed, actor, status=status)
    await _changed(rt, session, changed)
    if status == "resolved" and incident.resolved_at is None and changed.resolved_at:
        seconds = (changed.resolved_at - changed.created_at).total_seconds()
        rt.metrics.incident_time_to_resolve.labels(team.name, changed.severity).observe(seconds)
    return changed


async def acknowledge_values(incident: IncidentRecord) -> dict[str, Any]:
    """The first acknowledgement stamps acknowledged_at (time to acknowledge)."""
    return {"acknowledged_at": func.now()} if incident.acknowledged_at is None else {}


def observe_acknowledged(
    rt: Runtime, team: Team, before: IncidentRecord, after: IncidentRecord
) -> None:
    if before.acknowledged_at is None and after.acknowledged_at is not None:
        start = after.first_alert_at or after.created_at
        seconds = max(0.0, (after.acknowledged_at - start).total_seconds())
        rt.metrics.incident_time_to_acknowledge.labels(team.name, after.severity).observe(seconds)


async def set_commander(
    rt: Runtime, session: AsyncSession, team: Team, incident_id: str, telegram_id: int, actor: Actor
) -> IncidentRecord:
    """Hand command to one of the team's approvers."""
    incident = await _lock(rt, session, team, incident_id)
    approver = team.approvers.get(telegram_id)
    if approver is None:
        raise Invalid("telegram_id", "not an approver of this team")
    if not incident.open:
        raise Conflict(f"the incident is {incident.status}", code="incident_closed")
    if incident.commander_telegram_id == telegram_id:
        raise Conflict(f"{approver.name} is already in command", code="already_commander")
    values = {
        "commander_telegram_id": telegram_id,
        "commander_name": approver.name,
        **await acknowledge_values(incident),
    }
    event = Event(
        "incident.commander",
        f"{approver.name} took command"
        if actor.telegram_id == telegram_id
        else f"{approver.name} in command (set by {actor.name})",
        actor.name[:200],
        actor.telegram_id,
    )
    changed = await store.change(session, incident.id, values, [event])
    await _audit(session, "incident.commander", changed, actor, commander=telegram_id)
    await _changed(rt, session, changed)
    observe_acknowledged(rt, team, incident, changed)
    return changed


async def set_severity(
    rt: Runtime, session: AsyncSession, team: Team, incident_id: str, severity: str, actor: Actor
) -> IncidentRecord:
    incident = await _lock(rt, session, team, incident_id)
    if incident.severity == severity:
        raise Conflict(f"the incident is already {severity}", code="same_severity")
    event = Event(
        "incident.severity",
        f"severity {incident.severity} → {severity} by {actor.name}",
        actor.name[:200],
        actor.telegram_id,
        detail={"from": incident.severity, "to": severity},
    )
    changed = await store.change(session, incident.id, {"severity": severity}, [event])
    await _audit(session, "incident.severity", changed, actor, severity=severity)
    await _changed(rt, session, changed)
    return changed


async def add_note(
    rt: Runtime, session: AsyncSession, team: Team, incident_id: str, text: str, actor: Actor
) -> IncidentRecord:
    incident = await _lock(rt, session, team, incident_id)
    event = Event("note", text, actor.name[:200], actor.telegram_id)
    changed = await store.change(session, incident.id, {}, [event])
    await _audit(session, "incident.note", changed, actor)
    await _changed(rt, session, changed)
    return changed


async def open_incidents(rt: Runtime, session: AsyncSession, team: Team) -> list[IncidentRecord]:
    return await store.list_for_team(
        session, team_id_of(rt, team), ("investigating", "mitigating"), 20
    )


async def postmortem(rt: Runtime, team: Team, incident_id: str) -> str:
    """The incident's postmortem draft in Markdown, times in the team's zone."""
    async with rt.sessions() as session:
        incident = await get_in(rt, session, team, incident_id)
        lines = await store.timeline(session, incident.id, POSTMORTEM_LINES)
        d = await details(rt, session, incident)
    return render_postmortem(
        incident,
        lines,
        d.approvals,
        team=team.name,
        tz=rt.zone,
        firing=d.firing,
        resolved=d.resolved,
    )
