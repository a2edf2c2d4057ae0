"""Incidents over the HTTP API: declare, list, read, move on, command, timeline, postmortem."""

from __future__ import annotations

import hashlib
import re
from typing import Any

from tests.e2e.flows import sql
from tests.support import (
    ALICE,
    AM_PATH,
    CAROL,
    OTHER_API_KEY,
    Harness,
    QuorumFactory,
    am_alert,
    am_body,
    policy_data,
)

BASE = "/api/v1/incidents"
READ_ONLY = "qk_incidents-reader"


async def declare(h: Harness, **over: Any) -> dict[str, Any]:
    body = {"title": "Payments 5xx", "severity": "P1", "services": ["payments"], **over}
    status, data = await h.api("POST", BASE, body)
    assert status == 201, data
    found: dict[str, Any] = data
    return found


async def kinds(h: Harness, incident_id: str) -> list[str]:
    status, data = await h.api("GET", f"{BASE}/{incident_id}/timeline")
    assert status == 200, data
    return [e["kind"] for e in data["events"]]


async def test_declare_read_and_list_by_status(quorum: Harness) -> None:
    h = quorum
    first = await declare(h)
    assert (
        re.fullmatch(r"INC-\d{8}-[A-Z0-9]{6}", first["id"]) and first["status"] == "investigating"
    )
    assert first["group_labels"] == {"service": ["payments"]} and first["declared_by"] == "api:ci"
    second = await declare(h, title="Search slow", severity="P3", services=None)
    status, got = await h.api("GET", f"{BASE}/{first['id']}")
    assert status == 200 and got["title"] == "Payments 5xx" and got["severity"] == "P1"
    status, _ = await h.api("POST", f"{BASE}/{second['id']}/status", {"status": "resolved"})
    assert status == 200
    status, page = await h.api("GET", f"{BASE}?status=open")
    assert status == 200 and [i["id"] for i in page["incidents"]] == [first["id"]]
    status, page = await h.api("GET", f"{BASE}?status=resolved")
    assert [i["id"] for i in page["incidents"]] == [second["id"]]
    status, bad = await h.api("GET", f"{BASE}?status=sleeping")
    assert status == 422 and bad["error"]["field"] == "status"


async def test_lists_and_timelines_come_a_page_at_a_time(quorum: Harness) -> None:
    h = quorum
    made = [(await declare(h, title=f"Incident {n}"))["id"] for n in range(3)]
    seen: list[str] = []
    path = f"{BASE}?limit=2"
    while path:
        status, page = await h.api("GET", path)
        assert status == 200, page
        seen += [i["id"] for i in page["incidents"]]
        path = f"{BASE}?limit=2&cursor={page['next']}" if page["next"] else ""
    assert seen == list(reversed(made))
    target = made[0]
    for status_name in ("mitigating", "investigating", "mitigating"):
        assert (await h.api("POST", f"{BASE}/{target}/status", {"status": status_name}))[0] == 200
    events: list[dict[str, Any]] = []
    path = f"{BASE}/{target}/timeline?limit=3"
    while path:
        status, page = await h.api("GET", path)
        assert status == 200, page
        events += page["events"]
        path = f"{BASE}/{target}/timeline?limit=3&cursor={page['next']}" if page["next"] else ""
    assert [e["kind"] for e in events] == ["incident.declared"] + ["incident.status"] * 3
    assert [e["at"] for e in events] == sorted(e["at"] for e in events)
    assert events[1]["text"] == "investigating → mitigating by api:ci"
    for bad in ("limit=0", "limit=101", "cursor=%21%21", "cursor=bm90LWFuLWlk"):
        status, data = await h.api("GET", f"{BASE}/{target}/timeline?{bad}")
        assert status == 422, (bad, data)


async def test_status_moves_follow_the_rules_and_escalation_is_a_flag(quorum: Harness) -> None:
    h = quorum
    inc = (await declare(h))["id"]
    status, data = await h.api("POST", f"{BASE}/{inc}/status", {"status": "closed"})
    assert status == 409 and data["error"]["code"] == "invalid_transition", data
    status, data = await h.api("POST", f"{BASE}/{inc}/status", {"status": "escalated"})
    assert status == 200 and data["status"] == "investigating" and data["escalated_at"]
    status, data = await h.api("POST", f"{BASE}/{inc}/status", {"status": "escalated"})
    assert status == 409 and data["error"]["code"] == "already_escalated"
    for step in ("mitigating", "resolved", "closed"):
        status, data = await h.api("POST", f"{BASE}/{inc}/status", {"status": step})
        assert status == 200 and data["status"] == step, data
    assert data["resolved_at"] and data["closed_at"]
    status, data = await h.api("POST", f"{BASE}/{inc}/status", {"status": "paused"})
    assert status == 422 and data["error"]["field"] == "status"
    metrics = await (await h.http.get(h.url + "/metrics")).text()
    assert 'quorum_incident_time_to_resolve_seconds_count{severity="P1",team="platform"} 1.0' in (
        metrics
    )
    # Every change is audited beside its timeline line.
    rows = await sql(h, "SELECT event FROM audit_log WHERE detail->>'incident' = $1", inc)
    assert [r["event"] for r in rows] == ["incident.declared"] + ["incident.status"] * 4


