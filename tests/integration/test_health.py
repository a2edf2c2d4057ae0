"""/healthz and /readyz: ready only when PostgreSQL, Redis and Telegram answer."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

import handlers.health
from bot.metrics import Metrics
from bot.policy import parse_policy
from bot.runtime import RUNTIME, Runtime
from bot.settings import load_settings
from quorum.app import make_bot
from quorum.embedded import in_process_redis
from sandbox.emulator import EmulatorClient
from storage import keys
from storage.db import make_engine, make_sessionmaker
from tests.support import BOT_TOKEN, TOKEN_SECRET, Harness, QuorumFactory, policy_data


async def get(h: Harness, path: str) -> tuple[int, Any]:
    return await h.api("GET", path, key=None)


async def test_healthz(quorum: Harness) -> None:
    assert await get(quorum, "/healthz") == (200, {"status": "ok"})


async def test_readyz_all_ok(quorum: Harness) -> None:
    status, body = await get(quorum, "/readyz")
    assert status == 200, body
    assert body["status"] == "ready"
    assert body["checks"]["postgresql"] == "ok"
    assert body["checks"]["redis"] == "ok"
    assert body["checks"]["telegram"] == "ok"
    assert body["checks"]["outbox_dead_letters"] == 0
    assert "error" not in body


async def test_readyz_names_redis_when_it_is_unreachable(make_quorum: QuorumFactory) -> None:
    h = await make_quorum(redis_url="redis://127.0.0.1:1/0")
    status, body = await get(h, "/readyz")
    assert status == 503, body
    assert body["status"] == "unavailable"
    assert body["checks"]["redis"].startswith("error")
    assert body["checks"]["postgresql"] == "ok"
    assert body["checks"]["telegram"] == "ok"
    assert body["error"] == {"code": "not_ready", "message": "failing: redis"}
    # Liveness is about the process only.
    assert (await get(h, "/healthz"))[0] == 200


@pytest.mark.parametrize("mode", ["polling", "webhook"])
async def test_unreachable_telegram_at_start_reports_not_ready(
    make_quorum: QuorumFactory, mode: str
) -> None:
    # Starting must not raise (no crash loop): the bot comes up and says what is missing.
    h = await make_quorum(mode=mode, telegram_api_url="http://127.0.0.1:1")
    status, body = await get(h, "/readyz")
    assert status == 503, body
    assert body["checks"]["telegram"].startswith("error")
    assert body["checks"]["postgresql"] == "ok"
    assert body["checks"]["redis"] == "ok"
    assert body["error"]["message"] == "failing: telegram"
    assert (await get(h, "/healthz"))[0] == 200


async def test_set_webhook_failure_at_start_is_retried(
    make_quorum: QuorumFactory, emu: EmulatorClient
) -> None:
    await emu.add_fault("server_error", method="setWebhook", status=502, count=1)
    h = await make_quorum()

    async def webhook_set() -> bool:
        calls = await emu.calls("setWebhook")
        return len(calls) >= 2

    await h.wait_for(webhook_set, timeout=10)
    status, body = await get(h, "/readyz")
    assert status == 200, body


@pytest.fixture
async def dead_db_app(redis_url: str, emu: EmulatorClient) -> AsyncIterator[TestClient[Any, Any]]:
    """The health routes over a runtime whose PostgreSQL is a closed port."""
    await emu.add_bot(BOT_TOKEN, username="quorum_test_bot")
    settings = load_settings(
        telegram_token=BOT_TOKEN,
        telegram_api_url=emu.base_url,
        token_secret=TOKEN_SECRET,
        redis_url=redis_url,
        database_url="postgresql://postgres@127.0.0.1:1/quorum",
    )
    engine = make_engine(settings.database_url)
    rt = Runtime(
        settings=settings,
        policy=parse_policy(policy_data()),
        engine=engine,
        sessions=make_sessionmaker(engine),
        redis=keys.connect(redis_url) if redis_url else in_process_redis(),
        bot=make_bot(settings),
        metrics=Metrics(),
    )
    app = web.Application()
    app[RUNTIME] = rt
    app.add_routes(handlers.health.router)
    client: TestClient[Any, Any] = TestClient(TestServer(app))
    await client.start_server()
    yield client
    await client.close()
    await rt.bot.session.close()
    await rt.redis.aclose()
    await engine.dispose()


async def test_readyz_names_postgresql_when_it_is_unreachable(
    dead_db_app: TestClient[Any, Any],
) -> None:
    resp = await dead_db_app.get("/readyz")
    body = await resp.json()
    assert resp.status == 503, body
    assert body["checks"]["postgresql"].startswith("error")
    assert body["checks"]["redis"] == "ok"
    assert body["checks"]["telegram"] == "ok"
    assert "outbox_dead_letters" not in body["checks"]
    assert body["error"]["message"] == "failing: postgresql"
    resp = await dead_db_app.get("/healthz")
    assert resp.status == 200
