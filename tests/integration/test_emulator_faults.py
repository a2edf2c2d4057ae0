"""The emulator's injected faults, over real HTTP with a real aiogram Bot."""

from __future__ import annotations

import time
from typing import Any

import pytest
from aiogram import Bot
from aiogram.exceptions import (
    TelegramBadRequest,
    TelegramForbiddenError,
    TelegramMigrateToChat,
    TelegramNetworkError,
    TelegramRetryAfter,
    TelegramServerError,
)

from sandbox.emulator import EmulatorError
from tests.support import ALICE, BOT_ID, EMU_GROUP, Emu, keyboard, wait_until

# --------------------------------------------------------------------------- faults


async def test_fault_server_error(bot: Bot, fresh_emulator: Emu) -> None:
    _, emu = fresh_emulator
    await emu.add_fault("server_error", method="sendMessage")
    await emu.add_fault("server_error", method="sendMessage", status=502)
    with pytest.raises(TelegramServerError, match="Internal Server Error"):
        await bot.send_message(EMU_GROUP, "a")
    with pytest.raises(TelegramServerError, match="Bad Gateway"):
        await bot.send_message(EMU_GROUP, "b")
    await bot.send_message(EMU_GROUP, "c")
    assert [m["text"] for m in await emu.messages(EMU_GROUP)] == ["c"]
    calls = await emu.calls("sendMessage")
    assert [c["status"] for c in calls] == [500, 502, 200]


async def test_fault_after_and_chat_filter(bot: Bot, fresh_emulator: Emu) -> None:
    _, emu = fresh_emulator
    await emu.configure(enforce_limits=False)
    await emu.add_fault("server_error", method="sendMessage", chat_id=EMU_GROUP, after=2, count=2)
    await bot.get_me()
    await emu.start_bot(ALICE)
    await bot.send_message(ALICE, "other chat not matched")
    await bot.send_message(EMU_GROUP, "1")
    await bot.send_message(EMU_GROUP, "2")
    for _ in range(2):
        with pytest.raises(TelegramServerError):
            await bot.send_message(EMU_GROUP, "x")
    await bot.send_message(EMU_GROUP, "3")
    assert await emu.faults() == []


async def test_fault_timeout_creates_message(bot: Bot, fresh_emulator: Emu) -> None:
    _, emu = fresh_emulator
    await emu.add_fault("timeout", method="sendMessage", delay=3)
    started = time.monotonic()
    with pytest.raises(TelegramNetworkError, match="timeout"):
        await bot.send_message(EMU_GROUP, "unknown outcome", request_timeout=1)
    assert time.monotonic() - started < 2.5
    assert [m["text"] for m in await emu.messages(EMU_GROUP)] == ["unknown outcome"]


async def test_fault_hold_carries_out_a_call_only_if_its_client_stays(
    bot: Bot, fresh_emulator: Emu
) -> None:
    _, emu = fresh_emulator
    # A client that gives up while the call is held: it never reaches the chat.
    await emu.add_fault("hold", method="sendMessage", delay=30)
    with pytest.raises(TelegramNetworkError, match="timeout"):
        await bot.send_message(EMU_GROUP, "never sent", request_timeout=1)

    async def dropped() -> list[dict[str, Any]]:
        return [c for c in await emu.calls("sendMessage") if c["status"] == 0]

    [call] = await wait_until(dropped, 5, what="the held call dropped")
    assert call["description"] == "client gone while held"
    assert await emu.messages(EMU_GROUP) == []
    # A client that waits: carried out once the hold is over, and answered.
    await emu.add_fault("hold", method="sendMessage", delay=0.3)
    sent = await bot.send_message(EMU_GROUP, "held, then sent", request_timeout=5)
    assert [m["text"] for m in await emu.messages(EMU_GROUP)] == ["held, then sent"]
    assert sent.text == "held, then sent"


async def test_fault_reset(bot: Bot, fresh_emulator: Emu) -> None:
    _, emu = fresh_emulator
    await emu.add_fault("reset", method="sendMessage")
    with pytest.raises(TelegramNetworkError):
        await bot.send_message(EMU_GROUP, "dropped")
    assert await emu.messages(EMU_GROUP) == []
    await bot.send_message(EMU_GROUP, "fine")


