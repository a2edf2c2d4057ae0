"""Helpers for end-to-end approval tests: create a request, find its card, tap, query SQL."""

from __future__ import annotations

from typing import Any

import asyncpg

from storage.db import to_sync_dsn
from tests.conftest import ALICE, CHAT, Harness

APPROVE, REJECT = "✅ Approve", "❌ Reject"
BODY: dict[str, Any] = {
    "action": "restart",
    "target": "prod/api",
    "risk_level": "low",
    "requested_by": "ci",
}


async def sql(h: Harness, query: str, *args: Any) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(to_sync_dsn(h.settings.database_url))
    try:
        return list(await conn.fetch(query, *args))
    finally:
        await conn.close()


async def create(h: Harness, **over: Any) -> dict[str, Any]:
    status, req = await h.api("POST", "/api/v1/approvals", {**BODY, **over})
    assert status == 201, req
    created: dict[str, Any] = req
    return created


async def card(h: Harness, request_id: str) -> dict[str, Any]:
    """The request's card as the emulator shows it, once its message id is stored too."""

    async def find() -> dict[str, Any] | None:
        stored = await sql(
            h,
            "SELECT 1 FROM telegram_messages WHERE approval_id = $1 AND message_id IS NOT NULL",
            request_id,
        )
        messages = await h.bot_messages(CHAT)
        return next((m for m in messages if stored and request_id in m["text"]), None)

    found: dict[str, Any] = await h.wait_for(find)
    return found


async def tap(h: Harness, msg: dict[str, Any], user: int, button: str = APPROVE) -> dict[str, Any]:
    res = await h.emu.tap(CHAT, msg["message_id"], user, button_text=button, wait=5)
    answer = res.get("answer")
    assert answer is not None, res
    return answer


async def approved(h: Harness) -> tuple[str, str]:
    """An approved request's id and its token, approved by ALICE's tap on the card."""
    req = await create(h)
    answer = await tap(h, await card(h, req["id"]), ALICE)
    assert "Approved" in answer["text"], answer
    status, got = await h.api("GET", f"/api/v1/approvals/{req['id']}")
    assert status == 200 and got["status"] == "approved", got
    return req["id"], got["approval_token"]
