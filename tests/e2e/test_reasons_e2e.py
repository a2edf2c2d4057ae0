"""Reasons end to end through the emulator: a request's justification checked by the policy,
and a rejection's reason asked by ForceReply, shown on the card and held for the callback."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import web

from tests.e2e.flows import (
    REJECT,
    answer_question,
    audit_events_with,
    body,
    card,
    card_where,
    create,
    sql,
    tap,
)
from tests.support import ALICE, BOB, CHAT, Harness, QuorumFactory, hook_server, policy_data


async def test_the_policy_asks_for_a_reason_matching_its_pattern(
    make_quorum: QuorumFactory,
) -> None:
    data = policy_data()
    data["teams"]["platform"]["policy"] = {
        "high": {"require_reason": True, "reason_pattern": "^(OPS|INC)-[0-9]+"},
    }
    h = await make_quorum(policy=data)
    for extra, code in [
        ({}, "reason_required"),
        ({"reason": "   "}, "reason_required"),
        ({"reason": "because"}, "reason_invalid"),
        ({"reason": "x" * 1001}, "validation_error"),
    ]:
        status, got = await h.api("POST", "/api/v1/approvals", body(risk_level="high", **extra))
        assert status == 422 and got["error"]["code"] == code, (extra, got)
        assert "reason" in got["error"]["message"]
    # A level without the rule takes a request without a reason.
    assert (await create(h))["reason"] is None
    req = await create(h, risk_level="high", reason="OPS-42 <rollout> & restart")
    assert req["reason"] == "OPS-42 <rollout> & restart"
    msg = await card(h, req["id"])
    assert "Reason: OPS-42 <rollout> & restart" in msg["text"]
    [row] = await sql(
        h,
        "SELECT detail->>'reason' AS reason FROM audit_log "
        "WHERE event = 'approval.created' AND approval_id = $1::uuid",
        req["id"],
    )
    assert row["reason"] == "OPS-42 <rollout> & restart"


async def question_for(h: Harness, user_name: str) -> dict[str, Any]:
    async def find() -> dict[str, Any] | None:
        for m in await h.bot_messages():
            if (m["reply_markup"] or {}).get("force_reply") and user_name in m["text"]:
                return m
        return None

    found: dict[str, Any] = await h.wait_for(find)
    return found


async def test_a_rejection_counts_at_once_and_its_reason_follows_by_reply(
    make_quorum: QuorumFactory,
) -> None:
    received: list[dict[str, Any]] = []

    async def hook(request: web.Request) -> web.Response:
        received.append(json.loads(await request.read()))
        return web.Response(status=204)

    async with hook_server(hook) as base:
        data = policy_data()
        data["teams"]["platform"]["policy"] = {"low": {"require_reject_reason": True}}
        data["teams"]["platform"]["callback_url_prefixes"] = [f"{base}/"]
        h = await make_quorum(policy=data)
        req = await create(h, callback_url=f"{base}/hook", reason="OPS-1")
        msg = await card(h, req["id"])
        answer = await tap(h, msg, BOB, REJECT)
        assert "Rejected" in answer["text"]
        question = await question_for(h, "bob")
        assert question["text"] == "bob, why reject? Reply to this message."
        assert question["reply_to_message_id"] == msg["message_id"]
        assert question["reply_markup"]["force_reply"] is True
        assert question["reply_markup"]["selective"] is True
        assert {"type": "text_link", "url": f"tg://user?id={BOB}"}.items() <= (
            question["entities"][0].items()
        )
        await card_where(h, req["id"], lambda m: "❌ bob (reason pending)" in m["text"])
        # The callback waits for the reason (at most 10 minutes).
        [held] = await sql(
            h,
            "SELECT next_attempt_at > now() + interval '5 minutes' AS held "
            "FROM callback_deliveries WHERE approval_id = $1::uuid",
            req["id"],
        )
        assert held["held"] is True

        # Only the rejecter's reply is the answer.
        await answer_question(h, CHAT, question, ALICE, "I think it is fine")
        await h.emu.reply(CHAT, question["message_id"], BOB, "wrong cluster")
        final = await card_where(h, req["id"], lambda m: "❌ bob: wrong cluster" in m["text"])
        assert "REJECTED" in final["text"]
        await h.wait_for(lambda: audit_events_with(h, req["id"], "vote.reason"))
        [entry] = await sql(
            h,
            "SELECT actor_telegram_id, detail->>'reason' AS reason FROM audit_log "
            "WHERE event = 'vote.reason'",
        )
        assert (entry["actor_telegram_id"], entry["reason"]) == (BOB, "wrong cluster")
        _status, got = await h.api("GET", f"/api/v1/approvals/{req['id']}")
        assert [(v["voter_name"], v["reason"]) for v in got["votes"]] == [("bob", "wrong cluster")]
        await h.wait_for(lambda: asyncio.sleep(0, received), timeout=15)
        [payload] = received
        assert payload["status"] == "rejected" and payload["reason"] == "OPS-1"
        assert payload["vote_reasons"] == [
            {"voter_telegram_id": BOB, "voter_name": "bob", "reason": "wrong cluster"}
        ]
