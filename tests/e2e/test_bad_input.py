"""Bad input over HTTP gets a clear 4xx naming the problem, never a 5xx (nor a 503 "outage")."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support import API_KEY, Harness

APPROVALS = "/api/v1/approvals"


def valid(extra: str = "") -> str:
    """A valid creation body as text, with `extra` members appended."""
    head = '{"action": "restart", "target": "prod/api", "risk_level": "low", "requested_by": "ci"'
    return head + extra + "}"


async def post_raw(
    h: Harness, path: str, text: str, headers: dict[str, str] | None = None
) -> tuple[int, Any]:
    """POST a body exactly as written (the client's JSON encoder would refuse some of these)."""
    hdrs = {
        "Authorization": f"Bearer {API_KEY}",
        "Content-Type": "application/json",
        **(headers or {}),
    }
    async with h.http.post(h.url + path, data=text.encode(), headers=hdrs) as resp:
        return resp.status, await resp.json(content_type=None)


def nested(depth: int) -> str:
    return "[" * depth + "1" + "]" * depth


async def test_huge_integer_literal_is_400_invalid_json(quorum: Harness) -> None:
    for extra in (', "metadata": {"n": %s}', ', "requested_by_telegram_id": %s'):
        status, data = await post_raw(quorum, APPROVALS, valid(extra % ("9" * 5000)))
        assert status == 400, data
        assert data["error"]["code"] == "invalid_json"
        assert "digits" in data["error"]["message"]
    status, data = await post_raw(quorum, "/api/v1/alerts", f'{{"title": "x", "n": {"1" * 5000}}}')
    assert status == 400 and data["error"]["code"] == "invalid_json", data


@pytest.mark.parametrize("idempotency_key", [None, "k-1"])
async def test_lone_surrogate_anywhere_is_422(quorum: Harness, idempotency_key: str | None) -> None:
    headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
    for extra in (
        ', "metadata": {"s": "\\ud800"}',
        ', "metadata": {"\\udfff": 1}',
        ', "description": "ok \\ud800 then"',
        ', "dry_run_checks": [["\\udc00"]]',
    ):
        status, data = await post_raw(quorum, APPROVALS, valid(extra), headers)
        assert status == 422, (extra, data)
        assert "surrogate" in data["error"]["message"], data
    status, data = await post_raw(quorum, APPROVALS, valid(), headers)
    assert status == 201, data  # the same body without it is fine


@pytest.mark.parametrize(
    ("extra", "words", "field"),
    [
        (', "metadata": {"k": "a\\u0000b"}', "NUL", "metadata.k"),
        (', "metadata": {"a\\u0000b": 1}', "NUL", "metadata"),
        (', "description": "\\u0000"', "NUL", "description"),
        (', "metadata": {"n": NaN}', "finite", "metadata.n"),
        (', "blast_radius": {"pods": Infinity}', "finite", "blast_radius.pods"),
        (', "dry_run_checks": [-Infinity]', "finite", "dry_run_checks.0"),
        (', "metadata": {"n": 1e999}', "finite", "metadata.n"),
        # So deep the parser gives up: no field to name, the same answer.
        (f', "metadata": {{"deep": {nested(1000)}}}', "nested", "(body)"),
        (f', "metadata": {{"deep": {nested(32)}}}', "nested", "metadata.deep"),
    ],
)
async def test_unstorable_values_are_422_naming_the_problem(
    quorum: Harness, extra: str, words: str, field: str
) -> None:
    status, data = await post_raw(quorum, APPROVALS, valid(extra))
    assert status == 422, data
    assert data["error"]["code"] == "validation_error"
    assert words in data["error"]["message"], data
    assert data["error"]["field"].startswith(field), data


async def test_nesting_up_to_32_levels_is_stored(quorum: Harness) -> None:
    deep = '{"a": ' * 32 + "1" + "}" * 32
    status, data = await post_raw(quorum, APPROVALS, valid(f', "metadata": {deep}'))
    assert status == 201, data
    assert data["metadata"]["a"]["a"]["a"] is not None


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/api/v1/alerts", '{"title": "disk\\u0000full"}'),
        ("/api/v1/alerts", '[{"title": "disk", "labels": {"x\\u0000": "1"}}]'),
        ("/api/v1/alerts", '{"title": "disk", "labels": {"v": NaN}}'),
        ("/api/v1/alerts", '{"title": "\\ud800"}'),
        (
            "/api/v1/alerts/alertmanager",
            '{"alerts": [{"status": "firing", "labels": {"alertname": "a\\u0000"}}]}',
        ),
        ("/api/v1/alerts/grafana", f'{{"alerts": [], "extra": {nested(1000)}}}'),
    ],
)
async def test_alert_intake_refuses_unstorable_values_with_422(
    quorum: Harness, path: str, body: str
) -> None:
    status, data = await post_raw(quorum, path, body)
    assert status == 422, data
    assert data["error"]["code"] == "validation_error"


async def test_result_and_redeem_bodies_are_checked_too(quorum: Harness) -> None:
    status, created = await post_raw(quorum, APPROVALS, valid())
    assert status == 201, created
    path = f"{APPROVALS}/{created['id']}/result"
    status, data = await post_raw(quorum, path, '{"success": true, "detail": "a\\u0000"}')
    assert status == 422 and "NUL" in data["error"]["message"], data
    status, data = await post_raw(quorum, "/api/v1/tokens/redeem", '{"token": "\\ud800"}')
    assert status == 422 and "surrogate" in data["error"]["message"], data


async def test_idempotency_key_that_cannot_be_stored_is_422(quorum: Harness) -> None:
    # aiohttp hands undecodable header bytes over as lone surrogates.
    reader, writer = await _open(quorum)
    body = valid().encode()
    writer.write(
        b"POST /api/v1/approvals HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        + f"Authorization: Bearer {API_KEY}\r\nContent-Type: application/json\r\n".encode()
        + b"Idempotency-Key: k\xff\xfe\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    await writer.drain()
    head = (await reader.read()).split(b"\r\n", 1)[0]
    writer.close()
    assert b" 422 " in head or b" 400 " in head, head


async def _open(h: Harness) -> Any:
    import asyncio

    host, port = h.url.removeprefix("http://").split(":")
    return await asyncio.open_connection(host, int(port))


async def test_405_names_the_allowed_methods(quorum: Harness) -> None:
    status, data = await quorum.api("PUT", APPROVALS, {})
    assert status == 405 and data["error"]["code"] == "method_not_allowed"
    async with quorum.http.delete(quorum.url + "/api/v1/tokens/redeem") as resp:
        assert resp.status == 405
        assert "POST" in resp.headers["Allow"], resp.headers
    async with quorum.http.put(quorum.url + APPROVALS) as resp:
        allowed = {m.strip() for m in resp.headers["Allow"].split(",")}
        assert {"GET", "POST"} <= allowed, resp.headers