async def test_fault_kicked(bot: Bot, fresh_emulator: Emu) -> None:
    _, emu = fresh_emulator
    await emu.add_fault("kicked", method="sendMessage", chat_id=EMU_GROUP)
    with pytest.raises(TelegramForbiddenError, match="bot was kicked from the group chat"):
        await bot.send_message(EMU_GROUP, "a")
    with pytest.raises(TelegramForbiddenError, match="kicked"):
        await bot.send_message(EMU_GROUP, "b")  # the chat stays kicked
    assert (await emu.chat(EMU_GROUP))["bot_status"] == {str(BOT_ID): "kicked"}
    await emu.add_chat(-100777, "supergroup", title="SG")
    await emu.add_fault("kicked", chat_id=-100777)
    with pytest.raises(TelegramForbiddenError, match="not a member of the supergroup chat"):
        await bot.send_message(-100777, "c")


async def test_fault_migrate(bot: Bot, fresh_emulator: Emu) -> None:
    _, emu = fresh_emulator
    await emu.add_fault("migrate", method="sendMessage", chat_id=EMU_GROUP)
    with pytest.raises(TelegramMigrateToChat) as exc:
        await bot.send_message(EMU_GROUP, "a")
    new_id = exc.value.migrate_to_chat_id
    assert str(new_id).startswith("-100")
    assert new_id != EMU_GROUP
    with pytest.raises(TelegramMigrateToChat) as exc2:
        await bot.send_message(EMU_GROUP, "still migrated")
    assert exc2.value.migrate_to_chat_id == new_id
    msg = await bot.send_message(new_id, "moved")
    assert msg.chat.type == "supergroup"
    assert msg.chat.title == "Ops"
    updates = await bot.get_updates()
    service = [u.message for u in updates if u.message]
    assert service[0].migrate_to_chat_id == new_id
    assert service[1].migrate_from_chat_id == EMU_GROUP


async def test_fault_not_modified_not_found_and_bad_request(bot: Bot, fresh_emulator: Emu) -> None:
    _, emu = fresh_emulator
    await emu.configure(enforce_limits=False)
    msg = await bot.send_message(EMU_GROUP, "card")
    await emu.add_fault("not_modified", method="editMessageText")
    await emu.add_fault("not_found", method="editMessageText")
    await emu.add_fault("bad_request", method="editMessageText", description="custom thing")
    await emu.add_fault("too_many_requests", method="editMessageText", retry_after=7)
    with pytest.raises(TelegramBadRequest, match="message is not modified"):
        await bot.edit_message_text("new", chat_id=EMU_GROUP, message_id=msg.message_id)
    with pytest.raises(TelegramBadRequest, match="message to edit not found"):
        await bot.edit_message_text("new", chat_id=EMU_GROUP, message_id=msg.message_id)
    with pytest.raises(TelegramBadRequest, match="Bad Request: custom thing"):
        await bot.edit_message_text("new", chat_id=EMU_GROUP, message_id=msg.message_id)
    with pytest.raises(TelegramRetryAfter) as exc:
        await bot.edit_message_text("new", chat_id=EMU_GROUP, message_id=msg.message_id)
    assert exc.value.retry_after == 7
    await bot.edit_message_text("new", chat_id=EMU_GROUP, message_id=msg.message_id)
    assert (await emu.messages(EMU_GROUP))[0]["text"] == "new"


async def test_fault_callback_too_old(bot: Bot, fresh_emulator: Emu) -> None:
    _, emu = fresh_emulator
    msg = await bot.send_message(EMU_GROUP, "card", reply_markup=keyboard(("Approve", "ap:1")))
    tap = await emu.tap(EMU_GROUP, msg.message_id, ALICE, callback_data="ap:1")
    await emu.add_fault("callback_too_old")
    with pytest.raises(TelegramBadRequest, match="query is too old"):
        await bot.answer_callback_query(tap["callback_query_id"], text="late")
    assert (await emu.callback_answer(tap["callback_query_id"]))["answered"] is False
    assert await bot.answer_callback_query(tap["callback_query_id"], text="ok") is True
    with pytest.raises(TelegramBadRequest, match="query is too old"):
        await bot.answer_callback_query(tap["callback_query_id"], text="twice")
    with pytest.raises(TelegramBadRequest, match="query is too old"):
        await bot.answer_callback_query("nonexistent")


async def test_bad_fault_kind_rejected(fresh_emulator: Emu) -> None:
    _, emu = fresh_emulator
    with pytest.raises(EmulatorError) as exc:
        await emu.add_fault("meteor")
    assert exc.value.status == 400
