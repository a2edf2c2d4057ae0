"""Idle workers wake on NOTIFY from writes made on any connection, in every replica, and at
their work's next due time; never by polling (their fallback sleep is 30 s, far past the
deadlines here)."""

from __future__ import annotations

import json
import uuid

from bot.wakeups import FALLBACK_SECONDS
from quorum.app import RETRY_AFTER_SECONDS
from storage import wakeups
from storage.db import make_engine, make_sessionmaker, transaction
from storage.outbox import enqueue_text
from tests.e2e.flows import card, create
from tests.support import CHAT, Harness, QuorumFactory, db_rows, wait_until

DEADLINE = 5.0
assert RETRY_AFTER_SECONDS + DEADLINE < FALLBACK_SECONDS / 2  # within it: no fallback poll


async def replicas(make_quorum: QuorumFactory) -> tuple[Harness, Harness]:
    a, b = await make_quorum(), await make_quorum()
    for h in (a, b):
        await wait_until(h.app.runtime.wakeups.listening.is_set, DEADLINE, what="LISTEN")
    return a, b


def received(h: Harness, channel: str) -> int:
    return h.app.runtime.wakeups.received[channel]


async def test_outbox_row_from_another_connection_wakes_every_replica(
    make_quorum: QuorumFactory,
) -> None:
    a, b = await replicas(make_quorum)
    before = received(a, wakeups.OUTBOX), received(b, wakeups.OUTBOX)
    engine = make_engine(a.settings.database_url, pool_size=1)
    try:
        async with transaction(make_sessionmaker(engine)) as s:
            await enqueue_text(s, CHAT, "queued elsewhere")
    finally:
        await engine.dispose()

    async def sent() -> bool:
        return any(m["text"] == "queued elsewhere" for m in await a.bot_messages())

    await wait_until(sent, DEADLINE)
    await wait_until(lambda: received(a, wakeups.OUTBOX) > before[0], DEADLINE)
    await wait_until(lambda: received(b, wakeups.OUTBOX) > before[1], DEADLINE)
    assert [m["text"] for m in await a.bot_messages()].count("queued elsewhere") == 1


async def test_card_marked_due_elsewhere_is_refreshed_and_both_replicas_hear_of_it(
    make_quorum: QuorumFactory,
) -> None:
    a, b = await replicas(make_quorum)
    req = await create(a)
    await card(a, req["id"])
    rid = uuid.UUID(req["id"])
    # Settled: the card worker rendered it (or never needed to) and has gone to sleep.
    await wait_until(lambda: no_card_due(a, rid), DEADLINE)
    before = received(a, wakeups.CARDS), received(b, wakeups.CARDS)
    await db_rows(
        a, "UPDATE approval_requests SET cards_due_at = now(), hit_count = 7 WHERE id = $1", rid
    )
    await wait_until(lambda: no_card_due(a, rid), DEADLINE, what="the card worker's claim")
    await wait_until(lambda: received(a, wakeups.CARDS) > before[0], DEADLINE)
    await wait_until(lambda: received(b, wakeups.CARDS) > before[1], DEADLINE)


async def no_card_due(h: Harness, rid: uuid.UUID) -> bool:
    rows = await db_rows(h, "SELECT cards_due_at FROM approval_requests WHERE id = $1", rid)
    return rows[0]["cards_due_at"] is None


async def test_request_inserted_elsewhere_expires_at_its_due_time(quorum: Harness) -> None:
    # The insert wakes the maintenance worker (NOTIFY), which then sleeps until the expiry.
    h = quorum
    await wait_until(h.app.runtime.wakeups.listening.is_set, DEADLINE, what="LISTEN")
    rid = uuid.uuid4()
    await db_rows(
        h,
        "INSERT INTO approval_requests (id, team_id, action, target, risk_level,"
        " approval_level, required_approvals, reject_threshold, requested_by, expires_at)"
        " SELECT $1, id, 'restart', 'svc', 'low', 'low', 1, 1, 'elsewhere',"
        " now() + interval '1.5 seconds' FROM teams WHERE name = 'platform'",
        rid,
    )

    async def expired() -> bool:
        rows = await db_rows(h, "SELECT status FROM approval_requests WHERE id = $1", rid)
        return bool(rows[0]["status"] == "expired")

    await wait_until(expired, DEADLINE)


async def test_failed_update_stored_elsewhere_is_retried_after_a_pause(quorum: Harness) -> None:
    # Woken by the insert, the retry loop waits RETRY_AFTER_SECONDS (5 s), not the fallback.
    h = quorum
    await wait_until(h.app.runtime.wakeups.listening.is_set, DEADLINE, what="LISTEN")
    update = {
        "update_id": 424242,
        "message": {
            "message_id": 1,
            "date": 0,
            "chat": {"id": CHAT, "type": "supergroup", "title": "platform"},
            "from": {"id": 1, "is_bot": False, "first_name": "x"},
            "text": "hello",
        },
    }
    await db_rows(
        h,
        "INSERT INTO inbound_updates (update_id, payload, status, attempts)"
        " VALUES ($1, $2::jsonb, 'failed', 1)",
        424242,
        json.dumps(update),
    )

    async def handled() -> bool:
        rows = await db_rows(h, "SELECT status FROM inbound_updates WHERE update_id = 424242")
        return bool(rows[0]["status"] == "done")

    await wait_until(handled, RETRY_AFTER_SECONDS + DEADLINE)
