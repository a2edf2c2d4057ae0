"""200 approvers tapping one card at the same instant: exactly one transition, one token."""

from __future__ import annotations

import asyncio
from typing import Any

from tests.conftest import CHAT, QuorumFactory, policy_data
from tests.test_approvals_e2e import APPROVE, card, create, sql

BASE = 500_000


async def test_200_concurrent_taps_make_one_transition_and_one_token(
    make_quorum: QuorumFactory,
) -> None:
    data = policy_data()
    ids = [BASE + i for i in range(200)]
    data["teams"]["platform"]["approvers"] = [
        {"telegram_id": uid, "name": f"approver{uid}"} for uid in ids
    ]
    data["teams"]["platform"]["policy"] = {"critical": {"required_approvals": 3}}
    h = await make_quorum(policy=data)
    for uid in ids:
        await h.emu.add_user(uid, f"A{uid}")
    # Members of the chat (the emulator adds tapping users; make it explicit anyway).
    await h.emu.add_chat(CHAT, "supergroup", title="platform", members=ids)
    req = await create(h, risk_level="critical")
    msg = await card(h, req["id"])
    # Card edits fail for a while (Telegram 5xx), so every tap still finds the buttons.
    await h.emu.add_fault("server_error", method="editMessageText", count=1000)

    async def one(uid: int) -> dict[str, Any]:
        res = await h.emu.tap(CHAT, msg["message_id"], uid, button_text=APPROVE, wait=30)
        answer: dict[str, Any] = res.get("answer") or {}
        return answer

    answers = await asyncio.gather(*(one(uid) for uid in ids))
    texts = [a.get("text") or "" for a in answers]
    assert all(texts), [a for a in answers if not a.get("text")][:3]
    assert sum("Approved" in t for t in texts) == 1
    assert sum("recorded" in t for t in texts) == 2
    assert sum("already approved" in t for t in texts) == 197
    rows = await sql(
        h,
        "SELECT (SELECT count(*) FROM votes) AS votes,"
        " (SELECT count(*) FROM approval_tokens) AS tokens,"
        " (SELECT count(*) FROM audit_log WHERE event = 'approval.approved') AS decisions,"
        " (SELECT status FROM approval_requests) AS status,"
        " (SELECT jsonb_array_length(decided_by) FROM approval_requests) AS deciders",
    )
    assert dict(rows[0]) == {
        "votes": 3,
        "tokens": 1,
        "decisions": 1,
        "status": "approved",
        "deciders": 3,
    }
