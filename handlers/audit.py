"""The audit API: GET /api/v1/audit (a team's rows with their chain hashes) and the latest
signed checkpoint."""

from __future__ import annotations

import uuid
from datetime import datetime

from aiohttp import web

from bot.audit import queries
from bot.audit.chain import Checkpoint
from bot.audit.verify import export_fields
from bot.runtime import RUNTIME
from handlers.api import authenticate, fail, page_limit, text_problem
from handlers.openapi_parts import API

routes = web.RouteTableDef()


def _text(request: web.Request, name: str, longest: int) -> str | None:
    value = request.query.get(name)
    if value is None:
        return None
    problem = text_problem(value)
    if problem is None and not 1 <= len(value) <= longest:
        problem = f"1 to {longest} characters"
    if problem is not None:
        fail(422, "validation_error", f"{name}: {problem}", field=name)
    return value


def _time(request: web.Request, name: str) -> datetime | None:
    value = _text(request, name, 64)
    if value is None:
        return None
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        when = None
    if when is None or when.tzinfo is None:
        fail(
            422,
            "validation_error",
            f"{name}: an ISO 8601 time with a zone, e.g. 2026-11-27T09:00:00Z",
            field=name,
        )
    return when


def _approval_id(request: web.Request) -> uuid.UUID | None:
    value = _text(request, "approval_id", 64)
    if value is None:
        return None
    try:
        return uuid.UUID(value)
    except ValueError:
        fail(422, "validation_error", "approval_id: not a UUID", field="approval_id")


def search_of(request: web.Request) -> queries.Search:
    """The filters of GET /api/v1/audit (the web view's search reads the same)."""
    return queries.Search(
        event=_text(request, "event", 64),
        actor=_text(request, "actor", 256),
        approval_id=_approval_id(request),
        since=_time(request, "since"),
        until=_time(request, "until"),
    )


@routes.get(f"{API}/audit")
async def list_audit(request: web.Request) -> web.Response:
    rt = request.app[RUNTIME]
    team = authenticate(request, scope="audit:read").team
    found = await queries.page(
        rt,
        team,
        search_of(request),
        limit=page_limit(request, queries.PAGE_SIZE, queries.PAGE_MAX),
        cursor=request.query.get("cursor"),
    )
    entries = [export_fields(row) for row in found.rows]
    return web.json_response({"entries": entries, "next": found.next})


@routes.get(f"{API}/audit/checkpoints/latest")
async def latest_checkpoint(request: web.Request) -> web.Response:
    rt = request.app[RUNTIME]
    authenticate(request, scope="audit:read")
    stored = await queries.latest_checkpoint(rt)
    return web.json_response(Checkpoint.of(stored).to_json())
