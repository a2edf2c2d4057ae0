"""Helpers for end-to-end approval tests: create a request, find its card, tap, query SQL."""

from __future__ import annotations

from typing import Any

from tests.support import ALICE, CHAT, Harness
from tests.support import db_rows as sql

APPROVE, REJECT = "✅ Approve", "❌ Reject"


def body(**over: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "action": "restart deployment",
        "target": "prod/api",
        "risk_level": "low",
        "requested_by": "ci",
    }
    data.update(over)
    return data


async def create(h: Harness, **over: Any) -> dict[str, Any]:
    status, data = await h.api("POST", "/api/v1/approvals", body(**over))
    assert status == 201, data
    created: dict[str, Any] = data
    return created


async def card(h: Harness, request_id: str, chat: int = CHAT) -> dict[str, Any]:
    """The request's card as the emulator shows it in `chat`."""

    async def find() -> dict[str, Any] | None:
        for m in await h.bot_messages(chat):
            if request_id in str(m["text"]):
                return m
        return None

    found: dict[str, Any] = await h.wait_for(find)
    return found


async def card_where(
    h: Harness, request_id: str, predicate: Any, chat: int = CHAT
) -> dict[str, Any]:
    async def find() -> dict[str, Any] | None:
        m = await card(h, request_id, chat)
        return m if predicate(m) else None

    found: dict[str, Any] = await h.wait_for(find)
    return found


async def tap(
    h: Harness, msg: dict[str, Any], user: int, button: str = APPROVE, chat: int = CHAT
) -> dict[str, Any]:
    res = await h.emu.tap(chat, msg["message_id"], user, button_text=button, wait=5)
    answer = res.get("answer")
    assert answer is not None, res
    return answer


async def audit_events(h: Harness, request_id: str | None = None) -> list[str]:
    if request_id is None:
        rows = await sql(h, "SELECT event FROM audit_log ORDER BY id")
    else:
        rows = await sql(
            h, "SELECT event FROM audit_log WHERE approval_id = $1::uuid ORDER BY id", request_id
        )
    return [r["event"] for r in rows]


async def audit_events_with(h: Harness, request_id: str, event: str) -> list[str] | None:
    events = await audit_events(h, request_id)
    return events if event in events else None


async def all_sealed(h: Harness) -> None:
    """Seal until no audit row waits (another database's open transaction on the same server
    can hold the cluster-wide xmin, and so the sealer, back a moment)."""
    from bot.audit.sealer import seal_all

    async def done() -> bool:
        await seal_all(h.app.runtime.sessions)
        rows = await sql(h, "SELECT count(*) AS n FROM audit_log WHERE seq IS NULL")
        return bool(rows[0]["n"] == 0)

    await h.wait_for(done)


async def approved(h: Harness) -> tuple[str, str]:
    """An approved request's id and its token, approved by ALICE's tap on the card."""
    req = await create(h)
    answer = await tap(h, await card(h, req["id"]), ALICE)
    assert "Approved" in answer["text"], answer
    status, got = await h.api("GET", f"/api/v1/approvals/{req['id']}")
    assert status == 200 and got["status"] == "approved", got
    return req["id"], got["approval_token"]


__all__ = [
    "APPROVE",
    "REJECT",
    "all_sealed",
    "approved",
    "audit_events",
    "audit_events_with",
    "body",
    "card",
    "card_where",
    "create",
    "sql",
    "tap",
]


async def answer_question(
    h: Harness, chat: int, question: dict[str, Any], user: int, text: str
) -> None:
    """`user` replies `text` to the bot's ForceReply `question` in `chat`, once Quorum has
    recorded the question as sent. Telegram shows a message before its sendMessage answer
    reaches the bot, and a reply in that gap finds no question (a person cannot type that
    fast; a test on a loaded machine can)."""

    async def recorded() -> bool:
        rows = await sql(
            h,
            "SELECT 1 FROM telegram_messages WHERE chat_id = $1 AND message_id = $2",
            chat,
            question["message_id"],
        )
        return bool(rows)

    await h.wait_for(recorded)
    await h.emu.reply(chat, question["message_id"], user, text)
