"""Alert card buttons and alert commands, tapped through the emulator."""

from __future__ import annotations

from typing import Any

from bot.alerts import linked_alert_line
from bot.buttons import AlertAction
from tests.support import (
    ALICE,
    AM_PATH,
    BOB,
    CAROL,
    CHAT,
    Harness,
    am_alert,
    am_body,
    db_rows,
    wait_cards,
    wait_text,
)


async def fire(h: Harness) -> dict[str, Any]:
    status, _ = await h.api("POST", AM_PATH, am_body(am_alert()))
    assert status == 200
    (card,) = await wait_cards(h, 1)
    return card


async def events(h: Harness, name: str) -> list[Any]:
    return await db_rows(h, "SELECT * FROM audit_log WHERE event = $1 ORDER BY id", name)


async def test_acknowledge_shows_who_and_once(quorum: Harness) -> None:
    card = await fire(quorum)
    tap = await quorum.emu.tap(
        CHAT, card["message_id"], ALICE, button_text="👀 Acknowledge", wait=5
    )
    assert tap["answer"] and "Acknowledged" in tap["answer"]["text"]
    await wait_text(quorum, "Acknowledged by alice")
    tap = await quorum.emu.tap(
        CHAT, card["message_id"], ALICE, button_text="👀 Acknowledge", wait=5
    )
    assert tap["answer"] and "already" in tap["answer"]["text"]
    assert len(await events(quorum, "alert.acknowledged")) == 1


async def test_non_member_is_refused_and_audited(quorum: Harness) -> None:
    card = await fire(quorum)
    for button in ("👀 Acknowledge", "🔕 1h", "✅ Resolve"):
        tap = await quorum.emu.tap(CHAT, card["message_id"], CAROL, button_text=button, wait=5)
        assert tap["answer"] and "not a member of team platform" in tap["answer"]["text"]
    assert len(await events(quorum, "alert.button_refused")) == 3
    assert await db_rows(quorum, "SELECT 1 FROM alert_acknowledgements") == []
    assert await db_rows(quorum, "SELECT 1 FROM silences") == []
    rows = await db_rows(quorum, "SELECT status FROM alerts")
    assert [r["status"] for r in rows] == ["firing"]


async def test_forged_button_is_refused(quorum: Harness) -> None:
    card = await fire(quorum)
    alert_id = (await db_rows(quorum, "SELECT id FROM alerts"))[0]["id"]
    forged = AlertAction(ref=str(alert_id), act="res", tag="A" * 16).pack()
    update = {
        "callback_query": {
            "id": "777001",
            "from": {"id": ALICE, "is_bot": False, "first_name": "Alice"},
            "message": {
                "message_id": card["message_id"],
                "date": card["date"],
                "chat": {"id": CHAT, "type": "supergroup", "title": "platform"},
                "from": {"id": 123456789, "is_bot": True, "first_name": "Quorum"},
                "text": "card",
            },
            "chat_instance": "1",
            "data": forged,
        }
    }
    await quorum.emu.inject_update(update)
    answer = await quorum.emu.callback_answer("777001", wait=5)
    assert "not valid" in str(answer)
    assert len(await events(quorum, "alert.button_forged")) == 1
    rows = await db_rows(quorum, "SELECT status FROM alerts")
    assert [r["status"] for r in rows] == ["firing"]


async def test_resolve_button_edits_card_and_removes_buttons(quorum: Harness) -> None:
    card = await fire(quorum)
    tap = await quorum.emu.tap(CHAT, card["message_id"], BOB, button_text="✅ Resolve", wait=5)
    assert tap["answer"] and "Resolved" in tap["answer"]["text"]
    card = await wait_text(quorum, "RESOLVED")
    assert "by bob" in str(card["text"])
    assert not (card.get("reply_markup") or {}).get("inline_keyboard")
    (row,) = await events(quorum, "alert.resolved")
    assert row["actor"] == "bob"


async def test_silence_commands_and_unsilence(quorum: Harness) -> None:
    card = await fire(quorum)
    tap = await quorum.emu.tap(CHAT, card["message_id"], ALICE, button_text="🔕 4h", wait=5)
    assert tap["answer"] and "Silenced for 4h" in tap["answer"]["text"]
    await wait_text(quorum, "Silenced until")
    silence_id = (await db_rows(quorum, "SELECT id FROM silences"))[0]["id"]

    async def reply(needle: str) -> Any:
        async def found() -> Any:
            msgs = await quorum.bot_messages()
            return [m for m in msgs if needle in str(m["text"])]

        return await quorum.wait_for(found)

    await quorum.emu.send_text(CHAT, CAROL, "/alerts")
    (listing,) = await reply("1 firing alert ")
    assert "DiskFull" in listing["text"] and "🔕" in listing["text"]
    await quorum.emu.send_text(CHAT, CAROL, "/silences")
    (listing,) = await reply("1 active silence ")
    assert "a1b2c3d4e5f60718" in listing["text"] and "alice" in listing["text"]
    await quorum.emu.send_text(CHAT, CAROL, f"/unsilence {silence_id}")
    await reply("not a member of team platform")
    await quorum.emu.send_text(CHAT, BOB, f"/unsilence {silence_id}")
    await reply(f"Silence {silence_id} removed by bob")
    assert len(await events(quorum, "alert.unsilenced")) == 1

    async def unsilenced() -> bool:
        msgs = await quorum.bot_messages()
        card_now = next(m for m in msgs if m["message_id"] == card["message_id"])
        return "Silenced until" not in str(card_now["text"])

    await quorum.wait_for(unsilenced)
    rows = await db_rows(quorum, "SELECT silenced FROM alerts")
    assert [r["silenced"] for r in rows] == [False]


async def test_linked_alert_line_names_the_firing_alert(quorum: Harness) -> None:
    await fire(quorum)
    rt = quorum.app.runtime
    async with rt.sessions() as session:
        team_id = rt.team_ids["platform"]
        line = await linked_alert_line(session, team_id, "a1b2c3d4e5f60718", None)
        assert line is not None and "DiskFull" in line and "a1b2c3d4e5f60718" in line
        assert await linked_alert_line(session, team_id, "nope", None) is None
