"""Storms under storage faults and several processes: nothing lost, nothing sent twice."""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from sqlalchemy import select

from sandbox.emulator import EmulatorClient, Limits
from storage.db import to_sync_dsn, transaction
from storage.models import OutboxItem
from storage.outbox import enqueue_text
from tests.support import CHAT, OTHER_CHAT, Harness, QuorumFactory, wait_until

# Faster limits for storms, given to the emulator and to Quorum alike.
STORM_LIMITS = {
    "per_bot_per_second": 200,
    "per_chat_per_second": 50,
    "per_chat_burst": 5,
    "per_group_per_minute": 3000,
}
STORM_SETTINGS: dict[str, Any] = {
    "pace_bot_per_second": 200,
    "pace_chat_per_second": 50,
    "pace_chat_burst": 5,
    "pace_group_per_minute": 3000,
    # The default call timeout: a shorter one than a loaded machine takes to answer makes
    # duplicates, which these tests count.
    "outbox_retry_base_seconds": 0.05,
}


@pytest.fixture
async def storm_emu(emu: EmulatorClient) -> AsyncIterator[EmulatorClient]:
    await emu.configure(limits=dict(STORM_LIMITS))
    yield emu
    # The emulator's reset keeps limits: put the defaults back for the next test.
    await emu.configure(limits=dataclasses.asdict(Limits()))


async def enqueue_storm(h: Harness, n: int, prefix: str = "m") -> list[str]:
    texts = [f"{prefix}{i}" for i in range(n)]
    async with transaction(h.app.runtime.sessions) as s:
        for i, text in enumerate(texts):
            await enqueue_text(s, CHAT if i % 2 else OTHER_CHAT, text)
    return texts


async def statuses(h: Harness) -> Counter[str]:
    async with h.app.runtime.sessions() as s:
        return Counter(await s.scalars(select(OutboxItem.status)))


async def drained(h: Harness) -> bool:
    try:
        st = await statuses(h)
    except Exception:  # the test's own pool may hold a killed connection: poll again
        return False
    return set(st) <= {"done"}


async def sent_at_least(conn: asyncpg.Connection, n: int) -> None:
    """Wait until `n` rows are sent: a fault injected then lands in the middle of the storm."""

    async def progressed() -> bool:
        done = await conn.fetchval("SELECT count(*) FROM outbox WHERE status = 'done'")
        return int(done) >= n

    await wait_until(progressed, 30, what=f"{n} outbox rows sent", interval=0.01)


async def delivered(h: Harness) -> Counter[str]:
    out: Counter[str] = Counter()
    for chat in (CHAT, OTHER_CHAT):
        for m in await h.bot_messages(chat):
            out[str(m["text"])] += 1
    return out


async def test_postgres_connections_killed_during_a_storm(
    make_quorum: QuorumFactory, storm_emu: EmulatorClient, db_url: str
) -> None:
    h = await make_quorum(**STORM_SETTINGS)
    texts = await enqueue_storm(h, 150)
    killer = await asyncpg.connect(to_sync_dsn(db_url))
    try:
        for done in (20, 50, 80):
            await sent_at_least(killer, done)
            await killer.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
    finally:
        await killer.close()
    await h.wait_for(lambda: drained(h), timeout=30)
    got = await delivered(h)
    assert set(got) == set(texts)
    # Only a call whose answer was lost with its connection may go out twice.
    assert sum(got.values()) - len(texts) <= 3 * 32
    assert (await storm_emu.stats())["too_many_requests_total"] == 0


async def test_redis_flushed_during_a_storm(
    make_quorum: QuorumFactory, storm_emu: EmulatorClient, db_url: str
) -> None:
    h = await make_quorum(**STORM_SETTINGS)
    texts = await enqueue_storm(h, 120)
    # The app's own client: with no Redis server the in-process one is flushed, never nothing.
    watcher = await asyncpg.connect(to_sync_dsn(db_url))
    try:
        for done in (15, 40, 70):
            await sent_at_least(watcher, done)
            await h.app.runtime.redis.flushdb()
    finally:
        await watcher.close()
    await h.wait_for(lambda: drained(h), timeout=30)
    got = await delivered(h)
    assert got == Counter(texts)


async def test_redis_unavailable_still_delivers(
    make_quorum: QuorumFactory, storm_emu: EmulatorClient
) -> None:
    h = await make_quorum(redis_url="redis://127.0.0.1:1/0", **STORM_SETTINGS)
    texts = await enqueue_storm(h, 60)
    await h.wait_for(lambda: drained(h), timeout=30)
    assert await delivered(h) == Counter(texts)
    assert (await storm_emu.stats())["too_many_requests_total"] == 0
    assert (
        h.app.runtime.metrics.registry.get_sample_value("quorum_pacing_fallback_total") or 0
    ) >= 60


async def test_two_processes_deliver_every_row_once(
    make_quorum: QuorumFactory, storm_emu: EmulatorClient
) -> None:
    a = await make_quorum(**STORM_SETTINGS)
    b = await make_quorum(**STORM_SETTINGS)
    texts = await enqueue_storm(a, 200)
    await a.wait_for(lambda: drained(a), timeout=30)
    assert await delivered(a) == Counter(texts)
    ok = [c for c in await storm_emu.calls("sendMessage") if c["status"] == 200]
    assert len(ok) == 200
    async with a.app.runtime.sessions() as s:
        by = Counter(await s.scalars(select(OutboxItem.claimed_by)))
    assert set(by) <= {a.app.runtime.instance, b.app.runtime.instance}
    assert (await storm_emu.stats())["too_many_requests_total"] == 0


async def test_per_chat_order_is_kept(
    make_quorum: QuorumFactory, storm_emu: EmulatorClient
) -> None:
    await make_quorum(**STORM_SETTINGS)
    h = await make_quorum(**STORM_SETTINGS)
    texts = await enqueue_storm(h, 80)
    await h.wait_for(lambda: drained(h), timeout=30)
    for chat, parity in ((CHAT, 1), (OTHER_CHAT, 0)):
        want = [t for i, t in enumerate(texts) if i % 2 == parity]
        assert [m["text"] for m in await h.bot_messages(chat)] == want


async def test_default_limits_storm_gets_no_429(make_quorum: QuorumFactory) -> None:
    h = await make_quorum()
    texts = await enqueue_storm(h, 8)
    await h.wait_for(lambda: drained(h), timeout=30)
    assert await delivered(h) == Counter(texts)
    assert (await h.emu.stats())["too_many_requests_total"] == 0
