"""Many approvers tapping one card at once: one transition and one token; coalesced renders."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any

from bot.approvals import CARD_REFRESH_SECONDS
from tests.e2e.flows import APPROVE, card, card_where, create, sql
from tests.support import CHAT, QuorumFactory, policy_data

BASE = 500_000


def approvers_policy(n: int, critical: dict[str, int]) -> tuple[dict[str, Any], list[int]]:
    """The test policy with n approvers on the platform team, and their Telegram ids."""
    data = policy_data()
    ids = [BASE + i for i in range(n)]
    data["teams"]["platform"]["approvers"] = [
        {"telegram_id": uid, "name": f"approver{uid}"} for uid in ids
    ]
    data["teams"]["platform"]["policy"] = {"critical": critical}
    return data, ids


async def test_200_concurrent_taps_make_one_transition_and_one_token(
    make_quorum: QuorumFactory,
) -> None:
    data, ids = approvers_policy(200, {"required_approvals": 3})
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


async def test_a_storm_of_votes_renders_the_card_once_per_interval(
    make_quorum: QuorumFactory,
) -> None:
    data, ids = approvers_policy(20, {"required_approvals": 20, "reject_threshold": 20})
    h = await make_quorum(policy=data)
    await h.emu.add_chat(CHAT, "supergroup", title="platform", members=ids)
    req = await create(h, risk_level="critical")
    msg = await card(h, req["id"])
    card_version = "SELECT version FROM telegram_messages WHERE approval_id = $1"
    before = (await sql(h, card_version, uuid.UUID(req["id"])))[0]["version"]
    started = time.monotonic()

    async def one(uid: int) -> str:
        res = await h.emu.tap(CHAT, msg["message_id"], uid, button_text=APPROVE, wait=30)
        return str((res.get("answer") or {}).get("text"))

    texts = await asyncio.gather(*(one(uid) for uid in ids[:19]))
    assert all("recorded" in t for t in texts), texts
    # Every vote reaches the card, in a few coalesced renders rather than one per vote.
    await card_where(h, req["id"], lambda m: "19/20" in str(m["text"]))
    elapsed = time.monotonic() - started
    renders = (await sql(h, card_version, uuid.UUID(req["id"])))[0]["version"] - before
    assert 1 <= renders <= 2 + elapsed / CARD_REFRESH_SECONDS, (renders, elapsed)
    accepted = await sql(
        h,
        "SELECT detail FROM audit_log WHERE event = 'vote.accepted' AND approval_id = $1",
        uuid.UUID(req["id"]),
    )
    assert len(accepted) == 19
    assert {json.loads(r["detail"])["decision"] for r in accepted} == {"approve"}
