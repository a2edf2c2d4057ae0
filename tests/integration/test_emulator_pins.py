"""The emulator's pinChatMessage and unpinChatMessage, over real HTTP with a real aiogram Bot."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiogram import Bot
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.exceptions import TelegramBadRequest, TelegramForbiddenError

from sandbox.emulator import EmulatorClient
from tests.support import ALICE, BOT_ID, EMU_GROUP, EMU_TOKEN

NO_RIGHTS = "not enough rights to manage pinned messages in the chat"


@pytest.fixture
async def bot(emulator_url: str, emu: EmulatorClient) -> AsyncIterator[Bot]:
    await emu.add_bot(EMU_TOKEN, username="pin_bot", first_name="Pin")
    await emu.add_user(ALICE, "Alice", username="alice")
    await emu.add_chat(EMU_GROUP, "supergroup", title="Ops", members=[ALICE])
    tg = Bot(EMU_TOKEN, session=AiohttpSession(api=TelegramAPIServer.from_base(emulator_url)))
    try:
        yield tg
    finally:
        await tg.session.close()


async def test_a_member_bot_may_not_pin_in_a_group(bot: Bot, emu: EmulatorClient) -> None:
    sent = await bot.send_message(EMU_GROUP, "card")
    with pytest.raises(TelegramBadRequest, match=NO_RIGHTS):
        await bot.pin_chat_message(EMU_GROUP, sent.message_id)
    with pytest.raises(TelegramBadRequest, match=NO_RIGHTS):
        await bot.unpin_chat_message(EMU_GROUP, message_id=sent.message_id)
    await emu.promote(EMU_GROUP, can_pin_messages=False)
    with pytest.raises(TelegramBadRequest, match=NO_RIGHTS):
        await bot.pin_chat_message(EMU_GROUP, sent.message_id)
    assert (await emu.chat(EMU_GROUP))["pinned"] == []


async def test_an_administrator_pins_and_unpins(bot: Bot, emu: EmulatorClient) -> None:
    first = await bot.send_message(EMU_GROUP, "first")
    second = await bot.send_message(EMU_GROUP, "second")
    (update_id,) = await emu.promote(EMU_GROUP, by_user_id=ALICE)
    assert update_id > 0
    # An administrator still gets the chat's messages, and sees its promotion.
    sent = await emu.send_text(EMU_GROUP, ALICE, "/status")
    updates = await bot.get_updates()
    member = updates[0].my_chat_member
    assert member is not None and member.new_chat_member.status == "administrator"
    assert [u.update_id for u in updates] == [update_id, sent["update_id"]]
    assert await bot.pin_chat_message(EMU_GROUP, first.message_id, disable_notification=True)
    assert await bot.pin_chat_message(EMU_GROUP, second.message_id)
    assert (await emu.chat(EMU_GROUP))["pinned"] == [first.message_id, second.message_id]
    # Each pin leaves a service message from the bot naming the pinned message.
    service = [m for m in await emu.messages(EMU_GROUP) if "pinned_message" in m]
    assert [m["pinned_message"]["message_id"] for m in service] == [
        first.message_id,
        second.message_id,
    ]
    assert all(m["from_id"] == BOT_ID and m["text"] is None for m in service)
    assert await bot.unpin_chat_message(EMU_GROUP, message_id=first.message_id)
    assert (await emu.chat(EMU_GROUP))["pinned"] == [second.message_id]
    assert await bot.unpin_chat_message(EMU_GROUP)  # no id: the most recent pin
    assert (await emu.chat(EMU_GROUP))["pinned"] == []
    assert await bot.unpin_chat_message(EMU_GROUP, message_id=first.message_id)  # not pinned: ok


async def test_pinning_a_missing_message_or_in_a_lost_chat_fails(
    bot: Bot, emu: EmulatorClient
) -> None:
    await emu.promote(EMU_GROUP)
    with pytest.raises(TelegramBadRequest, match="message to pin not found"):
        await bot.pin_chat_message(EMU_GROUP, 999)
    with pytest.raises(TelegramBadRequest, match="message to unpin not found"):
        await bot.unpin_chat_message(EMU_GROUP, message_id=999)
    sent = await bot.send_message(EMU_GROUP, "card")
    await emu.kick(EMU_GROUP)
    with pytest.raises(TelegramForbiddenError):
        await bot.pin_chat_message(EMU_GROUP, sent.message_id)
    await emu.add_back(EMU_GROUP)
    # Added back as a plain member: the administrator rights are gone.
    with pytest.raises(TelegramBadRequest, match=NO_RIGHTS):
        await bot.pin_chat_message(EMU_GROUP, sent.message_id)
