"""API-key scopes end to end: a key limited to alert intake can read no token, redeem nothing."""

from __future__ import annotations

import hashlib
from typing import Any

from bot.policy import SCOPES
from tests.e2e.flows import approved, body, create
from tests.support import AM_PATH, API_KEY, Harness, QuorumFactory, am_alert, am_body, policy_data

FORWARDER = "qk_alert-forwarder"  # alerts:write only
FULL = "qk_every-scope-listed"  # each scope written out
READER = "qk_reader"  # approvals:read only


def scoped_policy() -> dict[str, Any]:
    data = policy_data()
    data["teams"]["platform"]["api_keys"] += [
        {"name": name, "sha256": hashlib.sha256(key.encode()).hexdigest(), "scopes": scopes}
        for name, key, scopes in (
            ("forwarder", FORWARDER, ["alerts:write"]),
            ("full", FULL, list(SCOPES)),
            ("reader", READER, ["approvals:read"]),
        )
    ]
    return data


def refused(answer: tuple[int, Any], scope: str) -> bool:
    status, data = answer
    return (
        status == 403
        and data["error"]["code"] == "insufficient_scope"
        and scope in data["error"]["message"]
    )


async def every_route(h: Harness, key: str) -> dict[str, tuple[int, Any]]:
    """Each scoped route called once with `key`, on an approved request (and a pending one)."""
    request_id, token = await approved(h)
    pending = await create(h, target="prod/other")
    alert = am_body(am_alert(fingerprint="5c0be5c0be5c0be5"))
    return {
        "alerts:write": await h.api("POST", AM_PATH, alert, key=key),
        "generic alerts": await h.api(
            "POST", "/api/v1/alerts", {"title": "Cert expires", "fingerprint": "c"}, key=key
        ),
        "grafana": await h.api("POST", "/api/v1/alerts/grafana", {"alerts": []}, key=key),
        "approvals:read": await h.api("GET", f"/api/v1/approvals/{request_id}", key=key),
        "list": await h.api("GET", "/api/v1/approvals", key=key),
        "tokens:redeem": await h.api("POST", "/api/v1/tokens/redeem", {"token": token}, key=key),
        "results:write": await h.api(
            "POST", f"/api/v1/approvals/{request_id}/result", {"success": True}, key=key
        ),
        "approvals:cancel": await h.api(
            "POST", f"/api/v1/approvals/{pending['id']}/cancel", key=key
        ),
        "approvals:create": await h.api(
            "POST", "/api/v1/approvals", body(target="prod/new"), key=key
        ),
    }


async def test_an_alerts_only_key_posts_alerts_and_nothing_else(make_quorum: QuorumFactory) -> None:
    h = await make_quorum(scoped_policy())
    got = await every_route(h, FORWARDER)
    assert got["alerts:write"][0] == 200, got["alerts:write"]
    assert got["generic alerts"][0] == 200, got["generic alerts"]
    assert got["grafana"][0] != 403, got["grafana"]
    for scope, answer in [
        ("approvals:read", got["approvals:read"]),
        ("approvals:read", got["list"]),
        ("tokens:redeem", got["tokens:redeem"]),
        ("results:write", got["results:write"]),
        ("approvals:cancel", got["approvals:cancel"]),
        ("approvals:create", got["approvals:create"]),
    ]:
        assert refused(answer, scope), (scope, answer)
    # What was refused did nothing: the token is still unredeemed, the request still pending.
    status, approvals = await h.api("GET", "/api/v1/approvals", key=API_KEY)
    assert status == 200
    states = {a["target"]: (a["status"], a.get("token_redeemed")) for a in approvals["approvals"]}
    assert states == {"prod/api": ("approved", False), "prod/other": ("pending", None)}


async def test_a_read_only_key_reads_the_token_but_cannot_redeem(
    make_quorum: QuorumFactory,
) -> None:
    h = await make_quorum(scoped_policy())
    got = await every_route(h, READER)
    assert got["approvals:read"][0] == 200 and got["approvals:read"][1]["approval_token"]
    assert got["list"][0] == 200
    assert refused(got["tokens:redeem"], "tokens:redeem")
    assert refused(got["alerts:write"], "alerts:write")


async def test_keys_with_every_scope_or_none_written_work_everywhere(
    make_quorum: QuorumFactory,
) -> None:
    h = await make_quorum(scoped_policy())
    for key in (FULL, API_KEY):
        got = await every_route(h, key)
        for route, (status, data) in got.items():
            assert status != 403, (key, route, data)
        assert got["tokens:redeem"] == (200, got["tokens:redeem"][1])
        assert got["approvals:create"][0] == 201
        assert got["approvals:cancel"][1]["status"] == "cancelled"
        assert got["results:write"][0] == 200
        assert got["alerts:write"][0] == 200
