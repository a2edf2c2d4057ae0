"""Tests for the Telegram Bot API emulator, over real HTTP with a real aiogram Bot."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiogram import Bot
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.exceptions import (
    TelegramBadRequest,
    TelegramConflictError,
    TelegramForbiddenError,
    TelegramMigrateToChat,
    TelegramNetworkError,
    TelegramRetryAfter,
    TelegramServerError,
)
from aiogram.types import ForceReply, InlineKeyboardButton, InlineKeyboardMarkup, ReplyParameters
from aiohttp import web

from sandbox.emulator import EmulatorClient, EmulatorError, Limits, TelegramEmulator
from tests.support import wait_until

TOKEN = "123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsawq"
BOT_ID = 123456789
GROUP = -1001
ALICE = 1001
BOB = 1002

Emu = tuple[str, EmulatorClient]


class ShiftedClock:
    """time.monotonic plus an offset a test moves forward: budgets refill without waiting."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.monotonic() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds


@pytest.fixture
def clock() -> ShiftedClock:
    return ShiftedClock()


@pytest.fixture
async def emulator_url(clock: ShiftedClock) -> AsyncIterator[Emu]:
    """A fresh emulator on 127.0.0.1:<free port>, plus a control client."""
    emulator = TelegramEmulator(
        webhook_retry_base=0.05, callback_update_max_age=5.0, flood_clock=clock
    )
    url = await emulator.start()
    client = EmulatorClient(url)
    await client.add_user(ALICE, "Alice", username="alice")
    await client.add_user(BOB, "Bob")
    await client.add_chat(GROUP, "group", title="Ops", members=[ALICE, BOB])
    try:
        yield url, client
    finally:
        await client.close()
        await emulator.stop()


@pytest.fixture
async def bot(emulator_url: Emu) -> AsyncIterator[Bot]:
    url, _ = emulator_url
    session = AiohttpSession(api=TelegramAPIServer.from_base(url))
    tg = Bot(TOKEN, session=session)
    try:
        yield tg
    finally:
        await tg.session.close()


def keyboard(*pairs: tuple[str, str]) -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup(
        inline_keyboard=[[InlineKeyboardButton(text=t, callback_data=d) for t, d in pairs]]
    )


async def raw_call(url: str, path: str, **kwargs: Any) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as session, session.post(url + path, **kwargs) as resp:
        return resp.status, await resp.json(content_type=None)


Receiver = Callable[[web.Request], Awaitable[web.StreamResponse]]


@pytest.fixture
async def webhook_receiver() -> AsyncIterator[Callable[[Receiver], Awaitable[str]]]:
    runners: list[web.AppRunner] = []

    async def start(handler: Receiver) -> str:
        app = web.Application()
        app.router.add_post("/hook", handler)
        runner = web.AppRunner(app, shutdown_timeout=0.2)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        port = runner.addresses[0][1]
        return f"http://127.0.0.1:{port}/hook"

    try:
        yield start
    finally:
        for runner in runners:
            await runner.cleanup()


# --------------------------------------------------------------------------- basics


async def test_get_me_and_send_message_shape(bot: Bot, emulator_url: Emu) -> None:
    _, emu = emulator_url
    me = await bot.get_me()
    assert me.id == BOT_ID
    assert me.is_bot
    msg = await bot.send_message(GROUP, "hello", reply_markup=keyboard(("Approve", "a:1")))
    assert msg.message_id == 1
    assert msg.chat.id == GROUP
    assert msg.chat.type == "group"
    assert msg.chat.title == "Ops"
    assert msg.from_user is not None
    assert msg.from_user.id == BOT_ID
    assert msg.text == "hello"
    assert msg.reply_markup is not None
    assert msg.reply_markup.inline_keyboard[0][0].callback_data == "a:1"
    second = await bot.send_message(GROUP, "again")
    assert second.message_id == 2
    stored = await emu.messages(GROUP)
    assert [m["text"] for m in stored] == ["hello", "again"]
    assert stored[0]["from_id"] == BOT_ID


async def test_token_shapes_and_unknown_method(emulator_url: Emu) -> None:
    url, emu = emulator_url
    status, body = await raw_call(url, "/botnotatoken/getMe")
    assert status == 404
    assert body == {"ok": False, "error_code": 404, "description": "Not Found"}
    status, body = await raw_call(url, "/bot42:short/getMe")
    assert status == 401
    assert body["description"] == "Unauthorized"
    status, body = await raw_call(url, f"/bot{TOKEN}/noSuchMethod")
    assert status == 404
    assert body["description"] == "Not Found"
    # Registering the real token makes another secret for the same bot id unknown.
    await emu.add_bot(TOKEN, username="quorum_bot")
    other = TOKEN.split(":")[0] + ":" + "B" * 35
    status, body = await raw_call(url, f"/bot{other}/getMe")
    assert status == 401
    status, body = await raw_call(url, f"/bot{TOKEN}/getme")
    assert status == 200
    assert body["result"]["username"] == "quorum_bot"


async def test_json_form_and_case_insensitive_method(emulator_url: Emu) -> None:
    url, emu = emulator_url
    markup = {"inline_keyboard": [[{"text": "Go", "callback_data": "go"}]]}
    status, body = await raw_call(
        url,
        f"/bot{TOKEN}/SENDMESSAGE",
        json={"chat_id": GROUP, "text": "json", "reply_markup": markup},
    )
    assert status == 200
    assert body["ok"] is True
    assert body["result"]["reply_markup"] == markup
    form = {"chat_id": str(GROUP), "text": "form", "reply_markup": json.dumps(markup)}
    status, body = await raw_call(url, f"/bot{TOKEN}/sendMessage", data=form)
    assert status == 200
    assert body["result"]["reply_markup"] == markup
    mp = aiohttp.FormData()
    mp.add_field("chat_id", str(GROUP))
    mp.add_field("text", "multipart")
    mp.add_field("dummy", b"x", filename="x.bin")
    status, body = await raw_call(url, f"/bot{TOKEN}/sendMessage", data=mp)
    assert status == 200
    assert body["result"]["text"] == "multipart"
    assert [m["text"] for m in await emu.messages(GROUP)] == ["json", "form", "multipart"]


