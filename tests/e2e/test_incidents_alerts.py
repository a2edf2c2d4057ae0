"""Alerts and incidents: automatic attachment by grouping labels, coalesced repeats, resolves,
the alert card's Declare incident button."""

from __future__ import annotations

from typing import Any

from tests.e2e.flows import sql, tap
from tests.support import (
    ALICE,
    AM_PATH,
    CAROL,
    OTHER_API_KEY,
    Harness,
    am_alert,
    am_body,
    wait_cards,
    wait_until,
)

BASE = "/api/v1/incidents"


def alert(name: str, service: str, fingerprint: str, status: str = "firing") -> dict[str, Any]:
    labels = {"alertname": name, "service": service, "severity": "critical"}
    return am_alert(name, labels=labels, fingerprint=fingerprint, status=status)


async def timeline(h: Harness, inc: str) -> list[tuple[str, str, int]]:
    status, data = await h.api("GET", f"{BASE}/{inc}/timeline")
    assert status == 200, data
    return [(e["kind"], e["text"], e["count"]) for e in data["events"]]


async def test_matching_alerts_attach_and_repeats_coalesce(quorum: Harness) -> None:
    h = quorum
    status, inc = await h.api(
        "POST", BASE, {"title": "Pay", "severity": "P1", "services": ["payments"]}
    )
    assert status == 201, inc
    ident = inc["id"]
    body = am_body(
        alert("HighErrorRate", "payments", "f00000000000000a"),
        alert("DiskFull", "search", "f00000000000000b"),
    )
    assert (await h.api("POST", AM_PATH, body))[0] == 200
    for _ in range(3):
        one = am_body(alert("HighErrorRate", "payments", "f00000000000000a"))
        assert (await h.api("POST", AM_PATH, one))[0] == 200
    # Another team's alert with the same labels stays out of this team's incident.
    other = am_body(alert("HighErrorRate", "payments", "f00000000000000c"))
    assert (await h.api("POST", AM_PATH, other, key=OTHER_API_KEY))[0] == 200
    await wait_cards(h, 2)  # attached or not, each alert keeps its card
    assert await timeline(h, ident) == [
        ("incident.declared", "P1 declared by api:ci: Pay", 1),
        ("alert.attached", "alert HighErrorRate attached", 4),  # its repeats coalesced
    ]
    done = am_body(alert("HighErrorRate", "payments", "f00000000000000a", status="resolved"))
    assert (await h.api("POST", AM_PATH, done))[0] == 200
    assert (await timeline(h, ident))[-1] == ("alert.resolved", "alert HighErrorRate resolved", 1)
    status, got = await h.api("GET", f"{BASE}/{ident}")
    assert got["alerts"]["firing"] == 0 and got["alerts"]["resolved"] == 1
    assert len(got["alerts"]["ids"]) == 1
    rows = await sql(h, "SELECT count(*) AS n FROM alerts WHERE incident_id IS NOT NULL")
    assert rows[0]["n"] == 1


async def test_a_closed_incident_attaches_nothing(quorum: Harness) -> None:
    h = quorum
    _, inc = await h.api("POST", BASE, {"title": "Pay", "severity": "P2", "services": ["payments"]})
    for step in ("resolved", "closed"):
        assert (await h.api("POST", f"{BASE}/{inc['id']}/status", {"status": step}))[0] == 200
    body = am_body(alert("HighErrorRate", "payments", "f00000000000000d"))
    assert (await h.api("POST", AM_PATH, body))[0] == 200
    await wait_cards(h, 1)
    assert [k for k, _, _ in await timeline(h, inc["id"])] == ["incident.declared"] + [
        "incident.status"
    ] * 2


async def test_declare_incident_from_an_alert_card(quorum: Harness) -> None:
    h = quorum
    body = am_body(alert("HighErrorRate", "payments", "f00000000000000e"))
    assert (await h.api("POST", AM_PATH, body))[0] == 200
    (card,) = await wait_cards(h, 1)
    answer = await tap(h, card, CAROL, "🚨 Declare incident")
    assert "Only approvers" in answer["text"]
    answer = await tap(h, card, ALICE, "🚨 Declare incident")
    assert answer["text"].startswith("🚨 Declared INC-") and "(P1)" in answer["text"], answer
    ident = answer["text"].split()[2]
    status, got = await h.api("GET", f"{BASE}/{ident}")
    assert status == 200 and got["title"] == "HighErrorRate" and got["severity"] == "P1"
    assert got["alerts"]["firing"] == 1 and got["group_labels"] == {"service": ["payments"]}
    assert got["declared_by"] == "alice"
    again = await tap(h, card, ALICE, "🚨 Declare incident")
    assert again["text"] == f"This alert is already part of {ident}." and again["show_alert"]
    # A later alert of the same service joins the incident by its labels.
    more = am_body(alert("LatencyHigh", "payments", "f00000000000000f"))
    assert (await h.api("POST", AM_PATH, more))[0] == 200
    kinds = [k for k, _, _ in await timeline(h, ident)]
    assert kinds == ["incident.declared", "alert.attached", "alert.attached"]
    refused = await sql(h, "SELECT count(*) AS n FROM audit_log WHERE event = 'incident.refused'")
    assert refused[0]["n"] == 1

    async def declare_button_gone() -> bool:
        # The alert card shows no Declare button once its alert is in an incident.
        msgs = [m for m in await h.bot_messages() if m["message_id"] == card["message_id"]]
        return "Declare incident" not in str(msgs[0]["reply_markup"])

    await wait_until(declare_button_gone, 10, what="the Declare button gone")


async def test_acknowledge_silence_and_resolve_reach_the_timeline(quorum: Harness) -> None:
    h = quorum
    _, inc = await h.api("POST", BASE, {"title": "Pay", "severity": "P2", "services": ["payments"]})
    body = am_body(alert("HighErrorRate", "payments", "f000000000000010"))
    assert (await h.api("POST", AM_PATH, body))[0] == 200
    (card,) = await wait_cards(h, 1)
    assert "Acknowledged" in (await tap(h, card, ALICE, "👀 Acknowledge"))["text"]
    assert "Silenced" in (await tap(h, card, ALICE, "🔕 1h"))["text"]
    assert "Resolved" in (await tap(h, card, ALICE, "✅ Resolve"))["text"]
    assert [t for _, t, _ in await timeline(h, inc["id"])][2:] == [
        "alert HighErrorRate acknowledged by alice",
        "alert HighErrorRate silenced by alice",
        "alert HighErrorRate resolved by alice",
    ]
    _, got = await h.api("GET", f"{BASE}/{inc['id']}")
    assert got["acknowledged_at"] is not None
    metrics = await (await h.http.get(h.url + "/metrics")).text()
    series = 'quorum_incident_time_to_acknowledge_seconds_count{severity="P2",team="platform"}'
    assert f"{series} 1.0" in metrics
