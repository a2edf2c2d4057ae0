"""Voting from a private chat end to end: /pending there lists the requests waiting for this
person's vote as cards with buttons bound to that chat; a vote there counts like one on the
group card and every card of the request follows."""

from __future__ import annotations

from tests.e2e.flows import APPROVE, REJECT, card, card_where, create, sql, tap
from tests.support import ALICE, BOB, CAROL, CHAT, Harness


async def reply_to(h: Harness, chat: int, message_id: int) -> str:
    async def find() -> str | None:
        for m in await h.bot_messages(chat):
            if m["reply_to_message_id"] == message_id:
                return str(m["text"])
        return None

    found: str = await h.wait_for(find)
    return found


async def test_pending_in_private_lists_cards_to_vote_on_there(quorum: Harness) -> None:
    high = await create(quorum, risk_level="high")
    low = await create(quorum, action="flush cache")
    mine = await create(quorum, action="bob's own", requested_by="bob")
    group_high = await card(quorum, high["id"])
    assert "1/2" in (await tap(quorum, group_high, ALICE))["text"]

    sent = await quorum.emu.send_text(BOB, BOB, "/pending")
    text = await reply_to(quorum, BOB, sent["message_id"])
    assert text.startswith("Waiting for your vote (platform): 2")
    private_high = await card(quorum, high["id"], chat=BOB)
    private_low = await card(quorum, low["id"], chat=BOB)
    assert "Approvals: 1/2" in private_high["text"]
    assert not any(mine["id"] in str(m["text"]) for m in await quorum.bot_messages(BOB))
    rows = private_high["reply_markup"]["inline_keyboard"]
    group_data = group_high["reply_markup"]["inline_keyboard"][0][0]["callback_data"]
    assert rows[0][0]["callback_data"] != group_data  # bound to the private chat

    answer = await tap(quorum, private_high, BOB, APPROVE, chat=BOB)
    assert "Approved" in answer["text"]
    await card_where(quorum, high["id"], lambda m: "APPROVED" in m["text"])
    done = await card_where(quorum, high["id"], lambda m: "APPROVED" in m["text"], chat=BOB)
    assert not done.get("reply_markup")
    [vote] = await sql(
        quorum,
        "SELECT chat_id FROM audit_log WHERE event = 'vote.accepted' "
        "AND approval_id = $1::uuid AND actor_telegram_id = $2",
        high["id"],
        BOB,
    )
    assert vote["chat_id"] == BOB
    assert "Rejected" in (await tap(quorum, private_low, BOB, REJECT, chat=BOB))["text"]
    await card_where(quorum, low["id"], lambda m: "REJECTED" in m["text"])
    # The reason is asked where the rejection was made.
    await card_where(quorum, low["id"], lambda m: "REJECTED" in m["text"], chat=BOB)

    again = await quorum.emu.send_text(BOB, BOB, "/pending")
    assert await reply_to(quorum, BOB, again["message_id"]) == "Nothing waits for your vote. 🎉"


async def test_pending_in_private_for_someone_who_approves_nothing(quorum: Harness) -> None:
    sent = await quorum.emu.send_text(CAROL, CAROL, "/pending")
    text = await reply_to(quorum, CAROL, sent["message_id"])
    assert text == "You are not an approver of any team, so nothing waits for your vote."
    # The group's /pending is unchanged.
    group = await quorum.emu.send_text(CHAT, ALICE, "/pending")
    assert await reply_to(quorum, CHAT, group["message_id"]) == (
        "No open requests for team platform."
    )
