"""Maintenance windows: matching alerts stored and counted, not posted; a real Alertmanager
silence; /silences lists them; one summary line when the window ends."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from tests.e2e.alertmanager import Alertmanager
from tests.e2e.flows import sql
from tests.support import (
    ALICE,
    AM_PATH,
    CAROL,
    CHAT,
    Harness,
    QuorumFactory,
    am_alert,
    am_body,
    cards,
    free_port,
    policy_data,
    wait_cards,
    wait_text,
    wait_until,
)

PATH = "/api/v1/maintenance"


def at(seconds: float) -> str:
    return (datetime.now(UTC) + timedelta(seconds=seconds)).isoformat()


def alert(service: str, fingerprint: str) -> dict[str, Any]:
    labels = {"alertname": "HighErrorRate", "service": service, "severity": "critical"}
    return am_alert("HighErrorRate", labels=labels, fingerprint=fingerprint)


async def bot_text(h: Harness, needle: str, timeout: float = 10) -> dict[str, Any]:
    async def find() -> dict[str, Any] | None:
        return next((m for m in await h.bot_messages() if needle in str(m["text"])), None)

    found: dict[str, Any] = await wait_until(find, timeout, what=f"a bot message with {needle!r}")
    return found


async def test_a_window_silences_matching_alerts_here_and_in_alertmanager(
    make_quorum: QuorumFactory, alertmanagers: Callable[[int], Alertmanager]
) -> None:
    am = alertmanagers(free_port())
    policy = policy_data()
    policy["teams"]["platform"]["alertmanager_url"] = am.url
    h = await make_quorum(policy)
    await am.start(h.url + AM_PATH, "test-key-platform")
    body = {
        "matchers": {"service": "payments"},
        "starts_at": at(-60),
        "ends_at": at(3600),
        "comment": "database upgrade",
    }
    status, made = await h.api("POST", PATH, body)
    assert status == 201 and made["alertmanager"] is True, made

    async def am_silence() -> list[dict[str, Any]]:
        found = await am.request("GET", "/api/v2/silences")
        return [s for s in found if s["status"]["state"] == "active"]

    (silence,) = await wait_until(am_silence, 15, what="the Alertmanager silence")
    assert [(m["name"], m["value"]) for m in silence["matchers"]] == [("service", "payments")]
    assert silence["comment"] == "database upgrade"
    both = am_body(alert("payments", "fa00000000000001"), alert("search", "fa00000000000002"))
    assert (await h.api("POST", AM_PATH, both))[0] == 200
    (shown,) = await wait_cards(h, 1)
    assert "search" in shown["text"]
    rows = await sql(h, "SELECT labels->>'service' AS s, silenced FROM alerts ORDER BY id")
    assert [(r["s"], r["silenced"]) for r in rows] == [("payments", True), ("search", False)]
    await h.emu.send_text(CHAT, ALICE, "/silences")
    listing = await bot_text(h, "maintenance service=payments")
    assert "active silence" in listing["text"]


async def test_a_window_that_ends_sums_up_and_releases(quorum: Harness) -> None:
    h = quorum
    body = {"matchers": {"service": "payments"}, "starts_at": at(-1), "ends_at": at(3)}
    status, made = await h.api("POST", PATH, body)
    assert status == 201 and made["alertmanager"] is False, made
    for n in range(3):
        one = am_body(alert("payments", f"fb0000000000000{n}"))
        assert (await h.api("POST", AM_PATH, one))[0] == 200
    assert cards(await h.bot_messages()) == []
    line = await bot_text(h, "during maintenance: 3 alerts, 3 still firing", timeout=20)
    assert line["text"].startswith(f"🛠 Maintenance {made['id']} for service=payments")
    # Released: the alerts still firing get their card now (one group: the same alertname).
    await wait_text(h, "Firing 3 · resolved 0", timeout=15)
    assert len(cards(await h.bot_messages())) == 1


async def test_maintenance_from_the_chat_and_bad_windows(quorum: Harness) -> None:
    h = quorum
    await h.emu.send_text(CHAT, CAROL, "/maintenance 2h service=payments upgrade")
    await bot_text(h, "not a member of team platform")
    await h.emu.send_text(CHAT, ALICE, "/maintenance 2h service=payments db upgrade")
    done = await bot_text(h, "matching alerts are counted, not posted")
    assert "service=payments" in done["text"]
    rows = await sql(h, "SELECT matchers, created_by_name FROM silences")
    assert len(rows) == 1 and rows[0]["created_by_name"] == "alice"
    await h.emu.send_text(CHAT, ALICE, "/maintenance soon")
    await bot_text(h, "Usage: /maintenance 2h")
    for bad, field in (
        ({"matchers": {"service": "p"}, "starts_at": at(60), "ends_at": at(30)}, "ends_at"),
        ({"matchers": {}, "starts_at": at(0), "ends_at": at(60)}, "matchers"),
        (
            {"matchers": {"service": "p"}, "starts_at": "2026-01-01T00:00:00", "ends_at": at(9)},
            "starts_at",
        ),
        ({"matchers": {"service": "p"}, "starts_at": at(0), "ends_at": at(40 * 86400)}, "ends_at"),
        ({"matchers": {"1bad": "p"}, "starts_at": at(0), "ends_at": at(60)}, "matchers"),
    ):
        status, data = await h.api("POST", PATH, bad)
        assert status == 422 and data["error"]["field"] == field, (bad, data)
