"""Incidents over HTTP: declare, list, read, move on, hand command over, timeline, postmortem."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from bot import incidents
from bot.alerts import maintenance
from bot.incidents.rules import OPEN_STATUSES, STATUSES
from bot.runtime import RUNTIME, Runtime
from handlers.api import authenticate, fail, page_limit, parse, read_json
from handlers.openapi_incidents import (
    ChangeCommander,
    ChangeStatus,
    CreateIncident,
    CreateMaintenance,
)
from handlers.openapi_parts import API
from storage.incidents import IncidentRecord, TimelineRecord

routes = web.RouteTableDef()


def _time(value: Any) -> Any:
    return value.isoformat() if value is not None else None


def incident_json(rt: Runtime, d: incidents.Details) -> dict[str, Any]:
    i = d.incident
    return {
        **summary_json(rt, i),
        "alerts": {"firing": d.firing, "resolved": d.resolved, "ids": d.alert_ids},
        "approvals": [
            {
                "id": str(a.id),
                "action": a.action,
                "target": a.target,
                "status": a.status,
                "decided_by": a.decided_by,
                "result_success": a.result_success,
            }
            for a in d.approvals
        ],
    }


def summary_json(rt: Runtime, i: IncidentRecord) -> dict[str, Any]:
    return {
        "id": i.id,
        "team": rt.team_name(i.team_id),
        "title": i.title,
        "severity": i.severity,
        "status": i.status,
        "escalated_at": _time(i.escalated_at),
        "commander": None
        if i.commander_telegram_id is None
        else {"telegram_id": i.commander_telegram_id, "name": i.commander_name},
        "services": list(i.services),
        "group_labels": {k: list(v) for k, v in i.group_labels.items()},
        "declared_by": i.declared_by,
        "created_at": _time(i.created_at),
        "acknowledged_at": _time(i.acknowledged_at),
        "resolved_at": _time(i.resolved_at),
        "closed_at": _time(i.closed_at),
    }


def event_json(e: TimelineRecord) -> dict[str, Any]:
    return {
        "at": _time(e.at),
        "kind": e.kind,
        "actor": e.actor,
        "text": e.text,
        "count": e.count,
        "alert_id": e.alert_id,
        "approval_id": str(e.approval_id) if e.approval_id else None,
    }


@routes.post(f"{API}/incidents")
async def create_incident(request: web.Request) -> web.Response:
    rt = request.app[RUNTIME]
    caller = authenticate(request, scope="incidents:write")
    body = parse(CreateIncident, await read_json(request))
    created = await incidents.run(
        rt,
        lambda session: incidents.declare(
            rt,
            session,
            caller.team,
            title=" ".join(body.title.split()) or body.title,
            severity=body.severity,
            actor=incidents.Actor(caller.actor),
            services=body.services,
            alert_ids=body.alert_ids,
        ),
    )
    details = await incidents.get(rt, caller.team, created.id)
    return web.json_response(incident_json(rt, details), status=201)


def _statuses(request: web.Request) -> tuple[str, ...] | None:
    status = request.query.get("status")
    if status is None:
        return None
    if status == "open":
        return OPEN_STATUSES
    if status not in STATUSES:
        choices = ", ".join((*STATUSES, "open"))
        fail(422, "validation_error", f"status: one of {choices}", field="status")
    return (status,)


@routes.get(f"{API}/incidents")
async def list_incidents(request: web.Request) -> web.Response:
    rt = request.app[RUNTIME]
    team = authenticate(request, scope="incidents:read").team
    page = await incidents.list_page(
        rt,
        team,
        _statuses(request),
        limit=page_limit(request),
        cursor=request.query.get("cursor"),
    )
    items = [summary_json(rt, i) for i in page.items]
    return web.json_response({"incidents": items, "next": page.next})


@routes.get(f"{API}/incidents/{{id}}")
async def get_incident(request: web.Request) -> web.Response:
    rt = request.app[RUNTIME]
    team = authenticate(request, scope="incidents:read").team
    details = await incidents.get(rt, team, request.match_info["id"])
    return web.json_response(incident_json(rt, details))


@routes.post(f"{API}/incidents/{{id}}/status")
async def change_status(request: web.Request) -> web.Response:
    rt = request.app[RUNTIME]
    caller = authenticate(request, scope="incidents:write")
    body = parse(ChangeStatus, await read_json(request))
    ident = request.match_info["id"]
    actor = incidents.Actor(caller.actor)
    await incidents.run(
        rt, lambda s: incidents.set_status(rt, s, caller.team, ident, body.status, actor)
    )
    return web.json_response(incident_json(rt, await incidents.get(rt, caller.team, ident)))


@routes.post(f"{API}/incidents/{{id}}/commander")
async def change_commander(request: web.Request) -> web.Response:
    rt = request.app[RUNTIME]
    caller = authenticate(request, scope="incidents:write")
    body = parse(ChangeCommander, await read_json(request))
    ident = request.match_info["id"]
    actor = incidents.Actor(caller.actor)
    await incidents.run(
        rt, lambda s: incidents.set_commander(rt, s, caller.team, ident, body.telegram_id, actor)
    )
    return web.json_response(incident_json(rt, await incidents.get(rt, caller.team, ident)))


@routes.get(f"{API}/incidents/{{id}}/timeline")
async def get_timeline(request: web.Request) -> web.Response:
    rt = request.app[RUNTIME]
    team = authenticate(request, scope="incidents:read").team
    page = await incidents.timeline_page(
        rt,
        team,
        request.match_info["id"],
        limit=page_limit(request),
        cursor=request.query.get("cursor"),
    )
    return web.json_response({"events": [event_json(e) for e in page.events], "next": page.next})


@routes.get(f"{API}/incidents/{{id}}/postmortem.md")
async def get_postmortem(request: web.Request) -> web.Response:
    rt = request.app[RUNTIME]
    team = authenticate(request, scope="incidents:read").team
    text = await incidents.postmortem(rt, team, request.match_info["id"])
    return web.Response(text=text, content_type="text/markdown", charset="utf-8")


@routes.post(f"{API}/maintenance")
async def create_maintenance(request: web.Request) -> web.Response:
    rt = request.app[RUNTIME]
    caller = authenticate(request, scope="incidents:write")
    body = parse(CreateMaintenance, await read_json(request))
    window = maintenance.Window(dict(body.matchers), body.starts_at, body.ends_at, body.comment)
    made = await incidents.run(
        rt,
        lambda s: maintenance.open_window(
            rt, s, caller.team, window, by_name=caller.actor, by_id=None
        ),
    )
    out = {
        "id": made.id,
        "matchers": made.matchers.get("labels", {}),
        "starts_at": _time(made.starts_at),
        "ends_at": _time(made.ends_at),
        "comment": made.matchers.get("comment", ""),
        "alertmanager": made.am_status == "create",
    }
    return web.json_response(out, status=201)
