"""Approvals proposed for an incident: each step on its timeline, the postmortem's actions."""

from __future__ import annotations

from tests.e2e.flows import card, create, tap
from tests.support import ALICE, OTHER_API_KEY, Harness

BASE = "/api/v1/incidents"


async def test_an_approval_for_an_incident_writes_its_steps(quorum: Harness) -> None:
    h = quorum
    status, inc = await h.api("POST", BASE, {"title": "Pay", "severity": "P1"})
    assert status == 201
    ident = inc["id"]
    req = await create(h, incident_id=ident, action="rollback", target="prod/payments")
    answer = await tap(h, await card(h, req["id"]), ALICE)
    assert "Approved" in answer["text"], answer
    _, got = await h.api("GET", f"/api/v1/approvals/{req['id']}")
    body = {"token": got["approval_token"], "action": "rollback", "target": "prod/payments"}
    assert (await h.api("POST", "/api/v1/tokens/redeem", body))[0] == 200
    result = {"success": True, "detail": "12/12 pods"}
    assert (await h.api("POST", f"/api/v1/approvals/{req['id']}/result", result))[0] == 200
    # Another team's request naming the same incident id writes nothing on this timeline.
    status, _ = await h.api(
        "POST",
        "/api/v1/approvals",
        {
            "action": "x",
            "target": "y",
            "risk_level": "low",
            "requested_by": "ci",
            "incident_id": ident,
        },
        key=OTHER_API_KEY,
    )
    assert status == 201
    status, data = await h.api("GET", f"{BASE}/{ident}/timeline")
    lines = [(e["kind"], e["text"]) for e in data["events"]]
    assert lines == [
        ("incident.declared", "P1 declared by api:ci: Pay"),
        ("approval.requested", "approval requested: rollback on prod/payments (low)"),
        ("approval.voted", "alice approved rollback on prod/payments"),
        ("approval.approved", "rollback on prod/payments approved by alice"),
        ("approval.redeemed", "rollback on prod/payments: token redeemed by api:ci"),
        ("approval.executed", "rollback on prod/payments succeeded: 12/12 pods"),
    ]
    status, got = await h.api("GET", f"{BASE}/{ident}")
    (linked,) = got["approvals"]
    assert linked["status"] == "approved" and linked["result_success"] is True
    async with h.http.get(
        f"{h.url}{BASE}/{ident}/postmortem.md",
        headers={"Authorization": "Bearer test-key-platform"},
    ) as resp:
        text = await resp.text()
    assert "- rollback on prod/payments: approved, approved by alice, succeeded" in text
