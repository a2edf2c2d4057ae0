"""Fault-matrix rows on Telegram's side, seen from an approval request: a late
answerCallbackQuery, one update delivered into two processes at once, a 429 and a run of 5xx
on the card's send. The request's state is PostgreSQL's and none of these touch it."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

from tests.e2e.flows import APPROVE, audit_events, card, card_where, create, sql
from tests.support import (
    ALICE,
    CHAT,
    Harness,
    QuorumFactory,
    button_data,
    post_update,
    tap_update,
    wait_until,
)


async def state(h: Harness, request_id: str) -> tuple[str, list[int]]:
    status, got = await h.api("GET", f"/api/v1/approvals/{request_id}")
    assert status == 200, got
    return got["status"], [v["voter_telegram_id"] for v in got["votes"]]


async def test_a_late_callback_answer_loses_only_the_toast(quorum: Harness) -> None:
    req = await create(quorum)
    msg = await card(quorum, req["id"])
    # Telegram refuses the answer (the query is too old): the spinner's toast is lost.
    await quorum.emu.add_fault("callback_too_old")
    tapped = await quorum.emu.tap(CHAT, msg["message_id"], ALICE, button_text=APPROVE)

    async def refused_answers() -> list[dict[str, Any]]:
        calls = await quorum.emu.calls("answerCallbackQuery")
        return [c for c in calls if c["status"] == 400]

    [answer] = await wait_until(refused_answers, 10, what="the refused callback answer")
    assert answer["params"]["callback_query_id"] == tapped["callback_query_id"]
    assert await state(quorum, req["id"]) == ("approved", [ALICE])
    await card_where(quorum, req["id"], lambda m: "APPROVED" in str(m["text"]))


async def test_one_update_delivered_into_two_processes_at_once_is_handled_once(
    make_quorum: QuorumFactory,
) -> None:
    a = await make_quorum()
    b = await make_quorum()
    req = await create(a, risk_level="critical")
    msg = await card(a, req["id"])
    update = tap_update(8801, msg, ALICE, button_data(msg, APPROVE))
    answers = await asyncio.gather(*(post_update(h, update) for h in (a, b, a, b)))
    assert [status for status, _ in answers] == [200] * 4, answers
    # One delivery handled it (its reply answers the tap); the others were duplicates.
    toasts = [reply for _, reply in answers if reply.get("method") == "answerCallbackQuery"]
    assert len(toasts) == 1 and "recorded (1/2" in toasts[0]["text"], answers
    assert await state(b, req["id"]) == ("pending", [ALICE])
    events = await audit_events(a, req["id"])
    assert events.count("vote.accepted") == 1, events
    rows = await sql(a, "SELECT count(*) AS n FROM inbound_updates WHERE update_id = 8801")
    assert rows[0]["n"] == 1


async def test_a_429_on_the_card_delays_it_and_leaves_the_request_untouched(
    quorum: Harness,
) -> None:
    await quorum.emu.add_fault("too_many_requests", method="sendMessage", retry_after=1)
    req = await create(quorum, risk_level="critical")
    msg = await card(quorum, req["id"])  # sent once the chat's pause is over

    async def card_sent() -> list[tuple[str, int]] | None:
        rows = await sql(
            quorum, "SELECT status, attempts FROM outbox WHERE kind = 'approval_card:send'"
        )
        found = [(r["status"], r["attempts"]) for r in rows]
        return found if found and found[0][0] != "sending" else None

    # In the chat a moment before the row is marked done.
    assert await wait_until(card_sent, 10) == [("done", 0)]  # no try used up
    assert await state(quorum, req["id"]) == ("pending", [])
    changes = [
        e for e in await audit_events(quorum, req["id"]) if e.startswith(("approval.", "vote."))
    ]
    assert changes == ["approval.created"]
    tapped = await quorum.emu.tap(CHAT, msg["message_id"], ALICE, button_text=APPROVE, wait=5)
    assert "recorded (1/2" in str((tapped.get("answer") or {}).get("text")), tapped


async def test_5xx_until_the_dead_letter_leaves_the_request_pending_and_visible(
    make_quorum: QuorumFactory,
) -> None:
    base = 0.2
    h = await make_quorum(outbox_max_attempts=3, outbox_retry_base_seconds=base)
    await h.emu.add_fault("server_error", method="sendMessage", chat_id=CHAT, count=10)
    req = await create(h, risk_level="critical")

    async def dead() -> list[Any]:
        return await sql(
            h,
            "SELECT attempts FROM outbox WHERE kind = 'approval_card:send' AND status = 'dead'",
        )

    [row] = await wait_until(dead, 20, what="the card's send dead-lettered")
    assert row["attempts"] == 3
    # Backed off between tries: at least 0.75 (the jitter's floor) of base, then of 2 x base.
    times = [c["ts"] for c in await h.emu.calls("sendMessage")]
    assert len(times) == 3
    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    assert gaps[0] >= 0.75 * base and gaps[1] >= 0.75 * 2 * base, gaps
    # Operators see it; the request waits, pending and listed, for a card sent another way.
    status, ready = await h.api("GET", "/readyz", key=None)
    assert ready["checks"]["outbox_dead_letters"] == 1, ready
    assert "outbox.dead_letter" in await audit_events(h)
    assert await state(h, req["id"]) == ("pending", [])
    status, page = await h.api("GET", "/api/v1/approvals?status=pending")
    assert status == 200 and [r["id"] for r in page["approvals"]] == [req["id"]], page
