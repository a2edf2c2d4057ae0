"""The emulator's message and rate limits, over real HTTP with a real aiogram Bot."""

from __future__ import annotations

import aiohttp
import pytest
from aiogram import Bot
from aiogram.exceptions import (
    TelegramBadRequest,
    TelegramRetryAfter,
)
from aiogram.types import InlineKeyboardButton, InlineKeyboardMarkup

from sandbox.emulator import Limits, TelegramEmulator
from tests.support import ALICE, EMU_GROUP, EMU_TOKEN, Emu, ShiftedClock, keyboard

# --------------------------------------------------------------------------- message limits


async def test_callback_data_byte_limit(bot: Bot, fresh_emulator: Emu) -> None:
    _, emu = fresh_emulator
    ok = "é" * 32  # 64 bytes in UTF-8
    await bot.send_message(EMU_GROUP, "ok", reply_markup=keyboard(("A", ok)))
    with pytest.raises(TelegramBadRequest, match="BUTTON_DATA_INVALID"):
        await bot.send_message(EMU_GROUP, "too long", reply_markup=keyboard(("A", ok + "a")))
    with pytest.raises(TelegramBadRequest, match="BUTTON_DATA_INVALID"):
        await bot.send_message(EMU_GROUP, "empty", reply_markup=keyboard(("A", "")))
    with pytest.raises(TelegramBadRequest, match="Text buttons are unallowed"):
        await bot.send_message(
            EMU_GROUP,
            "no action",
            reply_markup=InlineKeyboardMarkup(inline_keyboard=[[InlineKeyboardButton(text="x")]]),
        )
    assert [m["text"] for m in await emu.messages(EMU_GROUP)] == ["ok"]


async def test_text_length_limits(bot: Bot, fresh_emulator: Emu) -> None:
    _, emu = fresh_emulator
    await emu.configure(enforce_limits=False)
    await bot.send_message(EMU_GROUP, "x" * 4096)
    with pytest.raises(TelegramBadRequest, match="message is too long"):
        await bot.send_message(EMU_GROUP, "x" * 4097)
    with pytest.raises(TelegramBadRequest, match="message text is empty"):
        await bot.send_message(EMU_GROUP, "   ")
    # Counted after entity parsing: 4096 "&lt;" is 4096 characters.
    await bot.send_message(EMU_GROUP, "&lt;" * 4096, parse_mode="HTML")
    with pytest.raises(TelegramBadRequest, match="message is too long"):
        await bot.send_message(EMU_GROUP, "<b>" + "&amp;" * 4097 + "</b>", parse_mode="HTML")
    with pytest.raises(TelegramBadRequest, match="message text is empty"):
        await bot.send_message(EMU_GROUP, "<b></b>", parse_mode="HTML")
    texts = [m["text"] for m in await emu.messages(EMU_GROUP)]
    assert texts == ["x" * 4096, "<" * 4096]


async def test_html_validation(bot: Bot) -> None:
    msg = await bot.send_message(
        EMU_GROUP,
        '<b>95%</b> used &amp; rising <a href="https://x.example/?a=1&amp;b=2">link</a> 😀<i>i</i>',
        parse_mode="HTML",
    )
    assert msg.text == "95% used & rising link 😀i"
    assert msg.entities is not None
    kinds = [(e.type, e.offset, e.length) for e in msg.entities]
    # The emoji is 2 UTF-16 units, so <i> starts at 25.
    assert kinds == [("bold", 0, 3), ("text_link", 18, 4), ("italic", 25, 1)]
    assert msg.entities[1].url == "https://x.example/?a=1&b=2"
    for bad in ("<b>unclosed", "<b>x</i>", "<foo>x</foo>", "x </b>", "a < b", "<span>x</span>"):
        with pytest.raises(TelegramBadRequest, match="can't parse entities"):
            await bot.send_message(EMU_GROUP, bad, parse_mode="HTML")
    await bot.send_message(
        EMU_GROUP, '<span class="tg-spoiler">s</span> &#60;&#x3e;', parse_mode="HTML"
    )


# --------------------------------------------------------------------------- rate limits


