"""What a client can make the API hold or answer is bounded: metric series, free-form JSON
fields, list pages; and a fingerprint merges only a request asking for the same thing."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest

from tests.e2e.flows import body as request_body
from tests.e2e.flows import create, sql
from tests.support import API_KEY, Harness, QuorumFactory, policy_data

APPROVALS = "/api/v1/approvals"


async def metrics_size(h: Harness) -> int:
    async with h.http.get(h.url + "/metrics") as resp:
        assert resp.status == 200
        return len(await resp.read())


async def test_alert_sources_do_not_grow_the_metrics(quorum: Harness) -> None:
    before = await metrics_size(quorum)
    for batch in range(10):
        alerts = [
            # Resolved with nothing firing: stored as one audit row, so the test stays cheap.
            {"title": "disk", "status": "resolved", "fingerprint": "m1", "source": f"s{batch}-{i}"}
            for i in range(1000)
        ]
        status, data = await quorum.api("POST", "/api/v1/alerts", alerts)
        assert status == 200, data
    after = await metrics_size(quorum)
    assert after - before < 10_000, (before, after)
    async with quorum.http.get(quorum.url + "/metrics") as resp:
        text = await resp.text()
    assert 'quorum_alerts_received_total{source="generic"} 10000.0' in text, text


def nested_list(depth: int) -> Any:
    """`depth` lists, one inside the other, around a number."""
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize("field", ["metadata", "blast_radius", "dry_run_checks"])
@pytest.mark.parametrize("cap", ["size", "keys", "depth"])
async def test_free_form_fields_are_capped(quorum: Harness, field: str, cap: str) -> None:
    inner: Any
    if cap == "size":
        inner = {"blob": "x" * 16_400}
    elif cap == "keys":
        inner = {"k": {f"key{i}": i for i in range(257)}}
    else:
        inner = {"deep": nested_list(32)}
    value = [inner] if field == "dry_run_checks" else inner
    status, data = await quorum.api("POST", APPROVALS, {**request_body(), field: value})
    assert status == 422, data
    assert data["error"]["code"] == "validation_error"
    assert data["error"]["field"].startswith(field), data


@pytest.mark.parametrize("field", ["metadata", "blast_radius", "dry_run_checks"])
async def test_free_form_fields_at_the_caps_are_stored(quorum: Harness, field: str) -> None:
    # 256 keys, 32 levels deep (the field itself is the first), about 15 KB serialised.
    inner = {
        **{f"key{i}": "y" * 50 for i in range(254)},
        "deep": nested_list(30 if field == "dry_run_checks" else 31),
    }
    value: Any = [inner] if field == "dry_run_checks" else inner
    status, data = await quorum.api("POST", APPROVALS, {**request_body(), field: value})
    assert status == 201, data
    assert data[field] == value


async def test_list_is_paginated_newest_first_without_gaps(make_quorum: QuorumFactory) -> None:
    data = policy_data()
    # 120 creations in a few seconds: past the default creation burst of one key.
    data["teams"]["platform"]["api_keys"][0].update(rate_per_minute=10_000, burst=200)
    quorum = await make_quorum(data)
    made = [(await create(quorum, target=f"t{i}"))["id"] for i in range(120)]
    seen: list[str] = []
    pages = []
    url = f"{APPROVALS}?limit=50"
    while True:
        status, data = await quorum.api("GET", url)
        assert status == 200, data
        pages.append(len(data["approvals"]))
        seen.extend(a["id"] for a in data["approvals"])
        if not data.get("next"):
            break
        url = f"{APPROVALS}?limit=50&cursor={data['next']}"
    assert pages == [50, 50, 20]
    assert seen == list(reversed(made))
    status, data = await quorum.api("GET", APPROVALS)
    assert status == 200 and len(data["approvals"]) == 50 and data["next"]
    status, data = await quorum.api("GET", f"{APPROVALS}?status=pending&limit=100")
    assert len(data["approvals"]) == 100 and data["next"]
    status, data = await quorum.api("GET", f"{APPROVALS}?status=pending&cursor={data['next']}")
    assert [a["id"] for a in data["approvals"]] == list(reversed(made))[100:]
    assert data["next"] is None


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("limit=0", "limit"),
        ("limit=101", "limit"),
        ("limit=ten", "limit"),
        ("limit=", "limit"),
        ("cursor=nope", "cursor"),
        ("cursor=", "cursor"),
        ("cursor=eyJ0IjogMX0", "cursor"),  # base64 of {"t": 1}
        ("cursor=%F0%9F%98%80", "cursor"),
    ],
)
async def test_bad_page_parameters_are_422(quorum: Harness, query: str, field: str) -> None:
    status, data = await quorum.api("GET", f"{APPROVALS}?{query}")
    assert status == 422, data
    assert data["error"]["code"] == "validation_error"
    assert data["error"]["field"] == field


def two_keys_policy() -> dict[str, Any]:
    data = policy_data()
    data["teams"]["platform"]["api_keys"].append(
        {"name": "deploy", "sha256": hashlib.sha256(b"test-key-platform-2").hexdigest()}
    )
    return data


async def test_fingerprint_merges_only_the_same_request(make_quorum: QuorumFactory) -> None:
    h = await make_quorum(two_keys_policy())
    first = await create(h, action="echo hello", target="ci/box", fingerprint="F")
    same = {**request_body(), "action": "echo hello", "target": "ci/box", "fingerprint": "F"}
    status, merged = await h.api("POST", APPROVALS, same, key="test-key-platform-2")
    assert status == 200 and merged["id"] == first["id"] and merged["hit_count"] == 2, merged
    for change in (
        {"action": "DROP TABLE payments"},
        {"target": "prod/payments-db"},
        {"risk_level": "critical"},
        {"action": "DROP TABLE payments", "target": "prod/payments-db", "risk_level": "critical"},
    ):
        for key in (API_KEY, "test-key-platform-2"):
            status, data = await h.api("POST", APPROVALS, {**same, **change}, key=key)
            assert status == 409, (change, data)
            assert data["error"]["code"] == "fingerprint_conflict", data
            assert first["id"] in data["error"]["message"], data
    status, now = await h.api("GET", f"{APPROVALS}/{first['id']}")
    assert now["hit_count"] == 2 and now["action"] == "echo hello" and now["risk_level"] == "low"
    rows = await sql(h, "SELECT count(*) AS n FROM approval_requests")
    assert rows[0]["n"] == 1
