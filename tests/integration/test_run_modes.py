"""How a process runs: one poller per bot and database, the mode in /readyz, and a degraded
pacing said once rather than every few seconds."""

from __future__ import annotations

import dataclasses
import logging

import pytest
from redis.asyncio import Redis

from bot.outbox.pacing import Pacer
from quorum.app import PollingTaken
from tests.support import Harness, QuorumFactory


async def test_a_second_poller_of_the_same_bot_and_database_is_refused(
    make_quorum: QuorumFactory,
) -> None:
    first = await make_quorum(mode="polling")
    with pytest.raises(PollingTaken, match="another process already polls bot"):
        await make_quorum(mode="polling")
    # Webhook replicas share the database freely.
    await make_quorum(mode="webhook")
    await first.app.stop()
    # The lease goes with the process that held it.
    await make_quorum(mode="polling")


async def test_webhook_mode_sets_the_deliveries_telegram_may_make_at_once(
    make_quorum: QuorumFactory,
) -> None:
    default = await make_quorum()
    info = await default.app.runtime.bot.get_webhook_info()
    assert info.max_connections == 40  # Telegram's own default, said explicitly
    wide = await make_quorum(webhook_max_connections=100)
    info = await wide.app.runtime.bot.get_webhook_info()
    assert info.url.endswith("/telegram/webhook") and info.max_connections == 100


async def test_readyz_says_how_the_process_runs(quorum: Harness) -> None:
    status, body = await quorum.api("GET", "/readyz", key=None)
    assert status == 200, body
    assert body["mode"] == "webhook, PostgreSQL, Redis"
    assert body["status"] == "ready" and body["checks"]["postgresql"] == "ok"


async def test_pacing_without_redis_is_logged_once_not_at_every_retry(
    quorum: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    rt = dataclasses.replace(quorum.app.runtime, redis=Redis.from_url("redis://127.0.0.1:1/0"))
    now = [1000.0]
    pacer = Pacer(rt, clock=lambda: now[0])
    caplog.set_level(logging.INFO, logger="bot.outbox.pacing")
    try:
        for _ in range(10):
            assert await pacer.acquire(None) >= 0
            now[0] += 30  # an idle sandbox: a send now and then, each one retrying Redis
    finally:
        await rt.redis.aclose()
    said = [r for r in caplog.records if r.name == "bot.outbox.pacing"]
    assert len(said) == 1, [r.getMessage() for r in said]
    assert said[0].levelno == logging.WARNING
    message = said[0].getMessage()
    assert "in-process limits" in message and "half Telegram's rates" in message
    assert pacer.degraded
