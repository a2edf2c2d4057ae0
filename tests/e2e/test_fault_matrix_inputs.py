"""Fault-matrix rows on input: invalid UTF-8 and huge integers on every JSON route, a
non-approver's tap on an approval card, a tap whose callback_data is not UTF-8, bodies over
the size limit refused without being read whole."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.e2e.flows import APPROVE, audit_events, card, create, sql, tap
from tests.support import (
    ALICE,
    AM_PATH,
    API_KEY,
    CAROL,
    CHAT,
    Harness,
    am_alert,
    am_body,
    button_data,
    post_update,
    tap_update,
)

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


async def test_callback_data_of_invalid_utf8_bytes_is_refused_audited_and_changes_nothing(
    quorum: Harness,
) -> None:
    req = await create(quorum)
    msg = await card(quorum, req["id"])
    genuine = button_data(msg, APPROVE)
    # The genuine button's data with two bytes that are not UTF-8, sent as they are.
    update = json.dumps(tap_update(9001, msg, ALICE, genuine + "\x00")).encode()
    forged = update.replace(b"\\u0000", b"\xff\xfe")
    assert b"\xff\xfe" in forged
    assert await post_update(quorum, forged) == (200, {"ok": True})
    rows = await sql(
        quorum,
        "SELECT actor_telegram_id, chat_id, detail FROM audit_log"
        " WHERE event = 'security.invalid_update'",
    )
    assert [(r["actor_telegram_id"], r["chat_id"]) for r in rows] == [(ALICE, CHAT)]
    detail = json.loads(rows[0]["detail"])
    assert (detail["reason"], detail["update_id"]) == ("not_utf8", 9001)
    status, got = await quorum.api("GET", f"/api/v1/approvals/{req['id']}")
    assert status == 200 and (got["status"], got["votes"]) == ("pending", []), got
    assert await sql(quorum, "SELECT 1 FROM inbound_updates WHERE update_id = 9001") == []
    # The genuine button still counts.
    assert "Approved" in (await tap(quorum, msg, ALICE))["text"]


async def raw_post(h: Harness, headers: str, body_parts: list[bytes]) -> tuple[int, Any]:
    """POST /api/v1/approvals over a bare socket: the head, then `body_parts`, then (never
    finishing the body) the answer."""
    where = urlsplit(h.url)
    reader, writer = await asyncio.open_connection(where.hostname, where.port)
    try:
        writer.write(
            "POST /api/v1/approvals HTTP/1.1\r\nHost: quorum\r\n"
            f"Authorization: Bearer {API_KEY}\r\nContent-Type: application/json\r\n"
            f"{headers}\r\n".encode()
        )
        for part in body_parts:
            writer.write(part)
            await writer.drain()
        async with asyncio.timeout(10):
            head = (await reader.readuntil(b"\r\n\r\n")).decode()
            length = int(head.lower().split("content-length:")[1].split("\r\n")[0])
            answer = json.loads(await reader.readexactly(length))
        return int(head.split(" ")[1]), answer
    finally:
        writer.close()


async def test_a_body_over_the_limit_is_413_without_being_read_whole(quorum: Harness) -> None:
    # Declared too large: refused on the head alone, before any of its 100 MB is sent.
    status, answer = await raw_post(quorum, "Content-Length: 104857600\r\n", [])
    assert status == 413 and answer["error"]["code"] == "payload_too_large", answer
    # Undeclared (chunked): refused once past the 1 MiB limit, the rest never waited for.
    chunk = b"10000\r\n" + b"x" * 0x10000 + b"\r\n"  # 64 KiB a chunk
    status, answer = await raw_post(quorum, "Transfer-Encoding: chunked\r\n", [chunk] * 17)
    assert status == 413 and answer["error"]["code"] == "payload_too_large", answer
    rows = await sql(quorum, "SELECT count(*) AS n FROM approval_requests")
    assert rows[0]["n"] == 0


async def test_a_refused_alertmanager_group_is_logged_once_per_group_key(
    quorum: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    # Alertmanager does not retry a 4xx, but re-sends the group every group_interval.
    caplog.set_level(logging.WARNING, logger="handlers.alerts")
    group = f'{{}}:{{alertname="Refused-{uuid.uuid4().hex}"}}'
    bad = am_body(am_alert())
    bad["alerts"][0]["status"] = "exploded"
    for key in (group, group, group, group + "-another"):
        status, answer = await quorum.api("POST", AM_PATH, {**bad, "groupKey": key})
        assert status == 422 and answer["error"]["message"].startswith("alerts.0.status")
    logged = [r.getMessage() for r in caplog.records if "rejected alerts" in r.getMessage()]
    assert len(logged) == 2, logged
    assert group in logged[0] and f"{group}-another" in logged[1]
