"""The expiry warning end to end: once per request the card says how long is left and one
reply mentions who has not voted; `escalate_to` also gets it (a person privately, a chat)."""

from __future__ import annotations

from typing import Any

from tests.e2e.flows import card, card_where, create, sql, tap
from tests.support import (
    ALICE,
    BOB,
    CAROL,
    CHAT,
    DAVE,
    OTHER_CHAT,
    Harness,
    QuorumFactory,
    policy_data,
)


async def message_with(h: Harness, chat: int, needle: str) -> dict[str, Any]:
    async def find() -> dict[str, Any] | None:
        for m in await h.bot_messages(chat):
            if needle in str(m["text"]):
                return m
        return None

    found: dict[str, Any] = await h.wait_for(find)
    return found


def mentioned(msg: dict[str, Any]) -> set[str]:
    return {e["url"] for e in msg["entities"] or [] if e["type"] == "text_link"}


async def test_one_warning_before_expiry_to_the_team_and_the_escalation_targets(
    make_quorum: QuorumFactory,
) -> None:
    data = policy_data()
    data["teams"]["platform"]["policy"] = {
        "high": {"warn_before_seconds": 300, "escalate_to": [CAROL, OTHER_CHAT]},
    }
    h = await make_quorum(policy=data)
    await h.emu.start_bot(CAROL)
    req = await create(h, risk_level="high", expires_in=900)
    msg = await card(h, req["id"])
    assert "1/2" in (await tap(h, msg, ALICE))["text"]
    # Nearly out of time (the database's clock decides).
    await sql(
        h,
        "UPDATE approval_requests SET expires_at = now() + interval '200 seconds' "
        "WHERE id = $1::uuid",
        req["id"],
    )
    warned = await card_where(h, req["id"], lambda m: "⏳ expires in" in m["text"])
    assert "⏳ expires in 4 min" in warned["text"]
    reply = await message_with(h, CHAT, "Expires in 4 min")
    assert reply["reply_to_message_id"] == msg["message_id"]
    assert mentioned(reply) == {f"tg://user?id={BOB}", f"tg://user?id={DAVE}"}
    assert "1/2 approvals" in reply["text"]
    private = await message_with(h, CAROL, "Expires in 4 min")
    assert mentioned(private) == mentioned(reply)
    await message_with(h, OTHER_CHAT, "Expires in 4 min")
    rows = await sql(
        h,
        "SELECT detail FROM audit_log WHERE event = 'approval.warned' AND approval_id = $1::uuid",
        req["id"],
    )
    assert len(rows) == 1
    [warned_at] = await sql(
        h, "SELECT warned_at FROM approval_requests WHERE id = $1::uuid", req["id"]
    )
    assert warned_at["warned_at"] is not None
    # A decision removes the countdown from the card.
    assert "Approved" in (await tap(h, msg, BOB))["text"]
    final = await card_where(h, req["id"], lambda m: "APPROVED" in m["text"])
    assert "⏳" not in final["text"]


async def test_the_default_window_is_a_fifth_of_a_short_lifetime(quorum: Harness) -> None:
    req = await create(quorum, expires_in=600)
    await card(quorum, req["id"])
    # Lifetime 600 s: the window is 120 s (a fifth, shorter than ten minutes); 100 s are left.
    await sql(
        quorum,
        "UPDATE approval_requests SET created_at = now() - interval '500 seconds', "
        "expires_at = now() + interval '100 seconds' WHERE id = $1::uuid",
        req["id"],
    )
    await card_where(quorum, req["id"], lambda m: "⏳ expires in 2 min" in m["text"])
    reply = await message_with(quorum, CHAT, "Expires in 2 min")
    assert mentioned(reply) == {f"tg://user?id={u}" for u in (ALICE, BOB, DAVE)}
