"""One Silence tap mutes one alert: only Alertmanager's own alerts, narrowed by alertname and
another label, are silenced in the real Alertmanager too."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tests.e2e.alertmanager import Alertmanager
from tests.support import (
    ALICE,
    AM_PATH,
    API_KEY,
    CHAT,
    Harness,
    QuorumFactory,
    am_alert,
    am_body,
    db_rows,
    free_port,
    policy_data,
    wait_cards,
    wait_text,
)

AM_LABELS = {"alertname": "DiskFull", "instance": "db-1:9100"}


async def _silence(h: Harness, card: dict[str, Any]) -> str:
    tap = await h.emu.tap(CHAT, card["message_id"], ALICE, button_text="🔕 1h", wait=5)
    assert tap["answer"], tap
    return str(tap["answer"]["text"])


async def test_only_narrow_alertmanager_alerts_are_silenced_there(
    make_quorum: QuorumFactory,
    alertmanagers: Callable[[int], Alertmanager],
) -> None:
    am = alertmanagers(free_port())
    policy = policy_data()
    policy["teams"]["platform"]["alertmanager_url"] = am.url
    h = await make_quorum(policy)
    await am.start(h.url + AM_PATH, API_KEY)

    # A generic alert whose only label is its severity: a mirrored silence would match every
    # critical alert in Alertmanager.
    status, _ = await h.api(
        "POST",
        "/api/v1/alerts",
        {"title": "Something critical", "labels": {"severity": "critical"}},
    )
    assert status == 200
    (generic,) = await wait_cards(h, 1)
    toast = await _silence(h, generic)
    assert "Quorum only" in toast, toast
    await wait_text(h, "in Quorum only")

    # An Alertmanager alert with alertname and instance: silenced there with exactly those.
    status, _ = await h.api("POST", AM_PATH, am_body(am_alert(labels=AM_LABELS)))
    assert status == 200
    mirrored = next(c for c in await wait_cards(h, 2) if "DiskFull" in c["text"])
    toast = await _silence(h, mirrored)
    assert 'alertname="DiskFull", instance="db-1:9100"' in toast, toast

    async def am_silences() -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = await am.request("GET", "/api/v2/silences")
        return found

    rows = await h.wait_for(
        lambda: db_rows(
            h,
            "SELECT alertmanager_silence_id FROM silences WHERE alertmanager_silence_id "
            "IS NOT NULL",
        ),
        timeout=15,
    )
    assert len(rows) == 1
    (silence,) = await am_silences()  # the generic alert's silence never went there
    assert {m["name"]: m["value"] for m in silence["matchers"]} == AM_LABELS
    assert all(m["isEqual"] and not m["isRegex"] for m in silence["matchers"])
    card = await wait_text(h, silence["id"])
    assert 'instance="db-1:9100"' in card["text"]
    statuses = await db_rows(h, "SELECT am_status FROM silences ORDER BY id")
    assert [r["am_status"] for r in statuses] == [None, "created"]
