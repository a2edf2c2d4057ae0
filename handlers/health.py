"""Liveness, readiness and Prometheus metrics.

`public_routes` (liveness) are served on the public listener always; `ops_routes` (readiness
and metrics) there too unless QUORUM_METRICS_PORT gives them a listener of their own."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from bot.runtime import RUNTIME
from storage.db import ping
from storage.outbox import dead_letter_count

public_routes = web.RouteTableDef()
ops_routes = web.RouteTableDef()


@public_routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


@ops_routes.get("/readyz")
async def readyz(request: web.Request) -> web.Response:
    rt = request.app[RUNTIME]
    checks: dict[str, Any] = {}
    failing: list[str] = []

    async def check(name: str, probe: Any) -> None:
        try:
            async with asyncio.timeout(2):
                await probe
            checks[name] = "ok"
        except Exception as exc:
            checks[name] = f"error: {type(exc).__name__}"
            failing.append(name)

    await check("postgresql", ping(rt.engine))
    await check("redis", rt.redis.ping())
    await check("telegram", rt.bot.get_me())
    if "postgresql" not in failing:
        try:
            async with rt.sessions() as session:
                checks["outbox_dead_letters"] = await dead_letter_count(session)
        except Exception as exc:
            checks["outbox_dead_letters"] = f"error: {type(exc).__name__}"
    status = 200 if not failing else 503
    body: dict[str, Any] = {
        "status": "ready" if not failing else "unavailable",
        "mode": rt.mode,
        "checks": checks,
    }
    if failing:
        body["error"] = {"code": "not_ready", "message": "failing: " + ", ".join(failing)}
    return web.json_response(body, status=status)


@ops_routes.get("/metrics")
async def metrics(request: web.Request) -> web.Response:
    rt = request.app[RUNTIME]
    return web.Response(body=rt.metrics.render(), headers={"Content-Type": CONTENT_TYPE_LATEST})


router: list[web.AbstractRouteDef] = [*public_routes, *ops_routes]  # every health route
