"""One API key cannot flood the approval chat: a per-key bucket, a pending cap per team, and
high and critical cards sent ahead of the rest."""

from __future__ import annotations

from typing import Any

from tests.e2e.flows import body as request_body
from tests.e2e.flows import create, sql
from tests.support import API_KEY, CHAT, Harness, QuorumFactory, policy_data

APPROVALS = "/api/v1/approvals"


def limited(**key: Any) -> dict[str, Any]:
    """The test policy with these settings on the platform team's API key."""
    data = policy_data()
    data["teams"]["platform"]["api_keys"][0].update(key)
    return data


async def burst(h: Harness, n: int) -> list[tuple[int, Any]]:
    return [await h.api("POST", APPROVALS, {**request_body(), "target": f"t{i}"}) for i in range(n)]


async def test_a_burst_past_the_bucket_gets_429_with_retry_after(
    make_quorum: QuorumFactory,
) -> None:
    # One token a minute: nothing refills during the test, so exactly the burst passes.
    h = await make_quorum(limited(rate_per_minute=1, burst=30))
    answers = await burst(h, 40)
    assert [s for s, _ in answers] == [201] * 30 + [429] * 10
    body = answers[-1][1]
    assert body["error"]["code"] == "rate_limited" and body["error"]["retry_after"] >= 1
    async with h.http.post(
        h.url + APPROVALS, json=request_body(), headers={"Authorization": f"Bearer {API_KEY}"}
    ) as resp:
        assert resp.status == 429
        assert 1 <= int(resp.headers["Retry-After"]) <= 60
    rows = await sql(h, "SELECT count(*) AS n FROM approval_requests")
    assert rows[0]["n"] == 30
    # The bucket is the key's: reads are not limited.
    status, _ = await h.api("GET", APPROVALS)
    assert status == 200


async def test_the_bucket_is_shared_by_replicas(make_quorum: QuorumFactory) -> None:
    first = await make_quorum(limited(rate_per_minute=1, burst=4))
    second = await make_quorum(limited(rate_per_minute=1, burst=4))
    statuses = [s for s, _ in await burst(first, 2)] + [s for s, _ in await burst(second, 4)]
    assert statuses == [201, 201, 201, 201, 429, 429]


async def test_without_redis_the_bucket_is_per_process_never_5xx(
    make_quorum: QuorumFactory,
) -> None:
    h = await make_quorum(limited(rate_per_minute=1, burst=3), redis_url="redis://127.0.0.1:1/0")
    assert [s for s, _ in await burst(h, 5)] == [201, 201, 201, 429, 429]


async def test_pending_cap_per_team(make_quorum: QuorumFactory) -> None:
    data = policy_data()
    data["teams"]["platform"]["max_pending"] = 3
    h = await make_quorum(data)
    reqs = [await create(h, target=f"t{i}", fingerprint=f"fp{i}") for i in range(3)]
    status, body = await h.api("POST", APPROVALS, {**request_body(), "target": "one more"})
    assert status == 429 and body["error"]["code"] == "too_many_pending", body
    # A repeat of a pending request still merges into it.
    status, body = await h.api(
        "POST", APPROVALS, {**request_body(), "target": "t0", "fingerprint": "fp0"}
    )
    assert status == 200 and body["id"] == reqs[0]["id"], body
    status, _ = await h.api("POST", f"{APPROVALS}/{reqs[1]['id']}/cancel")
    assert status == 200
    await create(h, target="after a cancel")


async def test_critical_card_jumps_the_queue(quorum: Harness) -> None:
    """Low-risk cards and alert cards queued for one chat (paced at about one a second by
    the emulator's limits) do not delay a critical request's card."""
    for i in range(15):
        await create(quorum, target=f"low-{i}")
    for i in range(3):
        alert = {"title": f"Disk {i}", "labels": {"host": f"db-{i}"}}
        for _ in range(2):  # the repeat is an alert-card edit
            status, _ = await quorum.api("POST", "/api/v1/alerts", alert)
            assert status == 200
    before = len(await quorum.bot_messages(CHAT))
    critical = await create(quorum, risk_level="critical", target="prod/db")

    async def position() -> int | None:
        """How many bot messages the chat had when the critical card arrived, itself too."""
        msgs = await quorum.bot_messages(CHAT)
        found = [i for i, m in enumerate(msgs, 1) if critical["id"] in str(m["text"])]
        return found[0] if found else None

    arrived = await quorum.wait_for(position, timeout=20)
    # At most the message in flight when it was queued (and one of pacing slack) went first.
    assert arrived <= before + 3, (arrived, before)
    pending = await sql(
        quorum,
        "SELECT count(*) AS n FROM telegram_messages WHERE approval_id IS NOT NULL "
        "AND message_id IS NULL",
    )
    assert pending[0]["n"] >= 5  # the low-risk cards were still waiting: the test meant it
