"""The policy engine end to end: trust records, trust lowering a threshold, auto-approval
with deny-wins and ⛔ Revoke, /trust with its reset button, and the trust API."""

from __future__ import annotations

import base64
import html
import time
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

from bot.totp import code_at
from tests.e2e.flows import (
    APPROVE,
    REJECT,
    answer_question,
    audit_events,
    card,
    card_where,
    create,
    tap,
)
from tests.support import (
    ALICE,
    BOB,
    CAROL,
    CHAT,
    DAVE,
    Harness,
    QuorumFactory,
    db_rows,
    policy_data,
)

PATTERN = "restart deployment:prod/api"


def engine_policy(**team: Any) -> dict[str, Any]:
    data = policy_data()
    data["teams"]["platform"].update(team)
    return data


async def approve_and_succeed(h: Harness, **over: Any) -> str:
    req = await create(h, **over)
    answer = await tap(h, await card(h, req["id"]), ALICE)
    assert "Approved" in answer["text"], answer
    status, done = await h.api(
        "POST", f"/api/v1/approvals/{req['id']}/result", {"success": True, "detail": "ok"}
    )
    assert status == 200, done
    return str(req["id"])


async def trust_of(h: Harness, pattern: str = PATTERN) -> dict[str, Any]:
    status, page = await h.api("GET", "/api/v1/trust?limit=100")
    assert status == 200, page
    found: dict[str, Any] = next(r for r in page["trust"] if r["pattern"] == pattern)
    return found


async def test_trust_rises_on_success_and_drops_on_rejection_and_failure(
    quorum: Harness,
) -> None:
    first = await approve_and_succeed(quorum)
    await approve_and_succeed(quorum, target="prod/api")
    record = await trust_of(quorum)
    assert (record["score"], record["total_approvals"], record["last_approver"]) == (2, 2, "alice")
    assert "trust.raised" in await audit_events(quorum, first)

    rejected = await create(quorum)
    assert rejected["trust_score"] == 2 and rejected["action_pattern"] == PATTERN
    await tap(quorum, await card(quorum, rejected["id"]), BOB, REJECT)
    record = await trust_of(quorum)
    assert (record["score"], record["total_rejections"], record["last_rejecter"]) == (0, 1, "bob")
    rows = await db_rows(
        quorum,
        "SELECT detail->>'reason' AS reason FROM audit_log WHERE event = 'trust.reset' "
        "AND approval_id = $1::uuid",
        rejected["id"],
    )
    assert [r["reason"] for r in rows] == ["rejected"]

    await approve_and_succeed(quorum)
    failed = await create(quorum)
    await tap(quorum, await card(quorum, failed["id"]), ALICE)
    status, _ = await quorum.api(
        "POST", f"/api/v1/approvals/{failed['id']}/result", {"success": False, "detail": "boom"}
    )
    assert status == 200
    assert (await trust_of(quorum))["score"] == 0


async def test_pattern_masks_ids_and_client_pattern_wins(quorum: Harness) -> None:
    a = await create(quorum, action="delete", target="nginx-frontend-7f9c4d")
    b = await create(quorum, action="delete", target="pod-1", action_pattern="delete:pods")
    assert a["action_pattern"] == "delete:nginx-frontend-*"
    assert b["action_pattern"] == "delete:pods"


async def test_trust_lowers_a_threshold_by_one(make_quorum: QuorumFactory) -> None:
    h = await make_quorum(engine_policy(policy={"high": {"trust_lowers_at": 1}}))
    first = await create(h, risk_level="high")
    msg = await card(h, first["id"])
    await tap(h, msg, ALICE)
    await tap(h, msg, BOB)
    await h.api("POST", f"/api/v1/approvals/{first['id']}/result", {"success": True})

    second = await create(h, risk_level="high")
    assert (second["trust_score"], second["required_approvals"]) == (1, 1)
    msg = await card_where(h, second["id"], lambda m: "one approval less" in m["text"])
    answer = await tap(h, msg, ALICE)
    assert "Approved" in answer["text"], answer


AUTO = {
    "auto_approve": [
        {"name": "routine", "actions": ["restart deployment"], "max_risk": "medium"},
    ],
    "deny": [{"name": "no-db", "targets": ["prod/db*"]}],
}


