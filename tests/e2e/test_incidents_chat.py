"""Incidents in the team chat through the emulator: /incident, the pinned card and its buttons,
notes (button, reply, /note), /timeline, /incidents, unpinned when closed."""

from __future__ import annotations

import re
from typing import Any

from tests.e2e.flows import sql, tap
from tests.support import ALICE, BOB, CAROL, CHAT, Harness, wait_until

ID = re.compile(r"INC-\d{8}-[A-Z0-9]{6}")


async def incident_card(h: Harness, predicate: Any = lambda m: True) -> dict[str, Any]:
    """The incident card in CHAT once it satisfies `predicate`."""

    async def find() -> dict[str, Any] | None:
        for m in await h.bot_messages():
            if str(m["text"]).startswith("🚨 INC-") and predicate(m):
                return m
        return None

    found: dict[str, Any] = await wait_until(find, 10, what="an incident card")
    return found


async def bot_reply(h: Harness, needle: str) -> dict[str, Any]:
    async def find() -> dict[str, Any] | None:
        return next((m for m in await h.bot_messages() if needle in str(m["text"])), None)

    found: dict[str, Any] = await wait_until(find, 10, what=f"a bot message with {needle!r}")
    return found


async def pinned(h: Harness, expected: list[int]) -> None:
    async def check() -> bool:
        return list((await h.emu.chat(CHAT))["pinned"]) == expected

    await wait_until(check, 10, what=f"pinned messages {expected}")


async def test_an_incident_run_from_the_chat(quorum: Harness) -> None:
    h = quorum
    await h.emu.promote(CHAT, by_user_id=ALICE)
    await h.emu.send_text(CHAT, CAROL, "/incident P1 Payments down")
    refused = await bot_reply(h, "Only approvers of team platform")
    assert "Declared" not in refused["text"]
    await h.emu.send_text(CHAT, ALICE, "/incident P1 Payments <b>down</b>")
    declared = await bot_reply(h, "🚨 Declared")
    inc = ID.search(declared["text"]).group(0)  # type: ignore[union-attr]
    card = await incident_card(h)
    assert card["text"].startswith(f"🚨 {inc} · 🟧 P1")
    assert "Payments <b>down</b>" in card["text"]  # escaped, shown as typed
    await pinned(h, [card["message_id"]])

    answer = await tap(h, card, CAROL, "⏩ Mitigating")
    assert "Only approvers" in answer["text"] and answer["show_alert"]
    assert (await tap(h, card, BOB, "🙋 Take command"))["text"] == "🙋 You are in command."
    assert "P0" in (await tap(h, card, ALICE, "⬆️ Severity"))["text"]
    assert "P1" in (await tap(h, card, ALICE, "⬇️ Severity"))["text"]
    assert "mitigating" in (await tap(h, card, ALICE, "⏩ Mitigating"))["text"]
    card = await incident_card(h, lambda m: "🛠 Mitigating · commander: bob" in m["text"])

    await tap(h, card, ALICE, "📝 Note")
    question = await bot_reply(h, f"📝 Note for {inc}")
    assert question["reply_markup"]["force_reply"] is True
    await h.emu.reply(CHAT, question["message_id"], ALICE, "rolled back to v41")
    await bot_reply(h, f"📝 Noted on {inc}")
    await h.emu.reply(CHAT, card["message_id"], BOB, "db failover done")
    await h.emu.send_text(CHAT, BOB, "/note checkout recovered")
    await wait_until(lambda: notes(h, inc, 3), 10, what="three notes")

    await h.emu.send_text(CHAT, ALICE, "/timeline")
    timeline = await bot_reply(h, f"🧾 {inc}")
    for line in ("rolled back to v41", "bob took command", "severity P1 → P0 by alice"):
        assert line in timeline["text"], timeline["text"]
    await h.emu.send_text(CHAT, ALICE, "/incidents")
    listing = await bot_reply(h, "1 open")
    assert inc in listing["text"] and "bob" in listing["text"]

    assert "resolved" in (await tap(h, card, ALICE, "✅ Resolved"))["text"]
    card = await incident_card(h, lambda m: "Close" in str(m["reply_markup"]))
    await pinned(h, [card["message_id"]])  # resolved: still pinned until closed
    assert "closed" in (await tap(h, card, BOB, "🔒 Close"))["text"]
    await pinned(h, [])
    card = await incident_card(h, lambda m: "🔒 Closed" in m["text"])
    assert not (card.get("reply_markup") or {}).get("inline_keyboard")

    status, data = await h.api("GET", f"/api/v1/incidents/{inc}/timeline")
    assert status == 200
    assert [e["kind"] for e in data["events"]] == [
        "incident.declared",
        "incident.commander",
        "incident.severity",
        "incident.severity",
        "incident.status",
        "note",
        "note",
        "note",
        "incident.status",
        "incident.status",
    ]
    events = await sql(h, "SELECT event FROM audit_log WHERE event LIKE 'incident.%' ORDER BY id")
    assert [r["event"] for r in events].count("incident.refused") == 2


async def notes(h: Harness, inc: str, n: int) -> bool:
    rows = await sql(
        h, "SELECT text FROM timeline_events WHERE kind = 'note' AND incident_id = $1", inc
    )
    return len(rows) >= n


async def test_a_card_cannot_be_pinned_without_the_right(quorum: Harness) -> None:
    h = quorum
    await h.emu.send_text(CHAT, ALICE, "/incident P2 Search slow")
    card = await incident_card(h)

    # The bot is a plain member: the pin is tried once, refused, and the card works anyway.
    async def refused_pin() -> bool:
        return any(c["method"] == "pinChatMessage" for c in await h.emu.calls())

    await wait_until(refused_pin, 10, what="a pinChatMessage call")
    assert (await h.emu.chat(CHAT))["pinned"] == []
    assert "mitigating" in (await tap(h, card, ALICE, "⏩ Mitigating"))["text"]