async def test_send_to_unknown_chat(bot: Bot) -> None:
    with pytest.raises(TelegramBadRequest, match="chat not found"):
        await bot.send_message(-999, "x")


# --------------------------------------------------------------------------- message limits


async def test_callback_data_byte_limit(bot: Bot, emulator_url: Emu) -> None:
    _, emu = emulator_url
    ok = "é" * 32  # 64 bytes in UTF-8
    await bot.send_message(GROUP, "ok", reply_markup=keyboard(("A", ok)))
    with pytest.raises(TelegramBadRequest, match="BUTTON_DATA_INVALID"):
        await bot.send_message(GROUP, "too long", reply_markup=keyboard(("A", ok + "a")))
    with pytest.raises(TelegramBadRequest, match="BUTTON_DATA_INVALID"):
        await bot.send_message(GROUP, "empty", reply_markup=keyboard(("A", "")))
    with pytest.raises(TelegramBadRequest, match="Text buttons are unallowed"):
        await bot.send_message(
            GROUP,
            "no action",
            reply_markup=InlineKeyboardMarkup(inline_keyboard=[[InlineKeyboardButton(text="x")]]),
        )
    assert [m["text"] for m in await emu.messages(GROUP)] == ["ok"]


async def test_text_length_limits(bot: Bot, emulator_url: Emu) -> None:
    _, emu = emulator_url
    await emu.configure(enforce_limits=False)
    await bot.send_message(GROUP, "x" * 4096)
    with pytest.raises(TelegramBadRequest, match="message is too long"):
        await bot.send_message(GROUP, "x" * 4097)
    with pytest.raises(TelegramBadRequest, match="message text is empty"):
        await bot.send_message(GROUP, "   ")
    # Counted after entity parsing: 4096 "&lt;" is 4096 characters.
    await bot.send_message(GROUP, "&lt;" * 4096, parse_mode="HTML")
    with pytest.raises(TelegramBadRequest, match="message is too long"):
        await bot.send_message(GROUP, "<b>" + "&amp;" * 4097 + "</b>", parse_mode="HTML")
    with pytest.raises(TelegramBadRequest, match="message text is empty"):
        await bot.send_message(GROUP, "<b></b>", parse_mode="HTML")
    texts = [m["text"] for m in await emu.messages(GROUP)]
    assert texts == ["x" * 4096, "<" * 4096]


