"""Fault-matrix rows on storage: a vote held up by a row lock, its connection killed mid-way;
the answer is a clear 503 (Telegram delivers again), nothing is half written, the event loop
keeps serving meanwhile, and the delivery after the fault counts the vote exactly once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg

from storage.db import to_sync_dsn
from tests.e2e.flows import APPROVE, card, create, sql
from tests.support import (
    ALICE,
    Harness,
    QuorumFactory,
    button_data,
    post_update,
    tap_update,
    wait_until,
)


@asynccontextmanager
async def row_locked(h: Harness, request_id: str) -> AsyncIterator[asyncpg.Connection]:
    """Another session holding `SELECT … FOR UPDATE` on the request until the block ends."""
    conn = await asyncpg.connect(to_sync_dsn(h.settings.database_url))
    try:
        tx = conn.transaction()
        await tx.start()
        await conn.execute(
            "SELECT id FROM approval_requests WHERE id = $1::uuid FOR UPDATE", request_id
        )
        try:
            yield conn
        finally:
            await tx.rollback()
    finally:
        await conn.close()


async def waiting_backends(h: Harness) -> list[int]:
    """Quorum's connections now waiting for a row lock."""
    rows = await sql(
        h,
        "SELECT pid FROM pg_stat_activity WHERE application_name = 'quorum'"
        " AND wait_event_type = 'Lock' AND datname = current_database()",
    )
    return [r["pid"] for r in rows]


async def written(h: Harness, request_id: str, update_id: int) -> dict[str, Any]:
    """What one vote writes: its row, its audit rows, the stored update, the token."""
    [row] = await sql(
        h,
        "SELECT (SELECT count(*) FROM votes WHERE request_id = $1::uuid) AS votes,"
        " (SELECT count(*) FROM audit_log WHERE approval_id = $1::uuid"
        "   AND event = 'vote.accepted') AS vote_audits,"
        " (SELECT count(*) FROM audit_log WHERE approval_id = $1::uuid"
        "   AND event = 'approval.approved') AS transitions,"
        " (SELECT count(*) FROM approval_tokens WHERE request_id = $1::uuid) AS tokens,"
        " (SELECT count(*) FROM inbound_updates WHERE update_id = $2) AS updates,"
        " (SELECT status FROM approval_requests WHERE id = $1::uuid) AS status",
        request_id,
        update_id,
    )
    return dict(row)


NOTHING = {"votes": 0, "vote_audits": 0, "transitions": 0, "tokens": 0, "updates": 0}
ONCE = {"votes": 1, "vote_audits": 1, "transitions": 1, "tokens": 1, "updates": 1}


async def blocked_vote(h: Harness, update: dict[str, Any]) -> asyncio.Task[tuple[int, Any]]:
    """The vote delivered and seen waiting for the lock in PostgreSQL."""
    delivery = asyncio.create_task(post_update(h, update))
    await wait_until(lambda: waiting_backends(h), 10, what="the vote waiting for the row lock")
    return delivery


async def assert_counted_once_after(h: Harness, request_id: str, update: dict[str, Any]) -> None:
    """Telegram's next delivery counts the vote; a further duplicate changes nothing."""
    status, reply = await post_update(h, update)
    assert status == 200, reply
    assert reply["method"] == "answerCallbackQuery" and "Approved" in reply["text"], reply
    assert await post_update(h, update) == (200, {"ok": True})
    got = await written(h, request_id, update["update_id"])
    assert got == {**ONCE, "status": "approved"}, got


async def test_a_vote_held_by_a_row_lock_ends_in_503_and_counts_once_after_release(
    make_quorum: QuorumFactory,
) -> None:
    h = await make_quorum(db_lock_timeout_ms=1500)
    req = await create(h)
    msg = await card(h, req["id"])
    update = tap_update(7001, msg, ALICE, button_data(msg, APPROVE))
    async with row_locked(h, req["id"]):
        delivery = await blocked_vote(h, update)
        # The vote waits in PostgreSQL, not in the event loop: the process answers meanwhile.
        async with h.http.get(h.url + "/healthz") as resp:
            assert resp.status == 200
        status, _ = await h.api("GET", f"/api/v1/approvals/{req['id']}")
        assert status == 200
        assert not delivery.done()
        status, answer = await delivery
        assert status == 503, answer
        assert answer["error"] == {"code": "unavailable", "message": "storage unavailable"}
        assert await written(h, req["id"], 7001) == {**NOTHING, "status": "pending"}
    await assert_counted_once_after(h, req["id"], update)


async def test_the_votes_connection_killed_mid_transaction_leaves_nothing_and_retry_counts_once(
    make_quorum: QuorumFactory,
) -> None:
    h = await make_quorum()  # the default 5 s lock timeout: the kill comes first
    req = await create(h)
    msg = await card(h, req["id"])
    update = tap_update(7002, msg, ALICE, button_data(msg, APPROVE))
    async with row_locked(h, req["id"]) as admin:
        delivery = await blocked_vote(h, update)
        [pid] = await waiting_backends(h)
        # The update row is already written in this transaction: the kill must roll it back.
        assert await admin.fetchval("SELECT pg_terminate_backend($1)", pid)
        status, answer = await delivery
        assert status == 503, answer
    assert await written(h, req["id"], 7002) == {**NOTHING, "status": "pending"}
    # The pool dropped the dead connection: the next delivery runs on a live one.
    await assert_counted_once_after(h, req["id"], update)