async def test_auto_approval_and_revoke(make_quorum: QuorumFactory) -> None:
    h = await make_quorum(engine_policy(**AUTO))
    req = await create(h, risk_level="medium")
    assert (req["status"], req["auto_rule"], req["decision_reason"]) == (
        "approved",
        "routine",
        "auto-approved by rule routine (trust 0)",
    )
    token = req["approval_token"]
    msg = await card_where(h, req["id"], lambda m: "auto-approved by rule" in m["text"])
    assert "🤖 auto-approved by rule <b>routine</b> (trust 0)" in msg["text"] or (
        "🤖 auto-approved by rule routine (trust 0)" in msg["text"]
    )
    assert [b["text"] for b in msg["reply_markup"]["inline_keyboard"][0]] == ["⛔ Revoke"]

    refused = await tap(h, msg, CAROL, "⛔ Revoke")
    assert "Only approvers" in refused["text"], refused
    answer = await tap(h, msg, ALICE, "⛔ Revoke")
    assert "Revoked" in answer["text"], answer
    status, body = await h.api("POST", "/api/v1/tokens/redeem", {"token": token})
    assert (status, body["error"]["code"]) == (409, "revoked"), body
    events = await audit_events(h, req["id"])
    assert {"approval.auto_approved", "approval.revoked", "trust.reset"} <= set(events)
    await card_where(h, req["id"], lambda m: "Revoked" in m["text"] and not m.get("reply_markup"))


async def test_deny_wins_over_auto_approve(make_quorum: QuorumFactory) -> None:
    h = await make_quorum(engine_policy(**AUTO))
    req = await create(h, target="prod/db-main", risk_level="low")
    assert (req["status"], req["deny_rule"]) == ("pending", "no-db")
    assert req["decision_reason"] == "deny rule no-db matched: needs 1 more"
    await card_where(h, req["id"], lambda m: "deny rule" in m["text"])
    await h.emu.send_text(CHAT, ALICE, "/pending")
    listing = await h.wait_for(lambda: _text_in(h, CHAT, "Open requests"))
    assert "deny rule no-db matched: needs 1 more" in listing["text"], listing
    answer = await tap(h, await card(h, req["id"]), ALICE, APPROVE)
    assert "Approved" in answer["text"]
    # Above the rule's max_risk: votes as usual.
    high = await create(h, risk_level="high")
    assert high["status"] == "pending" and high["auto_rule"] is None


async def test_trust_in_chat_and_reset_by_button(quorum: Harness) -> None:
    await approve_and_succeed(quorum)
    await quorum.emu.send_text(CHAT, ALICE, "/trust")

    async def listing() -> dict[str, Any] | None:
        for m in await quorum.bot_messages():
            if "Trust</b> of team" in m["text"] or "Trust of team" in m["text"]:
                return m
        return None

    msg = await quorum.wait_for(listing)
    assert PATTERN in msg["text"]
    button = msg["reply_markup"]["inline_keyboard"][0][0]["text"]
    refused = await tap(quorum, msg, CAROL, button)
    assert "approvers" in refused["text"]
    answer = await tap(quorum, msg, BOB, button)
    assert "reset to 0" in answer["text"], answer
    assert (await trust_of(quorum))["score"] == 0
    rows = await db_rows(
        quorum,
        "SELECT actor, detail->>'reason' AS reason FROM audit_log WHERE event = 'trust.reset'",
    )
    assert [(r["actor"], r["reason"]) for r in rows] == [("bob", "by_hand")]


async def test_trust_api_pages_and_resets(quorum: Harness) -> None:
    await approve_and_succeed(quorum)
    await approve_and_succeed(quorum, target="prod/web")
    status, page = await quorum.api("GET", "/api/v1/trust?limit=1")
    assert status == 200 and len(page["trust"]) == 1 and page["next"]
    status, rest = await quorum.api("GET", f"/api/v1/trust?limit=1&cursor={page['next']}")
    assert status == 200 and rest["next"] is None
    assert [page["trust"][0]["pattern"], rest["trust"][0]["pattern"]] == [
        PATTERN,
        "restart deployment:prod/web",
    ]
    status, reset = await quorum.api("POST", f"/api/v1/trust/{quote(PATTERN, safe='')}/reset")
    assert (status, reset["score"], reset["total_approvals"]) == (200, 0, 1), reset
    status, missing = await quorum.api("POST", "/api/v1/trust/nothing-here/reset")
    assert (status, missing["error"]["code"]) == (404, "not_found")
    status, bad = await quorum.api("GET", "/api/v1/trust?limit=0")
    assert status == 422, bad
    status, bad = await quorum.api("GET", "/api/v1/trust?cursor=%%%")
    assert status == 422, bad


STEP_UP = {"policy": {"critical": {"required_approvals": 2, "step_up": "private"}}}


async def private_state(h: Harness, user: int) -> str | None:
    rows = await db_rows(h, "SELECT state FROM private_chats WHERE telegram_id = $1", user)
    return rows[0]["state"] if rows else None


async def open_private(h: Harness, user: int) -> None:
    await h.emu.start_bot(user)

    async def opened() -> bool:
        return await private_state(h, user) == "open"

    await h.wait_for(opened)