async def test_command_goes_to_an_approver_only(quorum: Harness) -> None:
    h = quorum
    inc = (await declare(h))["id"]
    status, data = await h.api("POST", f"{BASE}/{inc}/commander", {"telegram_id": CAROL})
    assert status == 422 and data["error"]["field"] == "telegram_id", data
    status, data = await h.api("POST", f"{BASE}/{inc}/commander", {"telegram_id": ALICE})
    assert status == 200 and data["commander"] == {"telegram_id": ALICE, "name": "alice"}
    assert data["acknowledged_at"] is not None
    status, data = await h.api("POST", f"{BASE}/{inc}/commander", {"telegram_id": ALICE})
    assert status == 409 and data["error"]["code"] == "already_commander"
    assert await kinds(h, inc) == ["incident.declared", "incident.commander"]
    metrics = await (await h.http.get(h.url + "/metrics")).text()
    assert (
        'quorum_incident_time_to_acknowledge_seconds_count{severity="P1",team="platform"} 1.0'
        in (metrics)
    )


async def test_alerts_named_at_declaration_attach(quorum: Harness) -> None:
    h = quorum
    labels = {"alertname": "HighErrorRate", "service": "payments", "severity": "critical"}
    status, _ = await h.api("POST", AM_PATH, am_body(am_alert(labels=labels)))
    assert status == 200
    (alert,) = await sql(h, "SELECT id FROM alerts")
    inc = await declare(h, alert_ids=[alert["id"]], services=None)
    assert inc["alerts"] == {"firing": 1, "resolved": 0, "ids": [alert["id"]]}
    assert inc["group_labels"] == {"service": ["payments"]}
    assert await kinds(h, inc["id"]) == ["incident.declared", "alert.attached"]
    status, data = await h.api("POST", BASE, {"title": "x", "severity": "P2", "alert_ids": [999]})
    assert status == 422 and data["error"]["field"] == "alert_ids", data


async def test_another_teams_incident_is_a_404(quorum: Harness) -> None:
    h = quorum
    inc = (await declare(h))["id"]
    for method, path, body in (
        ("GET", f"{BASE}/{inc}", None),
        ("POST", f"{BASE}/{inc}/status", {"status": "mitigating"}),
        ("POST", f"{BASE}/{inc}/commander", {"telegram_id": ALICE}),
        ("GET", f"{BASE}/{inc}/timeline", None),
        ("GET", f"{BASE}/{inc}/postmortem.md", None),
        ("GET", f"{BASE}/INC-nope", None),
    ):
        status, data = await h.api(method, path, body, key=OTHER_API_KEY)
        assert status == 404 and data["error"]["code"] == "not_found", (path, data)
    status, page = await h.api("GET", BASE, key=OTHER_API_KEY)
    assert status == 200 and page == {"incidents": [], "next": None}
    status, got = await h.api("GET", f"{BASE}/{inc}")
    assert status == 200 and got["status"] == "investigating"


async def test_the_postmortem_draft(quorum: Harness) -> None:
    h = quorum
    inc = (await declare(h, title="Payments *down* <b>"))["id"]
    await h.api("POST", f"{BASE}/{inc}/commander", {"telegram_id": ALICE})
    await h.api("POST", f"{BASE}/{inc}/status", {"status": "resolved"})
    async with h.http.get(
        f"{h.url}{BASE}/{inc}/postmortem.md", headers={"Authorization": "Bearer test-key-platform"}
    ) as resp:
        assert resp.status == 200 and resp.content_type == "text/markdown"
        text = await resp.text()
    assert text.startswith(f"# {inc}: Payments \\*down\\* \\<b\\>")
    for heading in ("Summary", "Impact window", "Severity history", "Timeline (UTC)"):
        assert f"## {heading}" in text
    assert "- Commander: alice" in text and "P1" in text
    assert "alice took command" not in text  # the API set it: "alice in command (set by …)"
    assert "alice in command (set by api:ci)" in text
    assert "- Time to acknowledge: " in text and "- Time to resolve: " in text
    assert "ongoing" not in text


async def test_incident_scopes(make_quorum: QuorumFactory) -> None:
    data = policy_data()
    data["teams"]["platform"]["api_keys"].append(
        {
            "name": "reader",
            "sha256": hashlib.sha256(READ_ONLY.encode()).hexdigest(),
            "scopes": ["incidents:read"],
        }
    )
    h = await make_quorum(data)
    inc = (await declare(h))["id"]
    assert (await h.api("GET", f"{BASE}/{inc}", key=READ_ONLY))[0] == 200
    assert (await h.api("GET", f"{BASE}/{inc}/timeline", key=READ_ONLY))[0] == 200
    for path, body in ((BASE, {"title": "t", "severity": "P2"}), (f"{BASE}/{inc}/status", {})):
        status, got = await h.api("POST", path, body, key=READ_ONLY)
        assert status == 403 and "incidents:write" in got["error"]["message"], got
