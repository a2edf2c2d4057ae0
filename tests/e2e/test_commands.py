"""/start and /help through the emulator: what the bot does, who the sender is, which team."""

from __future__ import annotations

import time
from typing import Any

from tests.support import ALICE, CAROL, CHAT, WEBHOOK_SECRET, Harness

UNKNOWN_CHAT = -1001000000999
ANONYMOUS_ADMIN = 1087968824  # Telegram's GroupAnonymousBot


async def answers(h: Harness, chat_id: int, needle: str) -> list[dict[str, Any]]:
    async def found() -> list[dict[str, Any]]:
        return [m for m in await h.bot_messages(chat_id) if needle in str(m["text"])]

    result: list[dict[str, Any]] = await h.wait_for(found)
    return result


async def test_start_in_team_chat(quorum: Harness) -> None:
    await quorum.emu.send_text(CHAT, ALICE, "/start")
    [msg] = await answers(quorum, CHAT, "Your Telegram id is 1001.")
    text = str(msg["text"])
    assert "Approve" in text and "Reject" in text
    assert "This chat belongs to team platform." in text
    # Rendered as HTML: the id is code-formatted and no raw tag leaks into the text.
    assert "<code>" not in text and "<b>" not in text
    assert any(e["type"] == "code" for e in msg.get("entities") or [])


async def test_help_for_a_non_approver(quorum: Harness) -> None:
    await quorum.emu.send_text(CHAT, CAROL, "/help")
    [msg] = await answers(quorum, CHAT, "Your Telegram id is 1003.")
    assert "/pending" in str(msg["text"])


async def test_help_addressed_to_this_bot_only(quorum: Harness) -> None:
    await quorum.emu.send_text(CHAT, ALICE, "/help@some_other_bot")
    await quorum.emu.send_text(CHAT, CAROL, "/help@quorum_test_bot")
    await answers(quorum, CHAT, "Your Telegram id is 1003.")
    await quorum.emu.send_text(CHAT, CAROL, "/start")
    await quorum.wait_for(
        lambda: _count(quorum, "Your Telegram id is 1003.", 2),
    )
    assert not [m for m in await quorum.bot_messages(CHAT) if "1001" in str(m["text"])]


async def _count(h: Harness, needle: str, n: int) -> bool:
    return len([m for m in await h.bot_messages(CHAT) if needle in str(m["text"])]) >= n


async def test_start_in_a_chat_outside_the_policy(quorum: Harness) -> None:
    await quorum.emu.add_chat(UNKNOWN_CHAT, "supergroup", title="random", members=[CAROL])
    await quorum.emu.send_text(UNKNOWN_CHAT, CAROL, "/start")
    [msg] = await answers(quorum, UNKNOWN_CHAT, "Your Telegram id is 1003.")
    text = str(msg["text"])
    assert f"This chat ({UNKNOWN_CHAT}) is not in the policy file yet." in text
    assert "belongs to team" not in text


async def test_anonymous_admin_is_not_taken_for_a_person(quorum: Harness) -> None:
    chat = {"id": CHAT, "type": "supergroup", "title": "platform"}
    await quorum.emu.inject_update(
        {
            "message": {
                "message_id": 777,
                "date": int(time.time()),
                "chat": chat,
                "sender_chat": chat,
                "from": {
                    "id": ANONYMOUS_ADMIN,
                    "is_bot": True,
                    "first_name": "Group",
                    "username": "GroupAnonymousBot",
                },
                "text": "/start",
                "entities": [{"type": "bot_command", "offset": 0, "length": 6}],
            }
        }
    )
    [msg] = await answers(quorum, CHAT, "anonymous admin")
    text = str(msg["text"])
    assert str(ANONYMOUS_ADMIN) not in text
    assert "Your Telegram id" not in text
    assert "This chat belongs to team platform." in text


async def test_unknown_button_gets_an_answer(quorum: Harness) -> None:
    """A tap whose callback_data no router knows still stops the client's spinner."""
    await quorum.emu.send_text(CHAT, ALICE, "/help")
    msgs = await quorum.wait_for(quorum.bot_messages)
    update = {
        "callback_query": {
            "id": "cq-unknown-1",
            "from": {"id": ALICE, "is_bot": False, "first_name": "Alice"},
            "chat_instance": "1",
            "data": "zz:not-ours",
            "message": {
                "message_id": msgs[0]["message_id"],
                "date": 0,
                "chat": {"id": CHAT, "type": "supergroup", "title": "platform"},
            },
        }
    }
    status, body = await quorum.api(
        "POST",
        "/telegram/webhook",
        {"update_id": 990001, **update},
        key=None,
        headers={"X-Telegram-Bot-Api-Secret-Token": WEBHOOK_SECRET},
    )
    assert status == 200
    assert body["method"] == "answerCallbackQuery"
    assert body["callback_query_id"] == "cq-unknown-1"
    assert "not valid" in body["text"]
