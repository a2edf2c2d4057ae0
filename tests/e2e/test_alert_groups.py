"""Alert groups through the emulator (Telegram's limits on): one card per alertname, buttons
acting on every member, one Alertmanager silence on the group's labels."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tests.e2e.alertmanager import Alertmanager
from tests.support import (
    ALICE,
    AM_PATH,
    API_KEY,
    CAROL,
    CHAT,
    Harness,
    am_alert,
    am_body,
    cards,
    db_rows,
    free_port,
    policy_data,
    wait_text,
    wait_until,
)


def instance(n: int, name: str = "DiskFull", status: str = "firing") -> dict[str, Any]:
    labels = {"alertname": name, "severity": "warning", "instance": f"web-{n}:9100"}
    return am_alert(name, status=status, fingerprint=f"f{n:015d}", labels=labels)


async def fire_group(h: Harness, n: int) -> dict[str, Any]:
    for i in range(n):  # one POST each: the group gathers alerts arriving apart
        status, _ = await h.api("POST", AM_PATH, am_body(instance(i)))
        assert status == 200
    card: dict[str, Any] = await wait_text(h, f"{n} alerts")
    return card


async def test_group_card_gathers_instances_and_resolves(quorum: Harness) -> None:
    card = await fire_group(quorum, 3)
    for i in range(3):
        assert f"web-{i}:9100" in card["text"]
    assert 'alertname="DiskFull"' in card["text"]
    assert len(cards(await quorum.bot_messages())) == 1
    # An alert of another name is a group of its own: today's card.
    status, _ = await quorum.api("POST", AM_PATH, am_body(instance(9, "CpuHot")))
    assert status == 200
    own = await wait_text(quorum, "Fingerprint: f000000000000009")
    assert "CpuHot" in own["text"]

    status, _ = await quorum.api(
        "POST", AM_PATH, am_body(*(instance(i, status="resolved") for i in range(3)))
    )
    assert status == 200
    resolved = await wait_text(quorum, "RESOLVED")
    assert resolved["message_id"] == card["message_id"]
    assert not resolved.get("reply_markup")
    assert len(cards(await quorum.bot_messages())) == 2
    hits = await db_rows(quorum, "SELECT sum(hit_count) AS n FROM alerts")
    assert hits[0]["n"] == 4


async def test_group_of_none_keeps_one_card_per_fingerprint(make_quorum: Any) -> None:
    policy = policy_data()
    policy["teams"]["platform"]["alert_group_by"] = []
    h: Harness = await make_quorum(policy)
    for i in range(2):
        status, _ = await h.api("POST", AM_PATH, am_body(instance(i)))
        assert status == 200

    async def two() -> bool:
        return len(cards(await h.bot_messages())) == 2

    await h.wait_for(two)


async def test_group_buttons_act_on_every_member(quorum: Harness) -> None:
    card = await fire_group(quorum, 3)
    tap = await quorum.emu.tap(
        CHAT, card["message_id"], ALICE, button_text="👀 Acknowledge", wait=5
    )
    assert tap["answer"] and "Acknowledged 3 alerts" in tap["answer"]["text"]
    acks = await db_rows(quorum, "SELECT DISTINCT alert_id FROM alert_acknowledgements")
    assert len(acks) == 3
    await wait_text(quorum, "Acknowledged by alice")

    tap = await quorum.emu.tap(CHAT, card["message_id"], ALICE, button_text="✅ Resolve", wait=5)
    assert tap["answer"] and "Resolved 3 alerts" in tap["answer"]["text"]
    rows = await db_rows(quorum, "SELECT status, resolved_by FROM alerts")
    assert [(r["status"], r["resolved_by"]) for r in rows] == [("resolved", "alice")] * 3
    await wait_text(quorum, "RESOLVED")


async def test_group_silence_is_one_alertmanager_silence(
    make_quorum: Any, alertmanagers: Callable[[int], Alertmanager]
) -> None:
    am = alertmanagers(free_port())
    policy = policy_data()
    policy["teams"]["platform"]["alertmanager_url"] = am.url
    h: Harness = await make_quorum(policy)
    await am.start(h.url + AM_PATH, API_KEY)
    card = await fire_group(h, 3)
    tap = await h.emu.tap(CHAT, card["message_id"], ALICE, button_text="🔕 1h", wait=5)
    assert tap["answer"] and 'alertname="DiskFull"' in tap["answer"]["text"]

    async def am_silences() -> Any:
        silences = await am.request("GET", "/api/v2/silences")
        return [s for s in silences if s["status"]["state"] == "active"] or None

    (silence,) = await h.wait_for(am_silences, timeout=10)
    assert {m["name"]: m["value"] for m in silence["matchers"]} == {"alertname": "DiskFull"}
    rows = await db_rows(h, "SELECT silenced FROM alerts")
    assert [r["silenced"] for r in rows] == [True] * 3
    await wait_text(h, silence["id"])  # the group card names the Alertmanager silence
    # Still exactly one silence there once Quorum's sync has settled.
    assert len(await am_silences() or []) == 1


async def test_details_sends_the_whole_group_privately(quorum: Harness) -> None:
    h = quorum
    body = am_body(*(instance(i) for i in range(12)), instance(99, "CpuHot"))
    assert (await h.api("POST", AM_PATH, body))[0] == 200
    card = await wait_text(h, "12 alerts")
    assert "+2 more" in card["text"]
    # A group of one is today's card: no Details button.
    own = await wait_text(h, "Fingerprint: f000000000000099")
    own_buttons = [b["text"] for row in own["reply_markup"]["inline_keyboard"] for b in row]
    assert "📋 Details" not in own_buttons

    async def details(user: int) -> str:
        tap = await h.emu.tap(CHAT, card["message_id"], user, button_text="📋 Details", wait=5)
        answer = tap["answer"]
        assert answer is not None
        return str(answer["text"])

    assert "not a member" in (await details(CAROL)).lower()
    # Telegram lets the bot write only once Alice has opened the private chat.
    assert "press Start" in await details(ALICE)
    await h.emu.start_bot(ALICE)

    async def opened() -> bool:
        rows = await db_rows(h, f"SELECT state FROM private_chats WHERE telegram_id = {ALICE}")
        return [r["state"] for r in rows] == ["open"]

    await h.wait_for(opened)
    assert "private chat" in await details(ALICE)

    async def full_list() -> dict[str, Any] | None:
        found = [m for m in await h.bot_messages(ALICE) if "📋" in str(m["text"])]
        return found[0] if found else None

    listing = await wait_until(full_list, 10, what="the full list in Alice's private chat")
    assert all(f"web-{i}:9100" in listing["text"] for i in range(12))
    assert "CpuHot" not in listing["text"]
    sent = await db_rows(
        h, "SELECT count(*) AS n FROM audit_log WHERE event = 'alert.details_sent'"
    )
    assert sent[0]["n"] == 1
