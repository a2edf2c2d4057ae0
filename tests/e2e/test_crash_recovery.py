"""Fault-matrix row: the process killed between a commit and its Telegram call. The card's
outbox row is committed with the request; the process dies (SIGKILL) while its sendMessage is
held at Telegram's door, never carried out; the restarted process sends exactly that card,
once, and the request goes on from there."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp

from sandbox.emulator import EmulatorClient
from tests.e2e.flows import APPROVE, body
from tests.support import (
    ALICE,
    API_KEY,
    BOT_ID,
    CHAT,
    QuorumProcess,
    db_rows,
    policy_data,
    policy_toml,
    populate_emulator,
    quorum_process,
    wait_until,
)

CARD_SENDS = "SELECT status FROM outbox WHERE kind = 'approval_card:send'"


async def api(q: QuorumProcess, method: str, path: str, data: Any = None) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {API_KEY}"}
    async with (
        aiohttp.ClientSession() as http,
        http.request(method, q.url + path, json=data, headers=headers) as resp,
    ):
        return resp.status, await resp.json()


async def cards_of(emu: EmulatorClient, request_id: str) -> list[dict[str, Any]]:
    return [
        m
        for m in await emu.messages(CHAT)
        if m["from_id"] == BOT_ID and request_id in str(m["text"])
    ]


async def test_killed_between_commit_and_send_the_restart_sends_the_card_once(
    db_url: str, redis_url: str, emu: EmulatorClient, tmp_path: Path
) -> None:
    await populate_emulator(emu)
    (tmp_path / "policy.toml").write_text(policy_toml(policy_data()))
    settings = {
        "telegram_api_url": emu.base_url,
        "database_url": db_url,
        "redis_url": redis_url,
        "policy_file": tmp_path / "policy.toml",
        # A dead process's claim on the row runs out after a second, not the default 30.
        "outbox_claim_lease_seconds": 1,
    }
    await emu.add_fault("hold", method="sendMessage", chat_id=CHAT, delay=60)
    async with quorum_process(tmp_path, **settings) as first:
        status, req = await api(first, "POST", "/api/v1/approvals", body(risk_level="high"))
        assert status == 201, req

        async def held() -> bool:
            return await emu.faults() == []  # the rule is spent once the call matched it

        await wait_until(held, 20, what="the card's sendMessage held at Telegram's door")
        await first.kill()

    async def dropped() -> list[dict[str, Any]]:
        return [c for c in await emu.calls("sendMessage") if c["status"] == 0]

    await wait_until(dropped, 10, what="the held call given up with its dead client")
    assert await cards_of(emu, req["id"]) == []
    [row] = await db_rows(db_url, CARD_SENDS)
    assert row["status"] == "sending"  # committed and claimed, never sent

    async with quorum_process(tmp_path, **settings) as second:

        async def one_card() -> list[dict[str, Any]]:
            return await cards_of(emu, req["id"])

        [card] = await wait_until(one_card, 20, what="the card sent after the restart")
        tapped = await emu.tap(CHAT, card["message_id"], ALICE, button_text=APPROVE, wait=5)
        assert "recorded (1/2" in str((tapped.get("answer") or {}).get("text")), tapped
        status, got = await api(second, "GET", f"/api/v1/approvals/{req['id']}")
        assert status == 200 and got["status"] == "pending", got
        assert [v["voter_telegram_id"] for v in got["votes"]] == [ALICE]

        async def sent_once() -> bool:
            return [r["status"] for r in await db_rows(db_url, CARD_SENDS)] == ["done"]

        await wait_until(sent_once, 10, what="the card's one outbox row done")
    assert len(await cards_of(emu, req["id"])) == 1
    sent = [c for c in await emu.calls("sendMessage") if c["status"] == 200]
    assert len(sent) == 1
