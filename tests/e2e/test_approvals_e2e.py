"""Approvals end to end through the emulator over HTTP: request, card, taps, token, redeem."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from typing import Any

import asyncpg
from aiohttp import web

from bot.approvals import callback_key
from bot.rendering import MAX_TEXT
from storage.db import to_sync_dsn
from tests.e2e.flows import (
    APPROVE,
    REJECT,
    audit_events,
    audit_events_with,
    body,
    card,
    card_where,
    create,
    sql,
    tap,
)
from tests.support import (
    ALICE,
    BOB,
    CAROL,
    CHAT,
    DAVE,
    OTHER_API_KEY,
    OTHER_CHAT,
    TOKEN_SECRET,
    Harness,
    QuorumFactory,
    hook_server,
    policy_data,
)

# ---------------------------------------------------------------- the main flows


async def test_one_of_n_request_card_vote_token_redeem_replay(quorum: Harness) -> None:
    req = await create(quorum)
    assert req["status"] == "pending"
    assert req["required_approvals"] == 1 and req["hit_count"] == 1
    msg = await card(quorum, req["id"])
    assert "restart deployment" in msg["text"]
    assert [b["text"] for b in msg["reply_markup"]["inline_keyboard"][0]] == [APPROVE, REJECT]

    answer = await tap(quorum, msg, ALICE)
    assert "Approved" in answer["text"]

    status, got = await quorum.api("GET", f"/api/v1/approvals/{req['id']}")
    assert status == 200
    assert got["status"] == "approved"
    assert got["decided_by"] == [{"id": ALICE, "name": "alice"}]
    assert [v["voter_telegram_id"] for v in got["votes"]] == [ALICE]
    token = got["approval_token"]

    status, red = await quorum.api("POST", "/api/v1/tokens/redeem", {"token": token})
    assert status == 200, red
    assert red["id"] == req["id"] and red["approvers"] == [ALICE]
    assert red["action"] == "restart deployment" and red["target"] == "prod/api"
    status, again = await quorum.api("POST", "/api/v1/tokens/redeem", {"token": token})
    assert status == 409
    assert again["error"]["code"] == "token_replayed"

    final = await card_where(
        quorum, req["id"], lambda m: "APPROVED" in m["text"] and not m.get("reply_markup")
    )
    assert "alice" in final["text"]
    # A tap on the stale buttons (the same callback_data) is told the request is decided.
    data = msg["reply_markup"]["inline_keyboard"][0][1]["callback_data"]
    answer = await inject_tap(quorum, msg["message_id"], BOB, data)
    assert "already approved" in answer["text"]
    events = await audit_events(quorum, req["id"])
    for event in (
        "approval.created",
        "card.queued",
        "vote.accepted",
        "approval.approved",
        "token.issued",
        "token.redeemed",
        "token.replay",
        "vote.refused",
    ):
        assert event in events, (event, events)


async def test_two_of_n_critical_needs_two_distinct_approvers(quorum: Harness) -> None:
    req = await create(quorum, risk_level="critical")
    assert req["required_approvals"] == 2
    msg = await card(quorum, req["id"])
    first = await tap(quorum, msg, ALICE)
    assert "1/2" in first["text"]
    again = await tap(quorum, msg, ALICE)
    assert "already voted" in again["text"] and again["show_alert"]
    onlooker = await tap(quorum, msg, CAROL)
    assert "not an approver" in onlooker["text"]
    await card_where(
        quorum,
        req["id"],
        lambda m: "Approvals:</b> 1/2" in str(m["text"]) or "1/2" in str(m["text"]),
    )
    status, mid = await quorum.api("GET", f"/api/v1/approvals/{req['id']}")
    assert mid["status"] == "pending" and "approval_token" not in mid

    second = await tap(quorum, msg, BOB)
    assert "Approved" in second["text"]
    status, got = await quorum.api("GET", f"/api/v1/approvals/{req['id']}")
    assert got["status"] == "approved"
    assert sorted(d["id"] for d in got["decided_by"]) == [ALICE, BOB]
    status, red = await quorum.api(
        "POST", "/api/v1/tokens/redeem", {"token": got["approval_token"]}
    )
    assert status == 200 and sorted(red["approvers"]) == [ALICE, BOB]
    status, again_red = await quorum.api(
        "POST", "/api/v1/tokens/redeem", {"token": got["approval_token"]}
    )
    assert status == 409 and again_red["error"]["code"] == "token_replayed"
    rows = await sql(quorum, "SELECT count(*) AS n FROM approval_tokens")
    assert rows[0]["n"] == 1


async def test_reject_threshold_one_and_two(make_quorum: QuorumFactory) -> None:
    data = policy_data()
    data["teams"]["platform"]["policy"] = {
        "critical": {"required_approvals": 2, "reject_threshold": 2},
    }
    h = await make_quorum(policy=data)
    # reject_threshold 2: one approve and one reject leave it pending, a second reject decides.
    req = await create(h, risk_level="critical")
    msg = await card(h, req["id"])
    await tap(h, msg, ALICE, APPROVE)
    await tap(h, msg, BOB, REJECT)
    _, got = await h.api("GET", f"/api/v1/approvals/{req['id']}")
    assert got["status"] == "pending" and got["approvals"] == 1 and got["rejects"] == 1
    answer = await tap(h, msg, DAVE, REJECT)
    assert "Rejected" in answer["text"]
    _status, got = await h.api("GET", f"/api/v1/approvals/{req['id']}")
    assert got["status"] == "rejected" and "approval_token" not in got
    # reject_threshold 1 (the default for low): one reject decides at once.
    low = await create(h, risk_level="low", action="other")
    msg = await card(h, low["id"])
    answer = await tap(h, msg, BOB, REJECT)
    assert "Rejected" in answer["text"]
    await card_where(h, low["id"], lambda m: "REJECTED" in m["text"])


async def test_requester_cannot_vote(quorum: Harness) -> None:
    req = await create(quorum, requested_by_telegram_id=ALICE)
    msg = await card(quorum, req["id"])
    answer = await tap(quorum, msg, ALICE)
    assert "cannot vote on their own request" in answer["text"] and answer["show_alert"]
    _status, got = await quorum.api("GET", f"/api/v1/approvals/{req['id']}")
    assert got["status"] == "pending" and got["votes"] == []
    assert "vote.refused" in await audit_events(quorum, req["id"])


async def test_removed_approver_no_longer_counts(make_quorum: QuorumFactory) -> None:
    h = await make_quorum()
    req = await create(h, risk_level="critical")
    msg = await card(h, req["id"])
    first = await tap(h, msg, ALICE)
    assert "1/2" in first["text"], first
    # The policy changes (as after a reload): alice is no longer an approver.
    data = policy_data()
    data["teams"]["platform"]["approvers"] = [
        a for a in data["teams"]["platform"]["approvers"] if a["telegram_id"] != ALICE
    ]
    from bot.policy import parse_policy

    h.app.runtime.policy = parse_policy(data)
    answer = await tap(h, msg, BOB)
    assert "1/2" in answer["text"]
    _, got = await h.api("GET", f"/api/v1/approvals/{req['id']}")
    assert got["status"] == "pending"
    assert {v["voter_telegram_id"]: v["counted"] for v in got["votes"]} == {ALICE: False, BOB: True}
    answer = await tap(h, msg, DAVE)
    assert "Approved" in answer["text"]
    _status, got = await h.api("GET", f"/api/v1/approvals/{req['id']}")
    assert sorted(d["id"] for d in got["decided_by"]) == [BOB, DAVE]


async def test_required_roles(make_quorum: QuorumFactory) -> None:
    data = policy_data()
    data["teams"]["platform"]["policy"] = {
        "high": {"required_approvals": 2, "required_roles": ["lead"]},
    }
    h = await make_quorum(policy=data)
    req = await create(h, risk_level="high")
    msg = await card(h, req["id"])
    await tap(h, msg, ALICE)
    answer = await tap(h, msg, DAVE)
    assert "Approved" not in answer["text"]
    answer = await tap(h, msg, BOB)  # bob is a lead
    assert "Approved" in answer["text"]


# ---------------------------------------------------------------- HTTP API rules


async def test_auth_and_other_team(quorum: Harness) -> None:
    status, data = await quorum.api("POST", "/api/v1/approvals", body(), key=None)
    assert status == 401 and data["error"]["code"] == "unauthorized"
    status, data = await quorum.api("POST", "/api/v1/approvals", body(), key="nope")
    assert status == 401
    req = await create(quorum)
    status, data = await quorum.api("GET", f"/api/v1/approvals/{req['id']}", key=OTHER_API_KEY)
    assert status == 404 and data["error"]["code"] == "not_found"
    status, data = await quorum.api(
        "POST", f"/api/v1/approvals/{req['id']}/cancel", key=OTHER_API_KEY
    )
    assert status == 404
    status, data = await quorum.api("GET", "/api/v1/approvals", key=OTHER_API_KEY)
    assert status == 200 and data["approvals"] == []
    status, data = await quorum.api("GET", "/api/v1/approvals/not-a-uuid")
    assert status == 404
    status, data = await quorum.api("GET", "/api/v1/approvals?status=pending")
    assert [a["id"] for a in data["approvals"]] == [req["id"]]
    status, data = await quorum.api("GET", "/api/v1/approvals?status=weird")
    assert status == 422 and data["error"]["field"] == "status"


async def test_validation_names_the_field(quorum: Harness) -> None:
    cases = [
        ({"target": "x", "risk_level": "low", "requested_by": "ci"}, "action"),
        (body(risk_level="extreme"), "risk_level"),
        (body(expires_in="60"), "expires_in"),
        (body(metadata=[1]), "metadata"),
        (body(callback_url="ftp://x"), "callback_url"),
        (body(callback_url="https://evil.example/"), "callback_url"),
        (body(surprise=1), "surprise"),
        (body(requested_by_telegram_id=True), "requested_by_telegram_id"),
    ]
    for payload, field in cases:
        status, data = await quorum.api("POST", "/api/v1/approvals", payload)
        assert status == 422, (payload, data)
        assert data["error"]["code"] == "validation_error"
        assert data["error"]["field"] == field, data
        assert data["error"]["message"].startswith(field)
    status, data = await quorum.api("POST", "/api/v1/approvals", [1, 2])
    assert status == 422
    async with quorum.http.post(
        quorum.url + "/api/v1/approvals",
        data=b"{not json",
        headers={"Authorization": "Bearer test-key-platform", "Content-Type": "application/json"},
    ) as resp:
        assert resp.status == 400
    big = "x" * (1024 * 1024 + 10)
    status, data = await quorum.api("POST", "/api/v1/approvals", body(description=big))
    assert status == 413 and data["error"]["code"] == "payload_too_large"
    rows = await sql(quorum, "SELECT count(*) AS n FROM approval_requests")
    assert rows[0]["n"] == 0


async def test_expires_in_is_capped_by_policy(quorum: Harness) -> None:
    req = await create(quorum, expires_in=30 * 86400)
    rows = await sql(
        quorum,
        "SELECT extract(epoch FROM expires_at - created_at) AS ttl FROM approval_requests",
    )
    assert abs(float(rows[0]["ttl"]) - 3600) < 2
    short = await create(quorum, expires_in=120, action="short")
    _status, got = await quorum.api("GET", f"/api/v1/approvals/{short['id']}")
    assert got["expires_at"] < req["expires_at"]


async def test_idempotency_key(quorum: Harness) -> None:
    hdr = {"Idempotency-Key": "deploy-42"}
    status, first = await quorum.api("POST", "/api/v1/approvals", body(), headers=hdr)
    assert status == 201
    # Same body with another key order: the same request, 200.
    reordered = dict(reversed(list(body().items())))
    status, again = await quorum.api("POST", "/api/v1/approvals", reordered, headers=hdr)
    assert status == 200 and again["id"] == first["id"]
    status, other = await quorum.api(
        "POST", "/api/v1/approvals", body(target="prod/db"), headers=hdr
    )
    assert status == 409 and other["error"]["code"] == "idempotency_conflict"
    # Concurrent retries with one key make one request.
    hdr2 = {"Idempotency-Key": "deploy-43"}
    results = await asyncio.gather(
        *(quorum.api("POST", "/api/v1/approvals", body(), headers=hdr2) for _ in range(8))
    )
    assert sorted(s for s, _ in results).count(201) == 1
    assert len({d["id"] for _, d in results}) == 1
    rows = await sql(quorum, "SELECT count(*) AS n FROM approval_requests")
    assert rows[0]["n"] == 2


async def test_fingerprint_merge(quorum: Harness) -> None:
    req = await create(quorum, fingerprint="disk-full", risk_level="critical")
    msg = await card(quorum, req["id"])
    await tap(quorum, msg, ALICE)
    status, merged = await quorum.api(
        "POST", "/api/v1/approvals", body(fingerprint="disk-full", risk_level="critical")
    )
    assert status == 200 and merged["id"] == req["id"] and merged["hit_count"] == 2
    status, merged = await quorum.api(
        "POST", "/api/v1/approvals", body(fingerprint="disk-full", risk_level="critical")
    )
    assert merged["hit_count"] == 3
    await card_where(quorum, req["id"], lambda m: "3×" in m["text"])
    # Votes keep counting on the merged request; the card was edited, never re-posted.
    answer = await tap(quorum, msg, BOB)
    assert "Approved" in answer["text"]
    cards = [m for m in await quorum.bot_messages() if req["id"] in str(m["text"])]
    assert len(cards) == 1
    assert "approval.merged" in await audit_events(quorum, req["id"])
    # Once decided, the fingerprint starts a new request.
    fresh = await create(quorum, fingerprint="disk-full")
    assert fresh["id"] != req["id"]


async def test_cancel_and_result(quorum: Harness) -> None:
    req = await create(quorum)
    msg = await card(quorum, req["id"])
    status, data = await quorum.api(
        "POST", f"/api/v1/approvals/{req['id']}/result", {"success": True}
    )
    assert status == 409 and data["error"]["code"] == "not_approved"
    status, data = await quorum.api("POST", f"/api/v1/approvals/{req['id']}/cancel")
    assert status == 200 and data["status"] == "cancelled"
    status, data = await quorum.api("POST", f"/api/v1/approvals/{req['id']}/cancel")
    assert status == 409 and data["error"]["code"] == "not_pending"
    await card_where(
        quorum, req["id"], lambda m: "CANCELLED" in m["text"] and not m.get("reply_markup")
    )
    data_ = msg["reply_markup"]["inline_keyboard"][0][0]["callback_data"]
    answer = await inject_tap(quorum, msg["message_id"], ALICE, data_)
    assert "cancelled" in answer["text"]

    ok = await create(quorum, action="second")
    msg = await card(quorum, ok["id"])
    await tap(quorum, msg, ALICE)
    status, data = await quorum.api(
        "POST", f"/api/v1/approvals/{ok['id']}/result", {"success": "yes"}
    )
    assert status == 422 and data["error"]["field"] == "success"
    status, data = await quorum.api(
        "POST",
        f"/api/v1/approvals/{ok['id']}/result",
        {"success": False, "detail": "<b>boom</b> & more"},
    )
    assert status == 200 and data["result"]["success"] is False
    status, data = await quorum.api(
        "POST", f"/api/v1/approvals/{ok['id']}/result", {"success": True}
    )
    assert status == 409 and data["error"]["code"] == "result_already_reported"
    shown = await card_where(quorum, ok["id"], lambda m: "Executor" in m["text"])
    assert "<b>boom</b> & more" in shown["text"]
    events = await audit_events(quorum)
    assert "approval.cancelled" in events and "approval.result" in events


# ---------------------------------------------------------------- cards and hostile text


async def test_html_and_10kb_values_in_every_text_field(quorum: Harness) -> None:
    nasty = '<b>95%</b> used & rising </code> <a href="tg://user?id=1">x</a> '
    big = (nasty * 200)[:10240]
    req = await create(
        quorum,
        action=big,
        target=big,
        description=big,
        requested_by=big,
        metadata={"k": big},
        blast_radius={"pods": big},
        dry_run_checks=[big],  # a second would be over the 16 KB cap
        risk_level="critical",
    )
    msg = await card(quorum, req["id"])
    text = msg["text"]
    assert len(text) <= MAX_TEXT
    assert "<b>95%</b> used & rising" in text  # shown literally
    assert "…" in text  # visibly clipped
    assert not any(
        e.get("type") == "text_link" and "tg://user?id=1" in str(e) for e in msg["entities"] or []
    )
    # Every later edit stays valid too.
    answer = await tap(quorum, msg, ALICE)
    assert "1/2" in answer["text"]
    edited = await card_where(quorum, req["id"], lambda m: m["edits"] >= 1)
    assert len(edited["text"]) <= MAX_TEXT
    calls = await quorum.emu.calls()
    assert not [c for c in calls if c["status"] == 400 and "parse" in str(c["description"])]


async def test_card_goes_to_every_chat_of_the_team(make_quorum: QuorumFactory) -> None:
    second = -1001000000999
    data = policy_data()
    data["teams"]["platform"]["chat_ids"] = [CHAT, second]
    h = await make_quorum(policy=data)
    await h.emu.add_chat(second, "supergroup", title="platform-2", members=[ALICE, BOB])
    req = await create(h)
    one = await card(h, req["id"], CHAT)
    two = await card(h, req["id"], second)
    # Buttons are bound to their chat: each card's callback_data differs.
    data1 = one["reply_markup"]["inline_keyboard"][0][0]["callback_data"]
    data2 = two["reply_markup"]["inline_keyboard"][0][0]["callback_data"]
    assert data1 != data2
    answer = await tap(h, two, ALICE, chat=second)
    assert "Approved" in answer["text"]
    for chat in (CHAT, second):

        async def decided(chat: int = chat) -> bool:
            m = await card(h, req["id"], chat)
            return "APPROVED" in m["text"] and not m.get("reply_markup")

        await h.wait_for(decided)
    assert OTHER_CHAT not in (CHAT, second)


# ---------------------------------------------------------------- forged taps


async def inject_tap(
    h: Harness,
    message_id: int,
    user: int,
    data: str,
    chat: int = CHAT,
    chat_fields: dict[str, Any] | None = None,
) -> dict[str, Any]:
    qid = f"forged-{message_id}-{user}-{abs(hash(data)) % 10**9}-{chat}"
    await h.emu.inject_update(
        {
            "callback_query": {
                "id": qid,
                "from": {"id": user, "is_bot": False, "first_name": "U"},
                "message": {
                    "message_id": message_id,
                    "date": 0,
                    "chat": {"id": chat, "type": "supergroup", "title": "x", **(chat_fields or {})},
                },
                "chat_instance": "1",
                "data": data,
            }
        }
    )
    result = await h.emu.callback_answer(qid, wait=5)
    assert result.get("answered"), result
    answer: dict[str, Any] = result["answer"]
    return answer


async def test_duplicate_card_after_a_timed_out_send_maps_to_the_same_request(
    make_quorum: QuorumFactory,
) -> None:
    # Telegram posts the card but answers after our timeout, so the retry posts it again.
    h = await make_quorum(outbox_call_timeout_seconds=0.5, outbox_retry_base_seconds=0.05)
    await h.emu.add_fault("timeout", method="sendMessage", chat_id=CHAT, delay=1.5)
    req = await create(h, risk_level="critical")

    async def both_cards() -> list[dict[str, Any]] | None:
        found = [m for m in await h.bot_messages(CHAT) if req["id"] in str(m["text"])]
        return found if len(found) == 2 else None

    duplicate, stored = await h.wait_for(both_cards)
    # The first card's message id never reached us; its buttons are still genuine.
    assert "recorded (1/2" in (await tap(h, duplicate, ALICE))["text"]
    assert "already voted" in (await tap(h, stored, ALICE))["text"]
    assert "Approved" in (await tap(h, stored, BOB))["text"]
    status, data = await h.api("GET", f"/api/v1/approvals/{req['id']}")
    assert status == 200 and data["status"] == "approved"
    assert sorted(v["voter_telegram_id"] for v in data["votes"]) == sorted([ALICE, BOB])


async def test_emulator_plays_many_taps_open_and_closed_loop(quorum: Harness) -> None:
    # The load generator of bench.votes: the emulator itself taps, on a schedule or at a
    # fixed concurrency, and reports each answer with its latency.
    first = await card(quorum, (await create(quorum, risk_level="critical"))["id"])
    second = await card(quorum, (await create(quorum, risk_level="critical"))["id"])

    def taps(msg: dict[str, Any]) -> list[dict[str, Any]]:
        return [
            {"chat_id": CHAT, "message_id": msg["message_id"], "from_id": u, "button_text": APPROVE}
            for u in (ALICE, BOB, CAROL)
        ]

    closed = await quorum.emu.taps(taps(first), concurrency=3)
    opened = await quorum.emu.taps(taps(second), rate=20)
    for out in (closed, opened):
        texts = sorted(str(a["text"]) for a in out["answers"])
        assert all(a["latency_ms"] > 0 for a in out["answers"])
        assert sum("Approved" in t for t in texts) == 1
        assert sum("recorded" in t for t in texts) == 1
        assert sum("not an approver" in t for t in texts) == 1
    # Three taps at 20/s take at least the two gaps of the schedule.
    assert opened["issued_seconds"] >= 0.09


async def test_a_tap_left_to_the_dispatcher_counts_as_one_in_the_fast_lane(
    quorum: Harness,
) -> None:
    # A field of the chat the fast lane (handlers.taps) does not read sends the tap through
    # aiogram's models and routers: the same vote, the same ballot.
    req = await create(quorum, risk_level="critical")
    msg = await card(quorum, req["id"])
    data = msg["reply_markup"]["inline_keyboard"][0][0]["callback_data"]
    photo = {
        "photo": {
            **{"small_file_id": "s", "small_file_unique_id": "su"},
            **{"big_file_id": "b", "big_file_unique_id": "bu"},
        }
    }
    slow = await inject_tap(quorum, msg["message_id"], ALICE, data, chat_fields=photo)
    assert "recorded (1/2" in slow["text"]
    assert "already voted" in (await tap(quorum, msg, ALICE))["text"]
    assert "Approved" in (await tap(quorum, msg, BOB))["text"]
    _status, got = await quorum.api("GET", f"/api/v1/approvals/{req['id']}")
    assert [v["voter_telegram_id"] for v in got["votes"]] == [ALICE, BOB]


async def test_forged_callback_data_is_refused_and_audited(quorum: Harness) -> None:
    one = await create(quorum, action="one")
    two = await create(quorum, action="two")
    card_one = await card(quorum, one["id"])
    card_two = await card(quorum, two["id"])
    good = card_one["reply_markup"]["inline_keyboard"][0][0]["callback_data"]
    prefix, ref, vote, tag = good.split(":")
    flipped = tag[:-1] + ("A" if tag[-1] != "A" else "B")
    forged = {
        "bad tag": f"{prefix}:{ref}:{vote}:{flipped}",
        "tag of approve used for reject": f"{prefix}:{ref}:r:{tag}",
        "another card's message id": good,
        "garbage": "ap:zzz",
        "over 64 bytes": good + "x" * 60,
    }
    answers = {
        "bad tag": await inject_tap(quorum, card_one["message_id"], ALICE, forged["bad tag"]),
        "tag of approve used for reject": await inject_tap(
            quorum, card_one["message_id"], ALICE, forged["tag of approve used for reject"]
        ),
        "another card's message id": await inject_tap(
            quorum, card_two["message_id"], ALICE, forged["another card's message id"]
        ),
        "garbage": await inject_tap(quorum, card_one["message_id"], ALICE, forged["garbage"]),
        "over 64 bytes": await inject_tap(
            quorum, card_one["message_id"], ALICE, forged["over 64 bytes"]
        ),
        # A real button of platform's card, replayed in the data team's chat.
        "another chat": await inject_tap(quorum, card_one["message_id"], ALICE, good, OTHER_CHAT),
    }
    for name, answer in answers.items():
        assert "not valid" in answer["text"] or "does not belong" in answer["text"], name
        assert answer["show_alert"], name
    for rid in (one["id"], two["id"]):
        _status, got = await quorum.api("GET", f"/api/v1/approvals/{rid}")
        assert got["status"] == "pending" and got["votes"] == []
    rows = await sql(
        quorum,
        "SELECT detail->>'reason' AS reason FROM audit_log "
        "WHERE event = 'security.forged_button' ORDER BY id",
    )
    assert len(rows) == len(answers)
    assert {r["reason"] for r in rows} >= {"bad_tag", "card_mismatch", "malformed"}
    # The genuine button still works afterwards.
    answer = await tap(quorum, card_one, ALICE)
    assert "Approved" in answer["text"]


# ---------------------------------------------------------------- audit atomicity


async def test_failed_audit_write_leaves_no_vote(quorum: Harness) -> None:
    req = await create(quorum)
    msg = await card(quorum, req["id"])
    conn = await asyncpg.connect(to_sync_dsn(quorum.settings.database_url))
    try:
        await conn.execute(
            """
            CREATE FUNCTION test_audit_fail() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                IF NEW.event = 'vote.accepted' THEN RAISE EXCEPTION 'audit down'; END IF;
                RETURN NEW;
            END $$;
            CREATE TRIGGER test_audit_fail BEFORE INSERT ON audit_log
                FOR EACH ROW EXECUTE FUNCTION test_audit_fail();
            """
        )
        res = await quorum.emu.tap(CHAT, msg["message_id"], ALICE, button_text=APPROVE, wait=1)
        assert res.get("answer") is None  # the update failed: Telegram will deliver it again
        votes = await conn.fetchval("SELECT count(*) FROM votes")
        status = await conn.fetchval("SELECT status FROM approval_requests")
        tokens = await conn.fetchval("SELECT count(*) FROM approval_tokens")
        assert (votes, status, tokens) == (0, "pending", 0)
        # Once the audit log accepts writes again, the redelivered tap counts exactly once.
        await conn.execute("DROP TRIGGER test_audit_fail ON audit_log")

        async def approved() -> bool:
            s = await conn.fetchval("SELECT status FROM approval_requests")
            return bool(s == "approved")

        await quorum.wait_for(approved)
        assert await conn.fetchval("SELECT count(*) FROM votes") == 1
    finally:
        await conn.close()


# ---------------------------------------------------------------- commands


async def message_ids_stored(h: Harness, *request_ids: str) -> bool:
    """Whether the sender has stored Telegram's message id of each request's card: a card is
    in the chat a moment before."""
    rows = await sql(
        h,
        "SELECT count(DISTINCT approval_id) AS n FROM telegram_messages"
        " WHERE approval_id = ANY($1::uuid[]) AND message_id IS NOT NULL",
        list(request_ids),
    )
    return bool(rows[0]["n"] == len(request_ids))


async def test_pending_status_whoami_commands(quorum: Harness) -> None:
    req = await create(quorum, action="drop <table> & co")
    msg = await card(quorum, req["id"])
    # /pending links a card only once its message id is stored.
    await quorum.wait_for(lambda: message_ids_stored(quorum, req["id"]))
    await quorum.emu.send_text(CHAT, CAROL, "/pending")
    link = f"https://t.me/c/{str(CHAT)[4:]}/{msg['message_id']}"

    async def reply(marker: str) -> dict[str, Any] | None:
        for m in await quorum.bot_messages():
            if marker in str(m["text"]):
                return m
        return None

    pending = await quorum.wait_for(lambda: reply("Open requests"))
    assert "drop <table> & co" in pending["text"]
    assert any(e.get("url") == link for e in pending["entities"] or [])
    await quorum.emu.send_text(CHAT, CAROL, f"/status {req['id']}")
    status = await quorum.wait_for(lambda: reply("Status:"))
    assert "pending" in status["text"] and "0/1" in status["text"]
    await quorum.emu.send_text(CHAT, BOB, "/whoami")
    who = await quorum.wait_for(lambda: reply("your Telegram id is 1002"))
    assert "platform" in who["text"] and "lead" in who["text"]


# ---------------------------------------------------------------- maintenance


async def test_expiry_escalation_and_signed_callback(make_quorum: QuorumFactory) -> None:
    received: list[tuple[bytes, str]] = []
    attempts = 0

    async def hook(request: web.Request) -> web.Response:
        nonlocal attempts
        attempts += 1
        if attempts == 1:
            return web.Response(status=503)  # the first delivery fails: retried
        received.append((await request.read(), request.headers.get("X-Quorum-Signature", "")))
        return web.Response(status=204)

    async with hook_server(hook) as base:
        data = policy_data()
        data["teams"]["platform"]["policy"] = {
            "high": {"required_approvals": 2, "escalate_after_seconds": 30},
        }
        data["teams"]["platform"]["callback_url_prefixes"] = [f"{base}/"]
        h = await make_quorum(policy=data)
        url = f"{base}/hook"
        req = await create(h, risk_level="high", callback_url=url, expires_in=600)
        msg = await card(h, req["id"])
        first = await tap(h, msg, ALICE)
        assert "1/2" in first["text"], (first, await audit_events(h, req["id"]))
        # Make it look old and about to run out (the database's clock decides expiry).
        await sql(
            h,
            "UPDATE approval_requests SET created_at = now() - interval '1 minute' "
            "WHERE id = $1::uuid",
            req["id"],
        )

        async def escalation() -> dict[str, Any] | None:
            for m in await h.bot_messages():
                if "Still waiting" in str(m["text"]):
                    return m
            return None

        esc_msg = await h.wait_for(escalation)
        mentioned = {
            e["user"]["id"] if "user" in e else e.get("url")
            for e in esc_msg["entities"] or []
            if e["type"] in ("text_mention", "text_link")
        }
        assert f"tg://user?id={BOB}" in mentioned or BOB in mentioned
        assert f"tg://user?id={ALICE}" not in mentioned and ALICE not in mentioned
        await sql(
            h,
            "UPDATE approval_requests SET expires_at = now() - interval '1 second' "
            "WHERE id = $1::uuid",
            req["id"],
        )
        await card_where(
            h, req["id"], lambda m: "EXPIRED" in m["text"] and not m.get("reply_markup")
        )
        answer = await inject_tap(
            h, msg["message_id"], BOB, msg["reply_markup"]["inline_keyboard"][0][0]["callback_data"]
        )
        assert "expired" in answer["text"]
        await h.wait_for(lambda: asyncio.sleep(0, received), timeout=15)
        raw, signature = received[0]
        expected = hmac.new(callback_key(TOKEN_SECRET), raw, hashlib.sha256).hexdigest()
        assert signature == f"sha256={expected}"
        payload = json.loads(raw)
        assert payload["id"] == req["id"] and payload["status"] == "expired"
        events = await h.wait_for(
            lambda: audit_events_with(h, req["id"], "callback.delivered"), timeout=15
        )
        assert events.count("approval.escalated") == 1
        assert "approval.expired" in events
        _status, got = await h.api("GET", f"/api/v1/approvals/{req['id']}")
        assert got["status"] == "expired" and "approval_token" not in got


async def test_tap_before_the_message_id_is_stored_still_counts(quorum: Harness) -> None:
    """A genuine button tapped before the sender recorded Telegram's message id is counted;
    the same button on a message of another card is still refused."""
    req = await create(quorum)
    other = await create(quorum, action="other action")
    msg = await card(quorum, req["id"])
    other_msg = await card(quorum, other["id"])
    await quorum.wait_for(lambda: message_ids_stored(quorum, req["id"], other["id"]))
    # As if the sender had not yet stored the answer of sendMessage for this card.
    await sql(
        quorum,
        "UPDATE telegram_messages SET message_id = NULL WHERE approval_id = $1::uuid",
        req["id"],
    )
    data = msg["reply_markup"]["inline_keyboard"][0][0]["callback_data"]
    # Re-used on the other card's message (stored): refused, nothing counted.
    refused = await inject_tap(quorum, other_msg["message_id"], ALICE, data)
    assert "does not belong" in refused["text"]
    _status, got = await quorum.api("GET", f"/api/v1/approvals/{other['id']}")
    assert got["votes"] == []
    answer = await tap(quorum, msg, ALICE)
    assert "Approved" in answer["text"] or "approved" in answer["text"], answer
    _status, got = await quorum.api("GET", f"/api/v1/approvals/{req['id']}")
    assert got["status"] == "approved"
