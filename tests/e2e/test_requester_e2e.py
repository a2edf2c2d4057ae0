"""The requester in the loop, end to end through the emulator: a private message on the
outcome (or Telegram's 403, recorded once and the card mentioning them instead), and the
🚫 Withdraw button only the requester may use."""

from __future__ import annotations

from typing import Any

from tests.e2e.flows import REJECT, audit_events_with, card, card_where, create, sql, tap
from tests.support import ALICE, BOB, CAROL, CHAT, Harness

WITHDRAW = "🚫 Withdraw"


async def private_texts(h: Harness, user: int) -> list[str]:
    return [str(m["text"]) for m in await h.bot_messages(user)]


async def test_the_requester_is_told_the_outcome_privately(quorum: Harness) -> None:
    await quorum.emu.start_bot(CAROL)
    req = await create(quorum, requested_by="carol", requested_by_telegram_id=CAROL)
    msg = await card(quorum, req["id"])
    assert "Approved" in (await tap(quorum, msg, BOB))["text"]

    async def told() -> list[str]:
        return [t for t in await private_texts(quorum, CAROL) if "Your request" in t]

    [text] = await quorum.wait_for(told)
    assert text.startswith("Your request restart deployment on prod/api ✅ was approved.")
    assert "Decided by bob." in text and req["id"] in text
    [dm] = [m for m in await quorum.emu.messages(CAROL) if m["text"] == text]
    links = [e["url"] for e in dm["entities"] or [] if e["type"] == "text_link"]
    assert links == [f"https://t.me/c/{str(CHAT)[4:]}/{msg['message_id']}"]
    final = await card_where(quorum, req["id"], lambda m: "APPROVED" in m["text"])
    assert "🔔" not in final["text"]


async def test_a_requester_who_never_opened_the_chat_is_mentioned_on_the_card(
    quorum: Harness,
) -> None:
    req = await create(quorum, requested_by="carol", requested_by_telegram_id=CAROL)
    msg = await card(quorum, req["id"])
    assert "Rejected" in (await tap(quorum, msg, BOB, REJECT))["text"]
    final = await card_where(quorum, req["id"], lambda m: "REJECTED" in m["text"])
    assert "🔔 carol: your request ❌ was rejected." in final["text"]
    mentions = [e.get("url") for e in final["entities"] or [] if e["type"] == "text_link"]
    assert f"tg://user?id={CAROL}" in mentions

    async def refused() -> Any:
        return await sql(
            quorum,
            "SELECT detail->>'reason' AS reason FROM audit_log WHERE event = 'private.refused' "
            "AND actor_telegram_id = $1",
            CAROL,
        )

    [row] = await quorum.wait_for(refused)
    assert row["reason"] == "not_started"
    calls = [
        c for c in await quorum.emu.calls("sendMessage") if int(c["params"]["chat_id"]) == CAROL
    ]
    assert len(calls) == 1  # recorded, not retried
    [state] = await sql(quorum, "SELECT state FROM private_chats WHERE telegram_id = $1", CAROL)
    assert state["state"] == "not_started"


async def test_only_the_requester_can_withdraw(quorum: Harness) -> None:
    req = await create(quorum, requested_by="carol", requested_by_telegram_id=CAROL)
    msg = await card(quorum, req["id"])
    rows = msg["reply_markup"]["inline_keyboard"]
    assert [b["text"] for b in rows[1]] == [WITHDRAW]
    assert len(rows[1][0]["callback_data"].encode()) <= 64
    refused = await tap(quorum, msg, ALICE, WITHDRAW)
    assert refused["text"] == "Only the requester can withdraw this request."
    assert refused["show_alert"] is True
    [entry] = await sql(
        quorum,
        "SELECT detail->>'reason' AS reason FROM audit_log "
        "WHERE event = 'vote.refused' AND actor_telegram_id = $1",
        ALICE,
    )
    assert entry["reason"] == "withdraw"
    done = await tap(quorum, msg, CAROL, WITHDRAW)
    assert "Withdrawn" in done["text"]
    _status, got = await quorum.api("GET", f"/api/v1/approvals/{req['id']}")
    assert got["status"] == "cancelled"
    await quorum.wait_for(lambda: audit_events_with(quorum, req["id"], "approval.cancelled"))
    [cancel] = await sql(
        quorum,
        "SELECT actor, actor_telegram_id FROM audit_log "
        "WHERE event = 'approval.cancelled' AND approval_id = $1::uuid",
        req["id"],
    )
    assert (cancel["actor"], cancel["actor_telegram_id"]) == ("carol", CAROL)
    final = await card_where(quorum, req["id"], lambda m: "CANCELLED" in m["text"])
    assert "CANCELLED by the requester" in final["text"]
    assert not final.get("reply_markup")


async def test_no_withdraw_button_without_a_known_requester(quorum: Harness) -> None:
    anonymous = await create(quorum, requested_by="ci")
    rows = (await card(quorum, anonymous["id"]))["reply_markup"]["inline_keyboard"]
    assert len(rows) == 1
    # A requester named like an approver is known by that approver's id.
    named = await create(quorum, requested_by="bob", action="other")
    msg = await card(quorum, named["id"])
    assert [b["text"] for b in msg["reply_markup"]["inline_keyboard"][1]] == [WITHDRAW]
    assert "Withdrawn" in (await tap(quorum, msg, BOB, WITHDRAW))["text"]