async def test_html_validation(bot: Bot) -> None:
    msg = await bot.send_message(
        GROUP,
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
            await bot.send_message(GROUP, bad, parse_mode="HTML")
    await bot.send_message(
        GROUP, '<span class="tg-spoiler">s</span> &#60;&#x3e;', parse_mode="HTML"
    )


# --------------------------------------------------------------------------- rate limits


async def test_per_chat_rate_limit(bot: Bot, emulator_url: Emu, clock: ShiftedClock) -> None:
    _, emu = emulator_url
    for i in range(3):  # burst of 3
        await bot.send_message(GROUP, f"m{i}")
    with pytest.raises(TelegramRetryAfter) as exc:
        await bot.send_message(GROUP, "over")
    assert exc.value.retry_after == 1
    with pytest.raises(TelegramRetryAfter):
        await bot.send_message(GROUP, "over again")
    # Refused calls consume nothing: 1 s later exactly one more send fits.
    clock.advance(1.05)
    await bot.send_message(GROUP, "after wait")
    with pytest.raises(TelegramRetryAfter):
        await bot.send_message(GROUP, "over once more")
    stats = await emu.stats()
    assert stats["too_many_requests_total"] == 3
    assert stats["too_many_requests_by_chat"] == {str(GROUP): 3}
    assert stats["sends_by_chat"][str(GROUP)] == 4
    assert len(await emu.messages(GROUP)) == 4
    # Another chat has its own budget; answerCallbackQuery/getters are not limited.
    await emu.start_bot(ALICE)
    await bot.send_message(ALICE, "private")
    for _ in range(10):
        await bot.get_chat(GROUP)


async def test_group_per_minute_limit(bot: Bot, emulator_url: Emu, clock: ShiftedClock) -> None:
    _, emu = emulator_url
    await emu.configure(
        limits={"per_chat_burst": 100, "per_chat_per_second": 100, "per_group_per_minute": 5}
    )
    for i in range(5):
        await bot.send_message(GROUP, f"m{i}")
    with pytest.raises(TelegramRetryAfter) as exc:
        await bot.send_message(GROUP, "sixth")
    assert 55 <= exc.value.retry_after <= 60
    # Private chats have no per-minute window.
    await emu.start_bot(ALICE)
    for i in range(6):
        await bot.send_message(ALICE, f"p{i}")
    # Short window for a quick recovery check.
    await emu.configure(limits={"group_window_seconds": 0.5})
    for i in range(5):
        await bot.send_message(GROUP, f"w{i}")
    with pytest.raises(TelegramRetryAfter) as exc:
        await bot.send_message(GROUP, "w5")
    assert exc.value.retry_after == 1
    clock.advance(0.55)
    await bot.send_message(GROUP, "w after window")


async def test_bot_wide_rate_limit(bot: Bot, emulator_url: Emu, clock: ShiftedClock) -> None:
    _, emu = emulator_url
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


async def test_edits_count_with_sends(bot: Bot, emulator_url: Emu) -> None:
    msg = await bot.send_message(GROUP, "v0", reply_markup=keyboard(("A", "a")))
    await bot.edit_message_text("v1", chat_id=GROUP, message_id=msg.message_id)
    await bot.edit_message_reply_markup(
        chat_id=GROUP, message_id=msg.message_id, reply_markup=keyboard(("B", "b"))
    )
    with pytest.raises(TelegramRetryAfter):
        await bot.edit_message_text("v2", chat_id=GROUP, message_id=msg.message_id)
    with pytest.raises(TelegramRetryAfter):
        await bot.send_message(GROUP, "blocked")
    # deleteMessage and answerCallbackQuery are not limited.
    await bot.delete_message(GROUP, msg.message_id)


async def test_limits_can_be_disabled(emulator_url: Emu) -> None:
    url, emu = emulator_url
    config = await emu.configure(enforce_limits=False)
    assert config["enforce_limits"] is False
    assert TelegramEmulator(limits=Limits(per_chat_burst=7)).limits.per_chat_burst == 7
    async with aiohttp.ClientSession() as session:
        for i in range(40):
            async with session.post(
                f"{url}/bot{TOKEN}/sendMessage", json={"chat_id": GROUP, "text": str(i)}
            ) as resp:
                assert resp.status == 200
    assert (await emu.stats())["too_many_requests_total"] == 0


# --------------------------------------------------------------------------- edits and deletes


async def test_edit_not_modified_and_not_found(bot: Bot, emulator_url: Emu) -> None:
    _, emu = emulator_url
    await emu.configure(enforce_limits=False)
    kb = keyboard(("A", "a"))
    msg = await bot.send_message(GROUP, "card", reply_markup=kb)
    with pytest.raises(TelegramBadRequest, match="message is not modified"):
        await bot.edit_message_text(
            "card", chat_id=GROUP, message_id=msg.message_id, reply_markup=kb
        )
    edited = await bot.edit_message_text("card", chat_id=GROUP, message_id=msg.message_id)
    assert not isinstance(edited, bool)
    assert edited.reply_markup is None
    assert edited.edit_date is not None
    with pytest.raises(TelegramBadRequest, match="message is not modified"):
        await bot.edit_message_reply_markup(chat_id=GROUP, message_id=msg.message_id)
    with pytest.raises(TelegramBadRequest, match="message to edit not found"):
        await bot.edit_message_text("x", chat_id=GROUP, message_id=999)
    assert await bot.delete_message(GROUP, msg.message_id) is True
    with pytest.raises(TelegramBadRequest, match="message to delete not found"):
        await bot.delete_message(GROUP, msg.message_id)
    with pytest.raises(TelegramBadRequest, match="message to edit not found"):
        await bot.edit_message_text("y", chat_id=GROUP, message_id=msg.message_id)
    [stored] = await emu.messages(GROUP)
    assert stored["deleted"] is True
    assert stored["edits"] == 1
    assert await bot.edit_message_text("inline", inline_message_id="abc") is True


# --------------------------------------------------------------------------- faults


async def test_fault_server_error(bot: Bot, emulator_url: Emu) -> None:
    _, emu = emulator_url
    await emu.add_fault("server_error", method="sendMessage")
    await emu.add_fault("server_error", method="sendMessage", status=502)
    with pytest.raises(TelegramServerError, match="Internal Server Error"):
        await bot.send_message(GROUP, "a")
    with pytest.raises(TelegramServerError, match="Bad Gateway"):
        await bot.send_message(GROUP, "b")
    await bot.send_message(GROUP, "c")
    assert [m["text"] for m in await emu.messages(GROUP)] == ["c"]
    calls = await emu.calls("sendMessage")
    assert [c["status"] for c in calls] == [500, 502, 200]


async def test_fault_after_and_chat_filter(bot: Bot, emulator_url: Emu) -> None:
    _, emu = emulator_url
    await emu.configure(enforce_limits=False)
    await emu.add_fault("server_error", method="sendMessage", chat_id=GROUP, after=2, count=2)
    await bot.get_me()
    await emu.start_bot(ALICE)
    await bot.send_message(ALICE, "other chat not matched")
    await bot.send_message(GROUP, "1")
    await bot.send_message(GROUP, "2")
    for _ in range(2):
        with pytest.raises(TelegramServerError):
            await bot.send_message(GROUP, "x")
    await bot.send_message(GROUP, "3")
    assert await emu.faults() == []


async def test_fault_timeout_creates_message(bot: Bot, emulator_url: Emu) -> None:
    _, emu = emulator_url
    await emu.add_fault("timeout", method="sendMessage", delay=3)
    started = time.monotonic()
    with pytest.raises(TelegramNetworkError, match="timeout"):
        await bot.send_message(GROUP, "unknown outcome", request_timeout=1)
    assert time.monotonic() - started < 2.5
    assert [m["text"] for m in await emu.messages(GROUP)] == ["unknown outcome"]


async def test_fault_reset(bot: Bot, emulator_url: Emu) -> None:
    _, emu = emulator_url
    await emu.add_fault("reset", method="sendMessage")
    with pytest.raises(TelegramNetworkError):
        await bot.send_message(GROUP, "dropped")
    assert await emu.messages(GROUP) == []
    await bot.send_message(GROUP, "fine")


async def test_fault_kicked(bot: Bot, emulator_url: Emu) -> None:
    _, emu = emulator_url
    await emu.add_fault("kicked", method="sendMessage", chat_id=GROUP)
    with pytest.raises(TelegramForbiddenError, match="bot was kicked from the group chat"):
        await bot.send_message(GROUP, "a")
    with pytest.raises(TelegramForbiddenError, match="kicked"):
        await bot.send_message(GROUP, "b")  # the chat stays kicked
    assert (await emu.chat(GROUP))["bot_status"] == {str(BOT_ID): "kicked"}
    await emu.add_chat(-100777, "supergroup", title="SG")
    await emu.add_fault("kicked", chat_id=-100777)
    with pytest.raises(TelegramForbiddenError, match="not a member of the supergroup chat"):
        await bot.send_message(-100777, "c")


async def test_fault_migrate(bot: Bot, emulator_url: Emu) -> None:
    _, emu = emulator_url
    await emu.add_fault("migrate", method="sendMessage", chat_id=GROUP)
    with pytest.raises(TelegramMigrateToChat) as exc:
        await bot.send_message(GROUP, "a")
    new_id = exc.value.migrate_to_chat_id
    assert str(new_id).startswith("-100")
    assert new_id != GROUP
    with pytest.raises(TelegramMigrateToChat) as exc2:
        await bot.send_message(GROUP, "still migrated")
    assert exc2.value.migrate_to_chat_id == new_id
    msg = await bot.send_message(new_id, "moved")
    assert msg.chat.type == "supergroup"
    assert msg.chat.title == "Ops"
    updates = await bot.get_updates()
    service = [u.message for u in updates if u.message]
    assert service[0].migrate_to_chat_id == new_id
    assert service[1].migrate_from_chat_id == GROUP


async def test_fault_not_modified_not_found_and_bad_request(bot: Bot, emulator_url: Emu) -> None:
    _, emu = emulator_url
    await emu.configure(enforce_limits=False)
    msg = await bot.send_message(GROUP, "card")
    await emu.add_fault("not_modified", method="editMessageText")
    await emu.add_fault("not_found", method="editMessageText")
    await emu.add_fault("bad_request", method="editMessageText", description="custom thing")
    await emu.add_fault("too_many_requests", method="editMessageText", retry_after=7)
    with pytest.raises(TelegramBadRequest, match="message is not modified"):
        await bot.edit_message_text("new", chat_id=GROUP, message_id=msg.message_id)
    with pytest.raises(TelegramBadRequest, match="message to edit not found"):
        await bot.edit_message_text("new", chat_id=GROUP, message_id=msg.message_id)
    with pytest.raises(TelegramBadRequest, match="Bad Request: custom thing"):
        await bot.edit_message_text("new", chat_id=GROUP, message_id=msg.message_id)
    with pytest.raises(TelegramRetryAfter) as exc:
        await bot.edit_message_text("new", chat_id=GROUP, message_id=msg.message_id)
    assert exc.value.retry_after == 7
    await bot.edit_message_text("new", chat_id=GROUP, message_id=msg.message_id)
    assert (await emu.messages(GROUP))[0]["text"] == "new"


async def test_fault_callback_too_old(bot: Bot, emulator_url: Emu) -> None:
    _, emu = emulator_url
    msg = await bot.send_message(GROUP, "card", reply_markup=keyboard(("Approve", "ap:1")))
    tap = await emu.tap(GROUP, msg.message_id, ALICE, callback_data="ap:1")
    await emu.add_fault("callback_too_old")
    with pytest.raises(TelegramBadRequest, match="query is too old"):
        await bot.answer_callback_query(tap["callback_query_id"], text="late")
    assert (await emu.callback_answer(tap["callback_query_id"]))["answered"] is False
    assert await bot.answer_callback_query(tap["callback_query_id"], text="ok") is True
    with pytest.raises(TelegramBadRequest, match="query is too old"):
        await bot.answer_callback_query(tap["callback_query_id"], text="twice")
    with pytest.raises(TelegramBadRequest, match="query is too old"):
        await bot.answer_callback_query("nonexistent")


async def test_bad_fault_kind_rejected(emulator_url: Emu) -> None:
    _, emu = emulator_url
    with pytest.raises(EmulatorError) as exc:
        await emu.add_fault("meteor")
    assert exc.value.status == 400


# --------------------------------------------------------------------------- callbacks


async def test_tap_carries_real_callback_data_and_wait_returns_answer(
    bot: Bot, emulator_url: Emu
) -> None:
    _, emu = emulator_url
    msg = await bot.send_message(
        GROUP, "card", reply_markup=keyboard(("Approve", "ap:42"), ("Reject", "rj:42"))
    )

    async def answer_soon() -> None:
        for _ in range(100):
            updates = await bot.get_updates(timeout=1)
            for upd in updates:
                if upd.callback_query is not None:
                    cq = upd.callback_query
                    assert cq.data == "rj:42"
                    assert cq.from_user.id == BOB
                    assert cq.message is not None
                    assert cq.message.message_id == msg.message_id
                    await bot.answer_callback_query(cq.id, text="Rejected", show_alert=True)
                    return

    task = asyncio.create_task(answer_soon())
    started = time.monotonic()
    tap = await emu.tap(GROUP, msg.message_id, BOB, button_text="Reject", wait=5)
    assert time.monotonic() - started < 3  # woken by the answer, not by the wait timeout
    await task
    answer = tap["answer"]
    assert answer is not None
    assert answer["text"] == "Rejected"
    assert answer["show_alert"] is True
    assert answer["latency_ms"] >= 0
    stored = await emu.callback_answer(tap["callback_query_id"])
    assert stored["answered"] is True
    assert stored["data"] == "rj:42"
    by_pos = await emu.tap(GROUP, msg.message_id, ALICE, row=0, col=0, wait=0.1)
    assert by_pos["answer"] is None
    with pytest.raises(EmulatorError) as exc:
        await emu.tap(GROUP, msg.message_id, ALICE, callback_data="forged")
    assert exc.value.status == 400


async def test_inject_forged_update(bot: Bot, emulator_url: Emu) -> None:
    _, emu = emulator_url
    msg = await bot.send_message(GROUP, "card", reply_markup=keyboard(("A", "a")))
    update_id = await emu.inject_update(
        {
            "callback_query": {
                "id": "forged-1",
                "from": {"id": BOB, "is_bot": False, "first_name": "Bob"},
                "chat_instance": "1",
                "data": "x" * 80,
                "message": {
                    "message_id": msg.message_id,
                    "date": 0,
                    "chat": {"id": GROUP, "type": "group", "title": "Ops"},
                },
            }
        }
    )
    updates = await bot.get_updates()
    assert [u.update_id for u in updates] == [update_id]
    assert updates[0].callback_query is not None
    assert updates[0].callback_query.data == "x" * 80
    assert await bot.answer_callback_query("forged-1") is True


# --------------------------------------------------------------------------- updates


async def test_get_updates_offset_and_long_polling(bot: Bot, emulator_url: Emu) -> None:
    _, emu = emulator_url
    await bot.get_me()  # make the bot known
    r1 = await emu.send_text(GROUP, ALICE, "/approve@test123456789_bot now")
    r2 = await emu.send_text(GROUP, BOB, "hi")
    updates = await bot.get_updates()
    assert [u.update_id for u in updates] == [r1["update_id"], r2["update_id"]]
    first = updates[0].message
    assert first is not None
    assert first.entities is not None
    assert first.entities[0].type == "bot_command"
    assert first.entities[0].length == 26
    assert first.from_user is not None
    assert first.from_user.username == "alice"
    # Without an offset nothing is confirmed.
    assert len(await bot.get_updates()) == 2
    assert len(await bot.get_updates(offset=r2["update_id"])) == 1
    assert await bot.get_updates(offset=r2["update_id"] + 1) == []
    # Long polling really waits ...
    started = time.monotonic()
    assert await bot.get_updates(offset=r2["update_id"] + 1, timeout=1) == []
    assert time.monotonic() - started >= 0.9
    # ... and wakes when an update arrives.
    poll = asyncio.create_task(bot.get_updates(offset=r2["update_id"] + 1, timeout=10))

    async def polling() -> bool:
        return bool((await emu.stats())["long_polls_waiting"] == 1)

    await wait_until(polling, 5, what="the long poll waiting in the emulator")
    started = time.monotonic()
    r3 = await emu.send_text(GROUP, ALICE, "wake")
    async with asyncio.timeout(3):
        got = await poll
    assert [u.update_id for u in got] == [r3["update_id"]]
    assert time.monotonic() - started < 1.0
    assert (await emu.stats())["pending_updates"] == 1


async def test_updates_before_bot_known_are_kept(bot: Bot, emulator_url: Emu) -> None:
    _, emu = emulator_url
    await emu.send_text(GROUP, ALICE, "early")
    updates = await bot.get_updates()
    assert len(updates) == 1
    assert updates[0].message is not None
    assert updates[0].message.text == "early"


async def test_get_updates_conflict_while_webhook_set(bot: Bot) -> None:
    assert await bot.set_webhook("https://example.invalid/hook") is True
    info = await bot.get_webhook_info()
    assert info.url == "https://example.invalid/hook"
    with pytest.raises(TelegramConflictError, match="can't use getUpdates method"):
        await bot.get_updates()
    await bot.delete_webhook()
    assert await bot.get_updates() == []


async def test_set_webhook_secret_validation(bot: Bot) -> None:
    for bad in ("has space", "semi;colon", "x" * 257, "é"):
        with pytest.raises(TelegramBadRequest, match="secret token contains unallowed characters"):
            await bot.set_webhook("https://example.invalid/hook", secret_token=bad)
    assert await bot.set_webhook("https://example.invalid/hook", secret_token="A-z_0" * 50)


async def test_kick_add_and_migrate_helpers(bot: Bot, emulator_url: Emu) -> None:
    _, emu = emulator_url
    await bot.get_me()
    [kick_id] = await emu.kick(GROUP, by_user_id=ALICE)
    with pytest.raises(TelegramForbiddenError, match="kicked"):
        await bot.send_message(GROUP, "x")
    [add_id] = await emu.add_back(GROUP, by_user_id=ALICE)
    await bot.send_message(GROUP, "back")
    updates = await bot.get_updates()
    members = [u.my_chat_member for u in updates if u.my_chat_member]
    assert [u.update_id for u in updates] == [kick_id, add_id]
    assert [(m.old_chat_member.status, m.new_chat_member.status) for m in members] == [
        ("member", "kicked"),
        ("kicked", "member"),
    ]
    new_id = await emu.migrate(GROUP, by_user_id=ALICE)
    with pytest.raises(TelegramMigrateToChat) as exc:
        await bot.send_message(GROUP, "old")
    assert exc.value.migrate_to_chat_id == new_id
    chat = await bot.get_chat(new_id)
    assert chat.type == "supergroup"
    msgs = await emu.messages(GROUP)
    assert msgs[-1]["migrate_to_chat_id"] == new_id


async def test_private_chat_opens_only_when_the_user_writes(bot: Bot, emulator_url: Emu) -> None:
    _, emu = emulator_url
    await bot.get_me()
    with pytest.raises(TelegramForbiddenError, match="can't initiate conversation with a user"):
        await bot.send_message(ALICE, "hello?")
    started = await emu.start_bot(ALICE, payload="web-login_1")
    await bot.send_message(ALICE, "hello")
    [update] = await bot.get_updates()
    assert update.update_id == started["update_id"]
    assert update.message is not None and update.message.chat.type == "private"
    assert update.message.text == "/start web-login_1"
    assert update.message.entities is not None and update.message.entities[0].length == 6
    # Writing to a group opens nothing: Bob's private chat stays closed.
    await emu.send_text(GROUP, BOB, "hi")
    with pytest.raises(TelegramForbiddenError, match="can't initiate"):
        await bot.send_message(BOB, "hi Bob")


async def test_blocked_bot_gets_403_until_the_user_writes_again(
    bot: Bot, emulator_url: Emu
) -> None:
    _, emu = emulator_url
    await bot.get_me()
    await emu.start_bot(ALICE)
    [blocked_id] = await emu.block_bot(ALICE)
    with pytest.raises(TelegramForbiddenError, match="bot was blocked by the user"):
        await bot.send_message(ALICE, "x")
    restarted = await emu.start_bot(ALICE)
    await bot.send_message(ALICE, "back")
    updates = await bot.get_updates(offset=blocked_id)
    members = [u.my_chat_member for u in updates if u.my_chat_member]
    assert [(m.old_chat_member.status, m.new_chat_member.status) for m in members] == [
        ("member", "kicked"),
        ("kicked", "member"),
    ]
    assert updates[-1].update_id == restarted["update_id"]


async def test_start_payload_follows_the_deep_link_rules(emulator_url: Emu) -> None:
    _, emu = emulator_url
    for bad in ["", "x" * 65, "a b", "ü"]:
        with pytest.raises(EmulatorError, match="start payload"):
            await emu.start_bot(ALICE, payload=bad)


# --------------------------------------------------------------------------- webhooks


async def test_webhook_delivery_with_secret_and_retry(
    bot: Bot,
    emulator_url: Emu,
    webhook_receiver: Callable[[Receiver], Awaitable[str]],
) -> None:
    _, emu = emulator_url
    seen: list[tuple[str | None, dict[str, Any]]] = []
    answers = iter([500, 200, 200])

    async def handler(request: web.Request) -> web.StreamResponse:
        seen.append((request.headers.get("X-Telegram-Bot-Api-Secret-Token"), await request.json()))
        return web.Response(status=next(answers))

    hook = await webhook_receiver(handler)
    await bot.set_webhook(hook, secret_token="s3cr3t", allowed_updates=["message"])
    sent = await emu.send_text(GROUP, ALICE, "via hook")
    await wait_until(lambda: len(seen) >= 2)
    assert [s[0] for s in seen] == ["s3cr3t", "s3cr3t"]
    assert seen[0][1] == seen[1][1]  # the retry is the same update
    assert seen[0][1]["update_id"] == sent["update_id"]
    assert seen[0][1]["message"]["text"] == "via hook"
    stats = await emu.stats()
    assert stats["webhook_deliveries"] == 2
    assert stats["webhook_failures"] == 1
    info = await bot.get_webhook_info()
    assert info.last_error_message == "Wrong response from the webhook: 500"
    assert info.pending_update_count == 0
    await emu.send_text(GROUP, ALICE, "second")
    await wait_until(lambda: len(seen) >= 3)
    assert seen[2][1]["message"]["text"] == "second"


async def test_webhook_retry_backoff_and_pending_moved(
    bot: Bot,
    emulator_url: Emu,
    webhook_receiver: Callable[[Receiver], Awaitable[str]],
) -> None:
    _, emu = emulator_url
    times: list[float] = []

    async def handler(request: web.Request) -> web.StreamResponse:
        times.append(time.monotonic())
        return web.Response(status=503 if len(times) < 4 else 200)

    await bot.get_me()
    await emu.send_text(GROUP, ALICE, "queued before webhook")
    hook = await webhook_receiver(handler)
    await bot.set_webhook(hook)
    await wait_until(lambda: len(times) >= 4)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    # base 0.05: at once, then 0.05, 0.1
    assert gaps[0] < 0.05
    assert 0.04 <= gaps[1] < 0.5
    assert 0.09 <= gaps[2] < 0.6


async def test_webhook_reply_method_is_executed(
    bot: Bot,
    emulator_url: Emu,
    webhook_receiver: Callable[[Receiver], Awaitable[str]],
) -> None:
    _, emu = emulator_url

    async def handler(request: web.Request) -> web.StreamResponse:
        update = await request.json()
        cq = update.get("callback_query")
        if cq is None:
            return web.Response()
        return web.json_response(
            {"method": "answerCallbackQuery", "callback_query_id": cq["id"], "text": "Voted"}
        )

    msg = await bot.send_message(GROUP, "card", reply_markup=keyboard(("Approve", "ap:1")))
    await bot.set_webhook(await webhook_receiver(handler))
    tap = await emu.tap(GROUP, msg.message_id, ALICE, callback_data="ap:1", wait=5)
    assert tap["answer"] is not None
    assert tap["answer"]["text"] == "Voted"
    calls = await emu.calls("answerCallbackQuery")
    assert len(calls) == 1
    assert calls[0]["via_webhook_reply"] is True
    assert calls[0]["status"] == 200
    hooks = await emu.webhook()
    assert hooks[str(BOT_ID)]["url"].endswith("/hook")


# --------------------------------------------------------------------------- control API


async def test_calls_stats_and_reset(bot: Bot, emulator_url: Emu) -> None:
    _, emu = emulator_url
    await bot.get_me()
    await bot.send_message(GROUP, "x")
    await bot.send_chat_action(GROUP, "typing")
    await bot.set_my_commands([])
    calls = await emu.calls()
    assert [c["method"] for c in calls] == [
        "getMe",
        "sendMessage",
        "sendChatAction",
        "setMyCommands",
    ]
    assert calls[1]["params"]["text"] == "x"
    assert calls[1]["status"] == 200
    later = await emu.calls(since=calls[1]["seq"])
    assert [c["method"] for c in later] == ["sendChatAction", "setMyCommands"]
    stats = await emu.stats()
    assert stats["calls_by_method"]["sendMessage"] == 1
    await emu.reset()
    assert await emu.calls() == []
    assert (await emu.stats())["calls_by_method"] == {}
    with pytest.raises(EmulatorError) as exc:
        await emu.messages(GROUP)
    assert exc.value.status == 404


async def test_commands_roundtrip(bot: Bot) -> None:
    from aiogram.types import BotCommand

    await bot.set_my_commands([BotCommand(command="approve", description="Approve a request")])
    commands = await bot.get_my_commands()
    assert [(c.command, c.description) for c in commands] == [("approve", "Approve a request")]
    with pytest.raises(TelegramBadRequest, match="BOT_COMMAND_INVALID"):
        await bot.set_my_commands([BotCommand(command="Bad Command", description="x")])
    assert await bot.leave_chat(GROUP) is True
    with pytest.raises(TelegramForbiddenError):
        await bot.send_message(GROUP, "gone")


async def test_webhook_queues_parallel_per_chat_ordered_within_chat(
    bot: Bot,
    emulator_url: Emu,
    webhook_receiver: Callable[[Receiver], Awaitable[str]],
) -> None:
    _, emu = emulator_url
    release = asyncio.Event()
    arrived: list[str] = []

    async def handler(request: web.Request) -> web.StreamResponse:
        update = await request.json()
        text = update["message"]["text"]
        arrived.append(text)
        if text == "group-1":
            await release.wait()
        return web.Response()

    await emu.add_chat(-2002, "group", title="Other", members=[BOB])
    await bot.set_webhook(await webhook_receiver(handler))
    await emu.send_text(GROUP, ALICE, "group-1")
    await emu.send_text(GROUP, ALICE, "group-2")
    await emu.send_text(-2002, BOB, "other-1")
    # The other chat's queue is not blocked by the stuck delivery ...
    await wait_until(lambda: "other-1" in arrived)
    # ... but the same chat's second update waits for the first: not even attempted yet.
    assert (await emu.stats())["webhook_deliveries"] == 2
    assert "group-2" not in arrived
    release.set()
    await wait_until(lambda: "group-2" in arrived)
    assert arrived.index("group-1") < arrived.index("group-2")


async def test_webhook_max_connections_bounds_parallelism(
    bot: Bot,
    emulator_url: Emu,
    webhook_receiver: Callable[[Receiver], Awaitable[str]],
) -> None:
    _, emu = emulator_url
    release = asyncio.Event()
    arrived: list[str] = []

    async def handler(request: web.Request) -> web.StreamResponse:
        arrived.append((await request.json())["message"]["text"])
        await release.wait()
        return web.Response()

    await emu.add_chat(-2002, "group", title="Other", members=[BOB])
    await bot.set_webhook(await webhook_receiver(handler), max_connections=1)
    await emu.send_text(GROUP, ALICE, "a")
    await emu.send_text(-2002, BOB, "b")
    await wait_until(lambda: len(arrived) == 1)
    # Proving an absence: with the bound kept, nothing marks that "b" is held back (its
    # delivery is counted before it queues for the connection), so a little time must pass.
    await asyncio.sleep(0.1)
    assert len(arrived) == 1
    release.set()
    await wait_until(lambda: len(arrived) == 2)


async def test_webhook_callback_update_expires(
    webhook_receiver: Callable[[Receiver], Awaitable[str]],
) -> None:
    emulator = TelegramEmulator(webhook_retry_base=0.02, callback_update_max_age=0.3)
    url = await emulator.start()
    attempts: list[str] = []

    async def handler(request: web.Request) -> web.StreamResponse:
        update = await request.json()
        attempts.append("callback_query" if "callback_query" in update else "message")
        return web.Response(status=500)

    tg = Bot(TOKEN, session=AiohttpSession(api=TelegramAPIServer.from_base(url)))
    try:
        async with EmulatorClient(url) as emu:
            await emu.add_user(ALICE, "Alice")
            await tg.get_me()
            started = await emu.start_bot(ALICE)
            await tg.get_updates(offset=started["update_id"] + 1)  # confirm the /start
            msg = await tg.send_message(ALICE, "card", reply_markup=keyboard(("A", "a")))
            await tg.set_webhook(
                await webhook_receiver(handler), allowed_updates=["callback_query"]
            )
            await emu.tap(ALICE, msg.message_id, ALICE, callback_data="a")

            async def expired() -> dict[str, Any] | None:
                stats = await emu.stats()
                return stats if stats["webhook_expired"] == 1 else None

            # Real time passes here: expiry is the update's age (0.3 s) on the emulator's clock.
            stats = await wait_until(expired, 5, what="the callback update expiring")
            assert stats["pending_updates"] == 0  # dropped: its delivery worker has returned
            assert len(attempts) >= 3
            assert stats["webhook_deliveries"] == len(attempts)  # every attempt arrived
            assert set(attempts) == {"callback_query"}
    finally:
        await tg.session.close()
        await emulator.stop()


async def test_two_bots_share_chats_with_separate_updates_and_budgets(
    bot: Bot, emulator_url: Emu
) -> None:
    url, emu = emulator_url
    other_token = "987654321:" + "Z" * 35
    other = Bot(other_token, session=AiohttpSession(api=TelegramAPIServer.from_base(url)))
    try:
        await bot.get_me()
        assert (await other.get_me()).id == 987654321
        sent = await emu.send_text(GROUP, ALICE, "to both")
        assert len(sent["update_ids"]) == 2
        for tg in (bot, other):
            [upd] = await tg.get_updates()
            assert upd.message is not None
            assert upd.message.text == "to both"
        for i in range(3):
            await bot.send_message(GROUP, f"b{i}")
        with pytest.raises(TelegramRetryAfter):
            await bot.send_message(GROUP, "over")
        m = await other.send_message(GROUP, "other bot has its own budget")
        assert m.from_user is not None
        assert m.from_user.id == 987654321
        with pytest.raises(TelegramBadRequest, match="message can't be edited"):
            await bot.edit_message_text("x", chat_id=GROUP, message_id=m.message_id)
    finally:
        await other.session.close()


# --------------------------------------------------------------------------- replies and topics

FORUM = -1002


async def test_force_reply_is_validated_and_the_answer_carries_reply_to_message(
    bot: Bot, emulator_url: Emu
) -> None:
    url, emu = emulator_url
    question = await bot.send_message(
        GROUP,
        "@alice why?",
        reply_markup=ForceReply(selective=True, input_field_placeholder="p" * 80),
    )
    [stored] = [m for m in await emu.messages(GROUP) if m["message_id"] == question.message_id]
    assert stored["reply_markup"] == {
        "force_reply": True,
        "selective": True,
        "input_field_placeholder": "p" * 64,
    }
    path = f"/bot{TOKEN}/sendMessage"
    for markup, needle in [
        ({"force_reply": "yes"}, 'Field \\"force_reply\\" must be of type Boolean'),
        ({"force_reply": False}, "can't parse reply keyboard markup"),
        ({"force_reply": True, "selective": 1}, 'Field \\"selective\\"'),
        ({"force_reply": True, "input_field_placeholder": 5}, "must be of type String"),
    ]:
        status, body = await raw_call(
            url, path, json={"chat_id": GROUP, "text": "x", "reply_markup": markup}
        )
        assert status == 400 and needle.replace("\\", "") in body["description"], body
    # An edit takes only an inline keyboard.
    edit = {"chat_id": GROUP, "message_id": question.message_id, "text": "y"}
    status, body = await raw_call(
        url, f"/bot{TOKEN}/editMessageText", json={**edit, "reply_markup": {"force_reply": True}}
    )
    assert status == 400 and "inline keyboard expected" in body["description"]
    answered = await emu.reply(GROUP, question.message_id, ALICE, "wrong cluster")
    updates = await bot.get_updates()
    [message] = [u.message for u in updates if u.message and u.message.text == "wrong cluster"]
    assert message.message_id == answered["message_id"]
    assert message.reply_to_message is not None
    assert message.reply_to_message.message_id == question.message_id
    assert message.reply_to_message.text == "@alice why?"
    assert message.reply_to_message.reply_to_message is None


async def test_bot_replies_and_a_missing_message_to_reply_to(bot: Bot, emulator_url: Emu) -> None:
    _, emu = emulator_url
    sent = await emu.send_text(GROUP, ALICE, "deploy?")
    answer = await bot.send_message(
        GROUP, "on it", reply_parameters=ReplyParameters(message_id=sent["message_id"])
    )
    assert answer.reply_to_message is not None
    assert answer.reply_to_message.message_id == sent["message_id"]
    with pytest.raises(TelegramBadRequest, match="message to be replied not found"):
        await bot.send_message(GROUP, "x", reply_parameters=ReplyParameters(message_id=999))
    lenient = ReplyParameters(message_id=999, allow_sending_without_reply=True)
    plain = await bot.send_message(GROUP, "x", reply_parameters=lenient)
    assert plain.reply_to_message is None


async def test_forum_topics_threads_and_their_errors(bot: Bot, emulator_url: Emu) -> None:
    _, emu = emulator_url
    await emu.configure(enforce_limits=False)
    await emu.add_chat(FORUM, "supergroup", title="Ops forum", members=[ALICE], is_forum=True)
    assert (await bot.get_chat(FORUM)).is_forum is True
    topic = await bot.create_forum_topic(FORUM, "deploys")
    user_topic = await emu.create_topic(FORUM, "alerts", from_id=ALICE)
    assert user_topic != topic.message_thread_id
    in_topic = await bot.send_message(FORUM, "card", message_thread_id=topic.message_thread_id)
    assert in_topic.message_thread_id == topic.message_thread_id
    assert in_topic.is_topic_message is True
    general = await bot.send_message(FORUM, "general")
    assert general.message_thread_id is None and not general.is_topic_message
    # A reply without a thread lands in the topic of the message it answers.
    reply = await bot.send_message(
        FORUM, "reply", reply_parameters=ReplyParameters(message_id=in_topic.message_id)
    )
    assert reply.message_thread_id == topic.message_thread_id
    sent = await emu.send_text(FORUM, ALICE, "hi", message_thread_id=user_topic)
    updates = await bot.get_updates()
    [msg] = [u.message for u in updates if u.message and u.message.text == "hi"]
    assert msg.message_id == sent["message_id"] and msg.message_thread_id == user_topic
    created = [u.message for u in updates if u.message and u.message.forum_topic_created]
    assert [m.forum_topic_created.name for m in created if m.forum_topic_created] == ["alerts"]

    await bot.close_forum_topic(FORUM, topic.message_thread_id)
    with pytest.raises(TelegramBadRequest, match="TOPIC_CLOSED"):
        await bot.send_message(FORUM, "x", message_thread_id=topic.message_thread_id)
    with pytest.raises(TelegramBadRequest, match="TOPIC_NOT_MODIFIED"):
        await bot.close_forum_topic(FORUM, topic.message_thread_id)
    with pytest.raises(EmulatorError, match="TOPIC_CLOSED"):
        await emu.send_text(FORUM, ALICE, "x", message_thread_id=topic.message_thread_id)
    await bot.reopen_forum_topic(FORUM, topic.message_thread_id)
    await bot.send_message(FORUM, "open again", message_thread_id=topic.message_thread_id)

    await emu.delete_topic(FORUM, topic.message_thread_id)
    with pytest.raises(TelegramBadRequest, match="message thread not found"):
        await bot.send_message(FORUM, "x", message_thread_id=topic.message_thread_id)
    with pytest.raises(TelegramBadRequest, match="message to edit not found"):
        await bot.edit_message_text("y", chat_id=FORUM, message_id=in_topic.message_id)
    with pytest.raises(TelegramBadRequest, match="message thread not found"):
        await bot.send_message(GROUP, "x", message_thread_id=5)
    with pytest.raises(TelegramBadRequest, match="not a forum"):
        await bot.create_forum_topic(GROUP, "x")
    with pytest.raises(TelegramBadRequest, match="TOPIC_TITLE_EMPTY"):
        await bot.create_forum_topic(FORUM, " ")
    state = await emu.chat(FORUM)
    assert [t["name"] for t in state["topics"]] == ["alerts"]
    listed = {m["message_id"]: m for m in await emu.messages(FORUM)}
    assert listed[reply.message_id]["reply_to_message_id"] == in_topic.message_id
    assert listed[reply.message_id]["deleted"] is True
