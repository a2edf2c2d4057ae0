"""What tests share besides fixtures: test identities and keys, the Quorum harness, waits."""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import hashlib
import inspect
import os
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the app's modules load in seconds: unit tests must not pay for them
    import aiohttp
    import asyncpg
    from aiohttp import web

    from bot.policy import Policy
    from bot.settings import Settings
    from quorum.app import Quorum
    from sandbox.emulator import EmulatorClient
    from storage.alerts import AlertRecord

ROOT = Path(__file__).resolve().parent.parent
BOT_TOKEN = "123456789:" + "A" * 35
BOT_ID = 123456789
TOKEN_SECRET = "test-token-secret-0123456789abcdef-xyz"
WEBHOOK_SECRET = "test_webhook_secret"
API_KEY = "test-key-platform"
OTHER_API_KEY = "test-key-data"
CHAT = -1001000000200
OTHER_CHAT = -1001000000300
ALICE, BOB, CAROL, DAVE = 1001, 1002, 1003, 1004
ERIN = 2001

POLICY: dict[str, Any] = {
    "timezone": "UTC",
    "teams": {
        "platform": {
            "chat_ids": [CHAT],
            "approvers": [
                {"telegram_id": ALICE, "name": "alice", "roles": ["sre"]},
                {"telegram_id": BOB, "name": "bob", "roles": ["sre", "lead"]},
                {"telegram_id": DAVE, "name": "dave", "roles": ["dba"]},
            ],
            "api_keys": [
                {
                    "name": "ci",
                    "sha256": "c1a8fe5fe7a9a4ac2b4ae16c1f3d4c2e0c5d27f9c0c4b0e6b8b31b6d3b2e4f00",
                }
            ],
            # check-config refuses a prefix without a path; the callback test adds its port's.
            "callback_url_prefixes": ["http://127.0.0.1:*/"],
        },
        "data": {
            "chat_ids": [OTHER_CHAT],
            "approvers": [{"telegram_id": ERIN, "name": "erin"}],
            "api_keys": [{"name": "ci", "sha256": ""}],
        },
    },
}


def policy_data() -> dict[str, Any]:
    """The test policy with the real hashes of the test API keys filled in."""
    data = copy.deepcopy(POLICY)
    data["teams"]["platform"]["api_keys"][0]["sha256"] = hashlib.sha256(
        API_KEY.encode()
    ).hexdigest()
    data["teams"]["data"]["api_keys"][0]["sha256"] = hashlib.sha256(
        OTHER_API_KEY.encode()
    ).hexdigest()
    return data


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def in_ci() -> bool:
    """CI must run every test for real: a missing service there is a failure, not a skip."""
    return os.environ.get("CI", "").lower() in {"true", "1", "yes"}


# ---------------------------------------------------------------- PostgreSQL


def with_db(url: str, name: str) -> str:
    """`url` pointing at database `name` on the same server."""
    from sqlalchemy.engine import make_url

    return make_url(url).set(database=name).render_as_string(hide_password=False)


async def admin_sql(server_url: str, sql: str) -> None:
    """One statement on its own connection (CREATE/DROP DATABASE cannot run in a transaction)."""
    import asyncpg

    from storage.db import to_sync_dsn

    conn = await asyncpg.connect(to_sync_dsn(server_url))
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def db_rows(h: Harness, query: str, *args: Any) -> list[asyncpg.Record]:
    """Rows of `query` on the app's database, read beside the app's own pool."""
    import asyncpg

    from storage.db import to_sync_dsn

    conn = await asyncpg.connect(to_sync_dsn(h.settings.database_url))
    try:
        return list(await conn.fetch(query, *args))
    finally:
        await conn.close()


# ---------------------------------------------------------------- waiting


def _describe(predicate: Callable[..., Any]) -> str:
    code = getattr(predicate, "__code__", None)
    name = getattr(predicate, "__qualname__", repr(predicate))
    if code is None:
        return name
    return f"{name} ({Path(code.co_filename).name}:{code.co_firstlineno})"