async def confirmation(h: Harness, user: int, request_id: str) -> dict[str, Any]:
    async def find() -> dict[str, Any] | None:
        for m in await h.bot_messages(user):
            if request_id in m["text"] and "Confirm your approval" in m["text"]:
                return m
        return None

    found: dict[str, Any] = await h.wait_for(find)
    return found


async def test_step_up_counts_a_vote_once_confirmed_in_private(
    make_quorum: QuorumFactory,
) -> None:
    h = await make_quorum(engine_policy(**STEP_UP))
    req = await create(h, risk_level="critical")
    msg = await card(h, req["id"])
    refused = await tap(h, msg, ALICE)
    assert "press Start" in refused["text"] and "@quorum_test_bot" in refused["text"], refused
    assert (await h.api("GET", f"/api/v1/approvals/{req['id']}"))[1]["votes"] == []

    await open_private(h, ALICE)
    answer = await tap(h, msg, ALICE)
    assert "private chat" in answer["text"], answer
    await card_where(h, req["id"], lambda m: "alice · awaiting confirmation" in m["text"])
    _, got = await h.api("GET", f"/api/v1/approvals/{req['id']}")
    assert (got["approvals"], got["decision_reason"]) == (0, "awaiting confirmation of alice"), got

    ask = await confirmation(h, ALICE, req["id"])
    assert "restart deployment" in ask["text"] and "prod/api" in ask["text"]
    done = await tap(h, ask, ALICE, "✅ Confirm", chat=ALICE)
    assert "Confirmed (1/2 approvals)" in done["text"], done

    await open_private(h, BOB)
    await tap(h, msg, BOB)
    done = await tap(h, await confirmation(h, BOB, req["id"]), BOB, "✅ Confirm", chat=BOB)
    assert "approved" in done["text"], done
    status, got = await h.api("GET", f"/api/v1/approvals/{req['id']}")
    assert status == 200 and got["status"] == "approved" and got["approval_token"]
    events = await audit_events(h, req["id"])
    assert events.count("vote.confirmed") == 2 and "vote.refused" in events


async def test_step_up_cancel_withdraws_and_rejects_need_no_confirmation(
    make_quorum: QuorumFactory,
) -> None:
    h = await make_quorum(engine_policy(**STEP_UP))
    req = await create(h, risk_level="critical")
    msg = await card(h, req["id"])
    await open_private(h, ALICE)
    await tap(h, msg, ALICE)
    done = await tap(h, await confirmation(h, ALICE, req["id"]), ALICE, "✖ Cancel", chat=ALICE)
    assert "withdrawn" in done["text"], done
    assert (await h.api("GET", f"/api/v1/approvals/{req['id']}"))[1]["votes"] == []
    answer = await tap(h, msg, BOB, REJECT)  # BOB never started the bot: no step-up to reject
    assert "Rejected" in answer["text"], answer


async def test_step_up_confirmation_expires_after_60_seconds(make_quorum: QuorumFactory) -> None:
    h = await make_quorum(engine_policy(**STEP_UP))
    req = await create(h, risk_level="critical")
    msg = await card(h, req["id"])
    await open_private(h, ALICE)
    await tap(h, msg, ALICE)
    ask = await confirmation(h, ALICE, req["id"])
    # The vote as if tapped 61 s ago (the window is measured by the database's clock).
    await db_rows(
        h,
        "UPDATE votes SET created_at = now() - interval '61 seconds' "
        "WHERE request_id = $1::uuid RETURNING id",
        req["id"],
    )
    late = await tap(h, ask, ALICE, "✅ Confirm", chat=ALICE)
    assert "Too late" in late["text"], late
    again = await tap(h, msg, ALICE)
    assert "private chat" in again["text"], again


GLASS = {"break_glass": {"roles": ["lead"], "require_reason": True, "max_per_day": 1}}


async def question_for(h: Harness, user_name: str) -> dict[str, Any]:
    async def find() -> dict[str, Any] | None:
        for m in await h.bot_messages():
            if "Why break the glass" in m["text"] and user_name in m["text"]:
                return m
        return None

    found: dict[str, Any] = await h.wait_for(find)
    return found


