"""GET /api/v1/audit and /api/v1/audit/checkpoints/latest: scope, team, filters, pages."""

from __future__ import annotations

import hashlib
from typing import Any

from bot.audit import chain
from bot.audit.sealer import make_checkpoint
from tests.e2e.flows import all_sealed, approved, create
from tests.support import API_KEY, Harness, QuorumFactory, policy_data

AUDITOR = "qk_platform-auditor"
OTHER_AUDITOR = "qk_data-auditor"
SIGNING_KEY = chain.new_private_key()


def audit_policy() -> dict[str, Any]:
    data = policy_data()
    for team, name, key in (("platform", "auditor", AUDITOR), ("data", "auditor", OTHER_AUDITOR)):
        data["teams"][team]["api_keys"].append(
            {
                "name": name,
                "sha256": hashlib.sha256(key.encode()).hexdigest(),
                "scopes": ["audit:read"],
            }
        )
    return data


async def audit_quorum(make_quorum: QuorumFactory) -> Harness:
    # A slow sealer: the tests seal when they want to (seal_all), or not at all.
    return await make_quorum(
        audit_policy(), audit_signing_key=SIGNING_KEY, audit_seal_interval_seconds=3600
    )


async def every_page(h: Harness, query: str, limit: int) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = []
    cursor = ""
    while True:
        status, page = await h.api(
            "GET", f"/api/v1/audit?limit={limit}{cursor}{query}", key=AUDITOR
        )
        assert status == 200, page
        assert len(page["entries"]) <= limit
        entries += page["entries"]
        if page["next"] is None:
            return entries
        cursor = f"&cursor={page['next']}"


async def test_audit_needs_its_own_scope(make_quorum: QuorumFactory) -> None:
    h = await audit_quorum(make_quorum)
    for path in ("/api/v1/audit", "/api/v1/audit/checkpoints/latest"):
        status, data = await h.api("GET", path, key=API_KEY)  # a key without `scopes`
        assert status == 403 and data["error"]["code"] == "insufficient_scope", data
        assert "audit:read" in data["error"]["message"]
        status, _ = await h.api("GET", path, key=None)
        assert status == 401


async def test_a_teams_rows_with_their_hashes_filtered_and_paged(
    make_quorum: QuorumFactory,
) -> None:
    h = await audit_quorum(make_quorum)
    request_id, _ = await approved(h)
    other = await create(h, target="prod/other")
    await all_sealed(h)
    everything = await every_page(h, "", limit=100)
    assert {e["team_id"] for e in everything} == {h.app.runtime.team_ids["platform"]}
    assert all(e["seq"] and len(e["hash"]) == 64 for e in everything)
    assert [e["id"] for e in everything] == sorted((e["id"] for e in everything), reverse=True)
    paged = await every_page(h, "", limit=2)
    assert paged == everything
    mine = await every_page(h, f"&approval_id={request_id}", limit=100)
    assert mine and {e["approval_id"] for e in mine} == {request_id}
    created = await every_page(h, "&event=approval.created", limit=100)
    assert {e["approval_id"] for e in created} == {request_id, other["id"]}
    assert await every_page(h, "&since=2999-01-01T00:00:00Z", limit=5) == []
    assert len(await every_page(h, "&until=2999-01-01T00:00:00Z", limit=100)) == len(everything)
    by_actor = await every_page(h, f"&actor={everything[-1]['actor']}", limit=100)
    assert by_actor and all(e["actor"] == everything[-1]["actor"] for e in by_actor)
    # The data team's auditor sees none of it.
    status, page = await h.api("GET", "/api/v1/audit", key=OTHER_AUDITOR)
    assert (status, page) == (200, {"entries": [], "next": None})


async def test_bad_filters_are_422_naming_the_field(make_quorum: QuorumFactory) -> None:
    h = await audit_quorum(make_quorum)
    for query, field in (
        ("limit=0", "limit"),
        ("limit=101", "limit"),
        ("cursor=not-ours", "cursor"),
        ("cursor=YXVkaXQ6eA", "cursor"),  # "audit:x"
        ("since=yesterday", "since"),
        ("until=2026-01-01T00:00:00", "until"),  # no zone
        ("approval_id=42", "approval_id"),
        ("event=" + "e" * 65, "event"),
        ("actor=%00", "actor"),
    ):
        status, data = await h.api("GET", f"/api/v1/audit?{query}", key=AUDITOR)
        assert status == 422, (query, data)
        assert data["error"]["field"] == field, (query, data)


async def test_latest_checkpoint(make_quorum: QuorumFactory) -> None:
    h = await audit_quorum(make_quorum)
    status, data = await h.api("GET", "/api/v1/audit/checkpoints/latest", key=AUDITOR)
    assert status == 404 and data["error"]["code"] == "not_found"
    await approved(h)
    await all_sealed(h)
    signed = await make_checkpoint(h.app.runtime.sessions, h.settings, force=True)
    assert signed is not None
    status, data = await h.api("GET", "/api/v1/audit/checkpoints/latest", key=OTHER_AUDITOR)
    assert status == 200
    assert data == signed.to_json()
    public = chain.load_private_key(SIGNING_KEY).public_key()
    assert chain.signature_valid(public, chain.Checkpoint.from_json(data))
