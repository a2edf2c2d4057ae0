"""Cards at 3 a.m., end to end through the emulator: /status by id prefix, who cancelled."""

from __future__ import annotations

import uuid
from typing import Any

from tests.support import ALICE, API_KEY, CAROL, CHAT, OTHER_API_KEY, Harness
from tests.support import db_rows as sql


async def create(h: Harness, key: str | None = None, **over: Any) -> dict[str, Any]:
    body = {
        "action": "restart deployment",
        "target": "prod/api",
        "risk_level": "high",
        "requested_by": "deploy-bot",
        **over,
    }
    status, data = await h.api("POST", "/api/v1/approvals", body, key=key or API_KEY)
    assert status == 201, data
    created: dict[str, Any] = data
    return created


async def bot_text(h: Harness, needle: str) -> dict[str, Any]:
    async def find() -> dict[str, Any] | None:
        return next((m for m in await h.bot_messages(CHAT) if needle in str(m["text"])), None)

    found: dict[str, Any] = await h.wait_for(find)
    return found


async def ask_status(h: Harness, arg: str, needle: str) -> dict[str, Any]:
    """The bot's answer to `/status arg`: a message sent after it that contains `needle`."""
    before = {m["message_id"] for m in await h.bot_messages(CHAT)}
    await h.emu.send_text(CHAT, CAROL, f"/status {arg}")

    async def find() -> dict[str, Any] | None:
        new = [m for m in await h.bot_messages(CHAT) if m["message_id"] not in before]
        return next((m for m in new if needle in str(m["text"])), None)

    found: dict[str, Any] = await h.wait_for(find)
    return found


def code_entities(msg: dict[str, Any]) -> list[str]:
    """The texts a message shows as code (entity offsets count UTF-16 units)."""
    units = str(msg["text"]).encode("utf-16-le")
    return [
        units[2 * e["offset"] : 2 * (e["offset"] + e["length"])].decode("utf-16-le")
        for e in msg.get("entities") or []
        if e["type"] == "code"
    ]


async def test_status_by_id_prefix(quorum: Harness) -> None:
    req = await create(quorum, metadata={"ticket": "OPS-1234"})
    rid = req["id"]
    card = await bot_text(quorum, rid)
    # The id on the card is code (tap to copy), and so is it in the /status answer.
    assert rid in code_entities(card)
    assert "ticket: OPS-1234" in card["text"] and "Waiting for: alice, bob, dave" in card["text"]

    answer = await ask_status(quorum, rid[:8], "Status: pending")
    assert "restart deployment" in answer["text"] and rid in code_entities(answer)
    # Copied from the card with its dash, in capitals: the same request.
    again = await ask_status(quorum, rid[:13].upper(), "Requested by deploy-bot")
    assert rid in code_entities(again)

    await ask_status(quorum, "0123", "Usage: /status")
    unknown = "ffffffff" if not rid.startswith("ffffffff") else "00000000"
    await ask_status(quorum, unknown, f"No request {unknown} in team platform.")

    # Another team's request is not found from this chat, even by its exact prefix.
    theirs = await create(quorum, key=OTHER_API_KEY, risk_level="low")  # team data has one approver
    await ask_status(quorum, theirs["id"][:8], f"No request {theirs['id'][:8]} in team")

    # A second request sharing the first 8 digits makes that prefix ambiguous.
    twin = uuid.UUID(rid[:8] + ("0" * 24 if rid[8:] != "0" * 24 else "1" * 24))
    await sql(
        quorum,
        """INSERT INTO approval_requests (id, team_id, action, target, risk_level,
               approval_level, required_approvals, reject_threshold, requested_by, expires_at)
           SELECT $1::uuid, team_id, 'twin', target, risk_level, approval_level,
                  required_approvals, reject_threshold, requested_by, expires_at
             FROM approval_requests WHERE id = $2::uuid""",
        str(twin),
        rid,
    )
    await ask_status(quorum, rid[:8], f"{rid[:8]} is ambiguous")
    answer = await ask_status(quorum, rid, "Status: pending")  # the whole id still answers
    assert f"id {rid}" in answer["text"]


async def test_cancel_names_the_api_key_on_the_card_and_in_the_audit(quorum: Harness) -> None:
    req = await create(quorum)
    await bot_text(quorum, req["id"])
    status, body = await quorum.api("POST", f"/api/v1/approvals/{req['id']}/cancel")
    assert status == 200 and body["status"] == "cancelled"
    card = await bot_text(quorum, "CANCELLED by ci (API key)")
    assert req["id"] in card["text"] and "by the requester" not in card["text"]
    assert "Waiting for" not in card["text"] and not card.get("reply_markup")
    rows = await sql(
        quorum,
        "SELECT actor FROM audit_log WHERE approval_id = $1::uuid AND event = $2",
        req["id"],
        "approval.cancelled",
    )
    assert [r["actor"] for r in rows] == ["api:ci"]


async def test_requester_refusal_is_neutral(quorum: Harness) -> None:
    req = await create(quorum, requested_by_telegram_id=ALICE)
    card = await bot_text(quorum, req["id"])
    assert "Waiting for: bob, dave" in card["text"]  # the requester is not waited for
    res = await quorum.emu.tap(CHAT, card["message_id"], ALICE, button_text="✅ Approve", wait=5)
    answer = res.get("answer")
    assert answer is not None, res
    assert answer["text"] == "Requesters cannot vote on their own request."