async def test_break_glass_with_reason_review_and_daily_limit(make_quorum: QuorumFactory) -> None:
    h = await make_quorum(engine_policy(**GLASS))
    await open_private(h, ALICE)
    req = await create(h, risk_level="critical")
    msg = await card(h, req["id"])
    assert msg["reply_markup"]["inline_keyboard"][1][0]["text"] == "🚨 Break glass"
    refused = await tap(h, msg, ALICE, "🚨 Break glass")
    assert "needs the role lead" in refused["text"], refused

    asked = await tap(h, msg, BOB, "🚨 Break glass")
    assert "reason" in asked["text"], asked
    question = await question_for(h, "bob")
    assert question["reply_markup"]["force_reply"] is True
    await answer_question(h, CHAT, question, BOB, "payments down, vendor outage")

    async def approved() -> dict[str, Any] | None:
        _, got = await h.api("GET", f"/api/v1/approvals/{req['id']}")
        return got if got["status"] == "approved" else None

    got = await h.wait_for(approved)
    assert got["break_glass"] is True and got["decided_by"] == [{"id": BOB, "name": "bob"}]
    claims = h.app.runtime.tokens.verify(got["approval_token"])
    assert claims.break_glass is True
    status, redeemed = await h.api(
        "POST", "/api/v1/tokens/redeem", {"token": got["approval_token"]}
    )
    assert (status, redeemed["break_glass"]) == (200, True)

    loud = await h.wait_for(lambda: _text_in(h, CHAT, "BREAK GLASS"))
    assert "payments down, vendor outage" in loud["text"]
    await h.wait_for(lambda: _text_in(h, ALICE, "BREAK GLASS"))  # the other approvers, privately
    review = await h.wait_for(lambda: _text_in(h, CHAT, "Review the break-glass"))
    own = await tap(h, review, BOB, "👍 Acknowledge")
    assert "others review" in own["text"], own
    await tap(h, review, ALICE, "👍 Acknowledge")
    await tap(h, review, DAVE, "👍 Acknowledge")
    await h.wait_for(lambda: _text_in(h, CHAT, "Break-glass acknowledged"))
    events = await audit_events(h, req["id"])
    assert {"approval.break_glass", "token.issued", "break_glass.acknowledged"} <= set(events)

    second = await create(h, risk_level="critical", target="prod/other")
    over = await tap(h, await card(h, second["id"]), BOB, "🚨 Break glass")
    assert "max_per_day" in over["text"], over


async def _text_in(h: Harness, chat: int, needle: str) -> dict[str, Any] | None:
    for m in await h.bot_messages(chat):
        if needle in m["text"]:
            return m
    return None


TOTP_POLICY = {"policy": {"critical": {"required_approvals": 1, "step_up": "totp"}}}


async def enrolled_secret(h: Harness, user: int) -> bytes:
    await h.emu.send_text(user, user, "/enroll")
    msg = await h.wait_for(lambda: _text_in(h, user, "otpauth://"))
    uri = html.unescape(msg["text"].split("\n")[-1])
    b32 = parse_qs(urlsplit(uri).query)["secret"][0]
    return base64.b32decode(b32 + "=" * (-len(b32) % 8))


async def code_questions(h: Harness, user: int) -> list[dict[str, Any]]:
    return [m for m in await h.bot_messages(user) if "6-digit code" in m["text"]]


async def answer_code(h: Harness, user: int, code: str, asked: int) -> None:
    """Reply `code` to the `asked`-th code question (1-based), once it is there."""

    async def ready() -> list[dict[str, Any]] | None:
        found = await code_questions(h, user)
        return found if len(found) >= asked else None

    question = (await h.wait_for(ready, timeout=30))[asked - 1]
    await answer_question(h, user, question, user, code)


async def test_totp_step_up_enrol_confirm_and_lock(make_quorum: QuorumFactory) -> None:
    h = await make_quorum(engine_policy(**TOTP_POLICY))
    await open_private(h, ALICE)
    req = await create(h, risk_level="critical")
    msg = await card(h, req["id"])
    refused = await tap(h, msg, ALICE)
    assert "/enroll" in refused["text"], refused

    secret = await enrolled_secret(h, ALICE)
    answer = await tap(h, msg, ALICE)
    assert "private chat" in answer["text"], answer
    now = int(time.time()) // 30
    wrong = next(
        c for c in ("000000", "111111") if c not in {code_at(secret, now + d) for d in (-1, 0, 1)}
    )
    await answer_code(h, ALICE, wrong, 1)
    await h.wait_for(lambda: _text_in(h, ALICE, "Wrong code (4 tries left)"))
    await answer_code(h, ALICE, code_at(secret, int(time.time()) // 30), 2)

    async def approved() -> bool:
        _, got = await h.api("GET", f"/api/v1/approvals/{req['id']}")
        return bool(got["status"] == "approved")

    await h.wait_for(approved)

    second = await create(h, risk_level="critical", target="prod/other")
    await tap(h, await card(h, second["id"]), ALICE)
    for asked in range(3, 8):
        await answer_code(h, ALICE, wrong, asked)
    await h.wait_for(lambda: _text_in(h, ALICE, "locked for 15 minutes"))
    third = await create(h, risk_level="critical", target="prod/third")
    locked = await tap(h, await card(h, third["id"]), ALICE)
    assert "locked" in locked["text"], locked
    events = await audit_events(h)
    assert events.count("step_up.failed") == 5 and events.count("step_up.locked") == 1