async def test_per_chat_rate_limit(bot: Bot, fresh_emulator: Emu, clock: ShiftedClock) -> None:
    _, emu = fresh_emulator
    for i in range(3):  # burst of 3
        await bot.send_message(EMU_GROUP, f"m{i}")
    with pytest.raises(TelegramRetryAfter) as exc:
        await bot.send_message(EMU_GROUP, "over")
    assert exc.value.retry_after == 1
    with pytest.raises(TelegramRetryAfter):
        await bot.send_message(EMU_GROUP, "over again")
    # Refused calls consume nothing: 1 s later exactly one more send fits.
    clock.advance(1.05)
    await bot.send_message(EMU_GROUP, "after wait")
    with pytest.raises(TelegramRetryAfter):
        await bot.send_message(EMU_GROUP, "over once more")
    stats = await emu.stats()
    assert stats["too_many_requests_total"] == 3
    assert stats["too_many_requests_by_chat"] == {str(EMU_GROUP): 3}
    assert stats["sends_by_chat"][str(EMU_GROUP)] == 4
    assert len(await emu.messages(EMU_GROUP)) == 4
    # Another chat has its own budget; answerCallbackQuery/getters are not limited.
    await emu.start_bot(ALICE)
    await bot.send_message(ALICE, "private")
    for _ in range(10):
        await bot.get_chat(EMU_GROUP)


async def test_group_per_minute_limit(bot: Bot, fresh_emulator: Emu, clock: ShiftedClock) -> None:
    _, emu = fresh_emulator
    await emu.configure(
        limits={"per_chat_burst": 100, "per_chat_per_second": 100, "per_group_per_minute": 5}
    )
    for i in range(5):
        await bot.send_message(EMU_GROUP, f"m{i}")
    with pytest.raises(TelegramRetryAfter) as exc:
        await bot.send_message(EMU_GROUP, "sixth")
    assert 55 <= exc.value.retry_after <= 60
    # Private chats have no per-minute window.
    await emu.start_bot(ALICE)
    for i in range(6):
        await bot.send_message(ALICE, f"p{i}")
    # Short window for a quick recovery check.
    await emu.configure(limits={"group_window_seconds": 0.5})
    for i in range(5):
        await bot.send_message(EMU_GROUP, f"w{i}")
    with pytest.raises(TelegramRetryAfter) as exc:
        await bot.send_message(EMU_GROUP, "w5")
    assert exc.value.retry_after == 1
    clock.advance(0.55)
    await bot.send_message(EMU_GROUP, "w after window")


async def test_bot_wide_rate_limit(bot: Bot, fresh_emulator: Emu, clock: ShiftedClock) -> None:
    _, emu = fresh_emulator
    await emu.configure(limits={"per_bot_per_second": 5})
    chats = list(range(5001, 5008))
    await bot.get_me()
    for cid in chats:
        await emu.add_user(cid, f"U{cid}")
        await emu.start_bot(cid)
    for cid in chats[:5]:
        await bot.send_message(cid, "hi")
    with pytest.raises(TelegramRetryAfter) as exc:
        await bot.send_message(chats[5], "hi")
    assert exc.value.retry_after == 1
    clock.advance(0.25)  # 5/s refills one token in 0.2 s
    await bot.send_message(chats[6], "hi")
    await emu.configure(limits={"per_bot_per_second": 30})
    for cid in chats:
        await bot.send_message(cid, "again")


async def test_edits_count_with_sends(bot: Bot, fresh_emulator: Emu) -> None:
    msg = await bot.send_message(EMU_GROUP, "v0", reply_markup=keyboard(("A", "a")))
    await bot.edit_message_text("v1", chat_id=EMU_GROUP, message_id=msg.message_id)
    await bot.edit_message_reply_markup(
        chat_id=EMU_GROUP, message_id=msg.message_id, reply_markup=keyboard(("B", "b"))
    )
    with pytest.raises(TelegramRetryAfter):
        await bot.edit_message_text("v2", chat_id=EMU_GROUP, message_id=msg.message_id)
    with pytest.raises(TelegramRetryAfter):
        await bot.send_message(EMU_GROUP, "blocked")
    # deleteMessage and answerCallbackQuery are not limited.
    await bot.delete_message(EMU_GROUP, msg.message_id)


async def test_limits_can_be_disabled(fresh_emulator: Emu) -> None:
    url, emu = fresh_emulator
    config = await emu.configure(enforce_limits=False)
    assert config["enforce_limits"] is False
    assert TelegramEmulator(limits=Limits(per_chat_burst=7)).limits.per_chat_burst == 7
    async with aiohttp.ClientSession() as session:
        for i in range(40):
            async with session.post(
                f"{url}/bot{EMU_TOKEN}/sendMessage", json={"chat_id": EMU_GROUP, "text": str(i)}
            ) as resp:
                assert resp.status == 200
    assert (await emu.stats())["too_many_requests_total"] == 0
