"""Fault-matrix rows on Redis: hung (CLIENT PAUSE) or down, approvals go on. PostgreSQL is the
authority: votes count, the token is redeemed once, cards go out, nothing is lost; every
Redis call is cut by its socket timeout (0.5 s, no retries) rather than waited out."""

from __future__ import annotations

import asyncio
import signal
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from tests.e2e.flows import card, card_where, create, sql, tap
from tests.support import ALICE, BOB, Harness, QuorumFactory

HANG_SECONDS = 20.0


@asynccontextmanager
async def hung(process: subprocess.Popen[bytes]) -> AsyncIterator[float]:
    """Redis hung in the block: connections accepted, commands never answered; yields the
    event loop's time by which the hang would have ended by itself.

    SIGSTOP, not CLIENT PAUSE: the server is this test's own, and a `CLIENT PAUSE … ALL`
    cannot be cut short (Redis 7.0 holds CLIENT UNPAUSE too until the pause ends), so the
    hang could not end in a finally. Stopped, the server looks to clients exactly as paused.
    """
    process.send_signal(signal.SIGSTOP)
    try:
        yield asyncio.get_running_loop().time() + HANG_SECONDS
    finally:
        process.send_signal(signal.SIGCONT)


async def approve_and_redeem_twice(h: Harness) -> tuple[str, list[int]]:
    """A critical request approved by two taps, its token redeemed and replayed."""
    req = await create(h, risk_level="critical")
    msg = await card(h, req["id"])
    assert "recorded (1/2" in (await tap(h, msg, ALICE))["text"]
    assert "Approved" in (await tap(h, msg, BOB))["text"]
    status, got = await h.api("GET", f"/api/v1/approvals/{req['id']}")
    assert status == 200 and got["status"] == "approved", got
    statuses = []
    for _ in range(2):
        status, _body = await h.api(
            "POST", "/api/v1/tokens/redeem", {"token": got["approval_token"]}
        )
        statuses.append(status)
    return req["id"], statuses


async def assert_stored_once(h: Harness, request_id: str) -> None:
    [row] = await sql(
        h,
        "SELECT (SELECT count(*) FROM votes WHERE request_id = $1::uuid) AS votes,"
        " (SELECT count(*) FROM token_redemptions WHERE request_id = $1::uuid) AS redemptions,"
        " (SELECT status FROM approval_requests WHERE id = $1::uuid) AS status",
        request_id,
    )
    assert dict(row) == {"votes": 2, "redemptions": 1, "status": "approved"}
    # The card (sent, then edited by the pacer's in-process fallback) says so.
    await card_where(h, request_id, lambda m: "APPROVED" in str(m["text"]))


async def test_a_hung_redis_slows_nothing_past_its_timeouts_and_loses_nothing(
    make_quorum: QuorumFactory, private_redis: tuple[str, subprocess.Popen[bytes]]
) -> None:
    url, process = private_redis
    h = await make_quorum(redis_url=url)
    async with hung(process) as hang_ends:
        request_id, redeemed = await approve_and_redeem_twice(h)
        # All of it was done long before the hang could end: no call waited for Redis.
        assert asyncio.get_running_loop().time() < hang_ends
    assert redeemed == [200, 409]
    await assert_stored_once(h, request_id)
    # Back to normal: a second request goes through with Redis answering again.
    second, redeemed = await approve_and_redeem_twice(h)
    assert redeemed == [200, 409]
    await assert_stored_once(h, second)


async def test_votes_and_tokens_go_on_with_redis_down(
    make_quorum: QuorumFactory, private_redis: tuple[str, subprocess.Popen[bytes]]
) -> None:
    url, process = private_redis
    h = await make_quorum(redis_url=url)
    process.terminate()
    process.wait(5)
    request_id, redeemed = await approve_and_redeem_twice(h)
    assert redeemed == [200, 409]  # PostgreSQL's unique redemption row refuses the replay
    await assert_stored_once(h, request_id)