async def wait_until(
    predicate: Callable[[], Any],
    timeout: float = 10.0,
    *,
    what: str | None = None,
    interval: float = 0.05,
) -> Any:
    """Poll `predicate` (sync or async) until it returns something truthy, and return that.

    The deadline bounds the whole wait, a predicate call stuck on I/O included; missing it
    raises AssertionError naming what was awaited.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    label = what or _describe(predicate)
    while True:
        scope = asyncio.timeout_at(deadline)
        try:
            async with scope:
                value = predicate()
                if inspect.isawaitable(value):
                    value = await value
        except TimeoutError:
            if not scope.expired():
                raise  # the predicate's own timeout, not ours
            raise AssertionError(
                f"condition not met in time ({timeout} s): {label} was still running"
            ) from None
        if value:
            return value
        left = deadline - loop.time()
        if left <= 0:
            raise AssertionError(f"condition not met in time ({timeout} s): {label}")
        await asyncio.sleep(min(interval, left))


# ---------------------------------------------------------------- Quorum


@dataclass
class Harness:
    """One running Quorum process, the emulator it talks to, and an HTTP client for its API."""

    app: Quorum
    url: str
    emu: EmulatorClient
    http: aiohttp.ClientSession
    settings: Settings
    policy: Policy

    async def api(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        key: str | None = API_KEY,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any]:
        hdrs = dict(headers or {})
        if key is not None:
            hdrs["Authorization"] = f"Bearer {key}"
        async with self.http.request(method, self.url + path, json=body, headers=hdrs) as resp:
            try:
                data = await resp.json(content_type=None)
            except ValueError:
                data = await resp.text()
            return resp.status, data

    async def wait_for(self, predicate: Callable[[], Awaitable[Any]], timeout: float = 10.0) -> Any:
        """Poll an async predicate until it returns something truthy (see wait_until)."""
        return await wait_until(predicate, timeout)

    async def bot_messages(self, chat_id: int = CHAT) -> list[dict[str, Any]]:
        return [m for m in await self.emu.messages(chat_id) if m["from_id"] == BOT_ID]


QuorumFactory = Callable[..., Awaitable[Harness]]


# ---------------------------------------------------------------- alerts

AM_PATH = "/api/v1/alerts/alertmanager"


def am_alert(
    name: str = "DiskFull",
    *,
    status: str = "firing",
    fingerprint: str | None = "a1b2c3d4e5f60718",
    starts_at: str = "2026-01-01T10:00:00.000Z",
    ends_at: str = "0001-01-01T00:00:00Z",
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
) -> dict[str, Any]:
    """One alert as Alertmanager's webhook sends it."""
    alert: dict[str, Any] = {
        "status": status,
        "labels": labels or {"alertname": name, "severity": "critical", "instance": "db-1:9100"},
        "annotations": annotations
        if annotations is not None
        else {"summary": "Disk almost full", "description": "/var is 95% used"},
        "startsAt": starts_at,
        "endsAt": ends_at,
        "generatorURL": "http://prometheus:9090/graph?g0.expr=up",
    }
    if fingerprint is not None:
        alert["fingerprint"] = fingerprint
    return alert


def am_body(
    *alerts: dict[str, Any], external_url: str = "http://am-0:9093", truncated: int = 0
) -> dict[str, Any]:
    """An Alertmanager webhook body (version 4) carrying `alerts`."""
    status = "firing" if any(a["status"] == "firing" for a in alerts) else "resolved"
    return {
        "receiver": "quorum",
        "status": status,
        "alerts": list(alerts),
        "groupLabels": {"alertname": alerts[0]["labels"].get("alertname", "")},
        "commonLabels": {},
        "commonAnnotations": {},
        "externalURL": external_url,
        "version": "4",
        "groupKey": '{}:{alertname="DiskFull"}',
        "truncatedAlerts": truncated,
    }


def cards(msgs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The alert cards among a chat's messages (an alert's own, or its group's)."""
    return [m for m in msgs if "Fingerprint:" in str(m["text"]) or "\nGroup: " in str(m["text"])]


def digests(msgs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The storm digests among a chat's messages."""
    return [m for m in msgs if str(m["text"]).startswith("🌪")]


async def wait_cards(
    h: Harness, n: int, chat: int = CHAT, timeout: float = 10.0
) -> list[dict[str, Any]]:
    async def ready() -> list[dict[str, Any]] | None:
        found = cards(await h.bot_messages(chat))
        return found if len(found) >= n else None

    result: list[dict[str, Any]] = await wait_until(ready, timeout, what=f"{n} alert cards")
    return result


async def wait_text(h: Harness, needle: str, chat: int = CHAT, timeout: float = 10) -> Any:
    async def ready() -> dict[str, Any] | None:
        for m in cards(await h.bot_messages(chat)):
            if needle in str(m["text"]):
                return m
        return None

    return await wait_until(ready, timeout, what=f"an alert card saying {needle!r}")


@asynccontextmanager
async def hook_server(
    route: Callable[[web.Request], Awaitable[web.StreamResponse]],
) -> AsyncIterator[str]:
    """A local HTTP server answering POST /hook with `route`; yields its base URL."""
    from aiohttp import web

    app = web.Application()
    app.router.add_post("/hook", route)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


# ---------------------------------------------------------------- records

ALERT_SEEN = datetime(2026, 1, 1, 9, 21, tzinfo=UTC)


def alert_record(**over: Any) -> AlertRecord:
    """An alert as storage returns it (firing, first seen at ALERT_SEEN), for rendering tests."""
    from storage.alerts import AlertRecord

    base = AlertRecord(
        id=1,
        team_id=1,
        fingerprint="fp1",
        occurrence=1,
        status="firing",
        source="alertmanager",
        title="DiskFull",
        severity="critical",
        labels={"alertname": "DiskFull"},
        annotations={"summary": "disk 95% full"},
        url=None,
        incident_id=None,
        starts_at=ALERT_SEEN - timedelta(minutes=6),
        ends_at=None,
        hit_count=1,
        first_seen_at=ALERT_SEEN,
        last_seen_at=ALERT_SEEN + timedelta(minutes=19),
        resolved_at=None,
        resolved_by=None,
        silenced=False,
        last_card_edit_at=None,
        context={},
    )
    return dataclasses.replace(base, **over)
