"""Fault-matrix rows on input: invalid UTF-8 and huge integers on every JSON route, a
non-approver's tap on an approval card."""

from __future__ import annotations

from typing import Any

from tests.e2e.flows import APPROVE, audit_events, card, create, sql, tap
from tests.support import API_KEY, CAROL, Harness

HUGE = "9" * 5000


def json_routes(request_id: str) -> dict[str, str]:
    """Each JSON route with a body template whose `{}` takes the value under test."""
    return {
        "/api/v1/approvals": '{"action": "restart", "target": "prod/api", "risk_level": {}}',
        "/api/v1/alerts": '{"title": "disk", "severity": {}}',
        "/api/v1/alerts/alertmanager": '{"version": "4", "alerts": [{"status": {}}]}',
        "/api/v1/alerts/grafana": '{"status": "firing", "alerts": [{"status": {}}]}',
        "/api/v1/tokens/redeem": '{"token": {}}',
        f"/api/v1/approvals/{request_id}/result": '{"success": true, "detail": {}}',
    }


async def post_bytes(h: Harness, path: str, raw: bytes) -> tuple[int, Any]:
    """POST `raw` as is, declared as JSON (the client's encoder could not produce these)."""
    headers = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"}
    async with h.http.post(h.url + path, data=raw, headers=headers) as resp:
        return resp.status, await resp.json(content_type=None)


async def stored(h: Harness, request_id: str) -> tuple[Any, ...]:
    """What a refused body must leave as it was: the rows and the request's reported result."""
    rows = await sql(
        h,
        "SELECT (SELECT count(*) FROM approval_requests) AS requests,"
        " (SELECT count(*) FROM alerts) AS alerts,"
        " (SELECT count(*) FROM token_redemptions) AS redemptions,"
        " (SELECT result_at FROM approval_requests WHERE id = $1::uuid) AS result_at",
        request_id,
    )
    return tuple(rows[0].values())


async def assert_all_refused(h: Harness, value: bytes, code: str) -> None:
    request_id = (await create(h))["id"]
    before = await stored(h, request_id)
    for path, template in json_routes(request_id).items():
        raw = template.replace("{}", "\x00").encode().replace(b"\x00", value)
        status, data = await post_bytes(h, path, raw)
        assert status == 400, (path, status, data)
        assert data["error"]["code"] == code, (path, data)
    assert await stored(h, request_id) == before


async def test_invalid_utf8_body_is_400_on_every_json_route(quorum: Harness) -> None:
    await assert_all_refused(quorum, b'"\xff"', "invalid_utf8")


async def test_5000_digit_integer_is_400_invalid_json_on_every_json_route(quorum: Harness) -> None:
    await assert_all_refused(quorum, HUGE.encode(), "invalid_json")


async def test_non_approver_tap_is_refused_audited_and_changes_nothing(quorum: Harness) -> None:
    req = await create(quorum)
    answer = await tap(quorum, await card(quorum, req["id"]), CAROL, APPROVE)
    assert "not an approver" in answer["text"], answer
    votes = await sql(
        quorum, "SELECT count(*) AS n FROM votes WHERE request_id = $1::uuid", req["id"]
    )
    assert votes[0]["n"] == 0
    status, got = await quorum.api("GET", f"/api/v1/approvals/{req['id']}")
    assert status == 200 and got["status"] == "pending", got
    refused = await sql(
        quorum,
        "SELECT actor_telegram_id, detail->>'reason' AS reason FROM audit_log"
        " WHERE approval_id = $1::uuid AND event = 'vote.refused'",
        req["id"],
    )
    assert "vote.refused" in await audit_events(quorum, req["id"])
    assert [(r["actor_telegram_id"], r["reason"]) for r in refused] == [(CAROL, "not_approver")]
