"""A request's callback_url cannot send the signed decision anywhere its team did not allow."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from tests.e2e.flows import body as request_body
from tests.e2e.flows import create, sql
from tests.support import Harness, hook_server


async def test_userinfo_callback_url_is_refused(quorum: Harness) -> None:
    for url in ("http://127.0.0.1:1@other-host/", "http://x@127.0.0.1:1/hook"):
        status, body = await quorum.api(
            "POST", "/api/v1/approvals", {**request_body(), "callback_url": url}
        )
        assert status == 422, body
        assert body["error"]["field"] == "callback_url", body
    rows = await sql(quorum, "SELECT count(*) AS n FROM approval_requests")
    assert rows[0]["n"] == 0


async def test_redirect_is_not_followed(quorum: Harness) -> None:
    """An allowed URL answering 307 must not make Quorum re-POST the body elsewhere."""
    elsewhere: list[bytes] = []
    redirected: list[bytes] = []

    async def other(request: web.Request) -> web.Response:
        elsewhere.append(await request.read())
        return web.Response(status=204)

    async with hook_server(other) as other_url:

        async def redirect(request: web.Request) -> web.Response:
            redirected.append(await request.read())
            raise web.HTTPTemporaryRedirect(f"{other_url}/hook")

        async with hook_server(redirect) as url:
            req = await create(quorum, callback_url=f"{url}/hook")
            status, _ = await quorum.api("POST", f"/api/v1/approvals/{req['id']}/cancel")
            assert status == 200

            async def finished() -> list[Any]:
                return await sql(
                    quorum,
                    "SELECT event, detail FROM audit_log WHERE approval_id = $1::uuid "
                    "AND event IN ('callback.delivered', 'callback.dead')",
                    req["id"],
                )

            (row,) = await quorum.wait_for(finished, timeout=15)
    assert elsewhere == []
    assert len(redirected) == 1
    assert row["event"] == "callback.dead"
    assert "redirect" in str(row["detail"])
