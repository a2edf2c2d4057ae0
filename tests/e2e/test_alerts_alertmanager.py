"""End to end with a real Prometheus Alertmanager (Debian's prometheus-alertmanager)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from tests.e2e.alertmanager import Alertmanager
from tests.support import (
    ALICE,
    AM_PATH,
    API_KEY,
    BOB,
    CHAT,
    Harness,
    am_alert,
    am_body,
    cards,
    db_rows,
    free_port,
    policy_data,
    wait_cards,
    wait_text,
)

LABELS = {"alertname": "DiskFull", "severity": "critical", "instance": "db-1:9100"}


async def test_real_alertmanager_fires_and_resolves(
    quorum: Harness, alertmanagers: Callable[[int], Alertmanager]
) -> None:
    am = alertmanagers(free_port())
    await am.start(quorum.url + "/api/v1/alerts/alertmanager", API_KEY)
    await am.post_alert(LABELS)
    (card,) = await wait_cards(quorum, 1, timeout=20)
    text = str(card["text"])
    assert "FIRING" in text and "DiskFull" in text and "<b>95%</b> used & rising" in text
    await am.post_alert(LABELS, resolved=True)
    card = await wait_text(quorum, "RESOLVED", timeout=20)
    assert not (card.get("reply_markup") or {}).get("inline_keyboard")
    assert len(cards(await quorum.bot_messages())) == 1


async def test_two_alertmanager_replicas_make_one_card(
    quorum: Harness, alertmanagers: Callable[[int], Alertmanager]
) -> None:
    first, second = alertmanagers(free_port()), alertmanagers(free_port())
    await asyncio.gather(
        first.start(quorum.url + "/api/v1/alerts/alertmanager", API_KEY),
        second.start(quorum.url + "/api/v1/alerts/alertmanager", API_KEY),
    )
    await asyncio.gather(first.post_alert(LABELS), second.post_alert(LABELS))

    async def both_delivered() -> bool:
        rows = await db_rows(quorum, "SELECT hit_count FROM alerts WHERE status = 'firing'")
        return bool(rows) and rows[0]["hit_count"] >= 2

    await quorum.wait_for(both_delivered, timeout=20)
    await wait_cards(quorum, 1)
    assert len(cards(await quorum.bot_messages())) == 1
    rows = await db_rows(quorum, "SELECT count(*) AS n FROM alerts")
    assert rows[0]["n"] == 1


async def test_silence_button_creates_and_unsilence_expires_in_alertmanager(
    make_quorum: Any, alertmanagers: Callable[[int], Alertmanager]
) -> None:
    am = alertmanagers(free_port())
    policy = policy_data()
    policy["teams"]["platform"]["alertmanager_url"] = am.url
    h: Harness = await make_quorum(policy)
    await am.start(h.url + "/api/v1/alerts/alertmanager", API_KEY)
    await am.post_alert(LABELS)
    (card,) = await wait_cards(h, 1, timeout=20)
    tap = await h.emu.tap(CHAT, card["message_id"], ALICE, button_text="🔕 1h", wait=5)
    assert tap["answer"] and "Alertmanager" in tap["answer"]["text"]

    async def am_silence() -> Any:
        silences = await am.request("GET", "/api/v2/silences")
        active = [s for s in silences if s["status"]["state"] == "active"]
        return active[0] if active else None

    silence = await h.wait_for(am_silence, timeout=10)
    matchers = {m["name"]: m["value"] for m in silence["matchers"]}
    assert matchers == LABELS
    assert "alice" in silence["createdBy"]

    async def stored() -> Any:
        rows = await db_rows(h, "SELECT id, alertmanager_silence_id FROM silences")
        return rows if rows and rows[0]["alertmanager_silence_id"] else None

    (row,) = await h.wait_for(stored)
    assert row["alertmanager_silence_id"] == silence["id"]
    await wait_text(h, silence["id"])  # the card names the Alertmanager silence

    await h.emu.send_text(CHAT, BOB, f"/unsilence {silence['id']}")

    async def expired() -> bool:
        silences = await am.request("GET", "/api/v2/silences")
        return all(s["status"]["state"] == "expired" for s in silences)

    await h.wait_for(expired, timeout=10)

    async def audited() -> bool:
        rows = await db_rows(h, "SELECT event FROM audit_log ORDER BY id")
        events = {r["event"] for r in rows}
        return {"alertmanager_silence_created", "alertmanager_silence_expired"} <= events

    await h.wait_for(audited)


async def test_alertmanager_unreachable_is_reported(make_quorum: Any) -> None:
    policy = policy_data()
    policy["teams"]["platform"]["alertmanager_url"] = f"http://127.0.0.1:{free_port()}"
    h: Harness = await make_quorum(policy)
    await h.api("POST", AM_PATH, am_body(am_alert()))
    (card,) = await wait_cards(h, 1)
    tap = await h.emu.tap(CHAT, card["message_id"], ALICE, button_text="🔕 1h", wait=5)
    assert tap["answer"] and "Silenced for 1h" in tap["answer"]["text"]

    async def reported() -> Any:
        msgs = await h.bot_messages()
        return [m for m in msgs if "Could not create the Alertmanager silence" in str(m["text"])]

    await h.wait_for(reported)
    rows = await db_rows(h, "SELECT am_status FROM silences")
    assert [r["am_status"] for r in rows] == ["failed"]
    events = [r["event"] for r in await db_rows(h, "SELECT event FROM audit_log")]
    assert "alertmanager_silence_failed" in events
    status = await db_rows(h, "SELECT silenced FROM alerts")
    assert [r["silenced"] for r in status] == [True]  # the local silence still applies
