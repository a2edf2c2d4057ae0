"""Durable inbound updates: secret check, dedupe, storage before the 200, chat lifecycle."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select

from handlers.webhook import SECRET_HEADER, WEBHOOK_PATH
from storage.models import AuditEntry, Chat, InboundUpdate
from tests.support import ALICE, CHAT, WEBHOOK_SECRET, Harness, QuorumFactory

BOT_USER = {"id": 123456789, "is_bot": True, "first_name": "Quorum", "username": "quorum_test_bot"}
GROUP = {"id": CHAT, "type": "supergroup", "title": "platform"}


def start_update(update_id: int) -> dict[str, Any]:
    return {
        "update_id": update_id,
        "message": {
            "message_id": 10,
            "date": 1700000000,
            "chat": GROUP,
            "from": {"id": ALICE, "is_bot": False, "first_name": "Alice"},
            "text": "/start",
            "entities": [{"type": "bot_command", "offset": 0, "length": 6}],
        },
    }


def member_update(update_id: int, old: str, new: str) -> dict[str, Any]:
    def member(status: str) -> dict[str, Any]:
        out: dict[str, Any] = {"status": status, "user": BOT_USER}
        if status == "kicked":
            out["until_date"] = 0
        return out

    return {
        "update_id": update_id,
        "my_chat_member": {
            "chat": GROUP,
            "from": {"id": ALICE, "is_bot": False, "first_name": "Alice"},
            "date": 1700000000,
            "old_chat_member": member(old),
            "new_chat_member": member(new),
        },
    }


async def post(h: Harness, body: Any, secret: str | None = WEBHOOK_SECRET) -> int:
    headers = {} if secret is None else {SECRET_HEADER: secret}
    async with h.http.post(h.url + WEBHOOK_PATH, json=body, headers=headers) as resp:
        return resp.status


async def stored(h: Harness) -> int:
    async with h.app.runtime.sessions() as s:
        return int(await s.scalar(select(func.count()).select_from(InboundUpdate)) or 0)


async def chat_active(h: Harness, chat_id: int = CHAT) -> bool | None:
    async with h.app.runtime.sessions() as s:
        chat = await s.get(Chat, chat_id)
        return None if chat is None else chat.active


async def test_forged_webhooks_are_refused_and_store_nothing(make_quorum: QuorumFactory) -> None:
    h = await make_quorum()
    same_length = "x" * len(WEBHOOK_SECRET)
    for secret in (None, "wrong", same_length, WEBHOOK_SECRET + "x", ""):
        assert await post(h, start_update(1), secret) == 401
    # Refused before the body is read: even garbage gets a 401.
    async with h.http.post(h.url + WEBHOOK_PATH, data=b"\xff{", headers={}) as resp:
        assert resp.status == 401
    assert await stored(h) == 0
    assert await h.bot_messages() == []
    assert h.app.runtime.metrics.registry.get_sample_value("quorum_webhook_rejected_total") == 6


async def test_duplicate_delivery_is_handled_once(make_quorum: QuorumFactory) -> None:
    h = await make_quorum()
    assert await post(h, start_update(77)) == 200
    assert await post(h, start_update(77)) == 200
    await h.app.runtime.redis.flushdb()  # the fast path forgotten: PostgreSQL still decides
    assert await post(h, start_update(77)) == 200

    async def replies() -> list[dict[str, Any]]:
        return [m for m in await h.bot_messages() if "1001" in str(m["text"])]

    await h.wait_for(replies)
    assert await stored(h) == 1
    assert len(await replies()) == 1
    assert h.app.runtime.metrics.registry.get_sample_value("quorum_updates_deduplicated_total") == 2


async def test_membership_updates_deactivate_and_reactivate(make_quorum: QuorumFactory) -> None:
    h = await make_quorum()
    assert await post(h, member_update(5, "member", "kicked")) == 200
    assert await chat_active(h) is False
    assert await post(h, member_update(6, "kicked", "member")) == 200
    assert await chat_active(h) is True
    async with h.app.runtime.sessions() as s:
        events = list(await s.scalars(select(AuditEntry.event).order_by(AuditEntry.id)))
    assert events == ["chat.deactivated", "chat.reactivated"]


async def test_migration_service_messages_move_the_chat(make_quorum: QuorumFactory) -> None:
    h = await make_quorum()
    new_id = -1001000000999
    base = {"date": 1700000000, "from": {"id": ALICE, "is_bot": False, "first_name": "Alice"}}
    to_msg = {"message_id": 11, "chat": GROUP, "migrate_to_chat_id": new_id, **base}
    new_chat = {"id": new_id, "type": "supergroup", "title": "platform"}
    from_msg = {"message_id": 1, "chat": new_chat, "migrate_from_chat_id": CHAT, **base}
    assert await post(h, {"update_id": 8, "message": to_msg}) == 200
    assert await post(h, {"update_id": 9, "message": from_msg}) == 200
    async with h.app.runtime.sessions() as s:
        old = await s.get(Chat, CHAT)
        new = await s.get(Chat, new_id)
        assert old is not None and old.migrated_to == new_id
        assert new is not None and new.team_id == old.team_id
        events = list(await s.scalars(select(AuditEntry.event)))
    assert events == ["chat.migrated"]


async def test_polling_stores_then_acknowledges(make_quorum: QuorumFactory) -> None:
    h = await make_quorum(mode="polling")
    await h.emu.send_text(CHAT, ALICE, "/start")
    await h.emu.kick(CHAT, by_user_id=ALICE)

    async def handled() -> bool:
        return await stored(h) == 2 and await chat_active(h) is False

    await h.wait_for(handled)

    async def acknowledged() -> bool:
        return bool((await h.emu.stats())["pending_updates"] == 0)

    await h.wait_for(acknowledged)
