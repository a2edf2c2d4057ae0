"""Tests for the Telegram Bot API emulator, over real HTTP with a real aiogram Bot."""

from __future__ import annotations

import asyncio
import json
import time

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
    TelegramRetryAfter,
)
from aiogram.types import ForceReply, ReplyParameters

from sandbox.emulator import EmulatorError
from tests.support import (
    ALICE,
    BOB,
    BOT_ID,
    EMU_GROUP,
    EMU_TOKEN,
    Emu,
    keyboard,
    raw_call,
    wait_until,
)

# --------------------------------------------------------------------------- basics


async def test_get_me_and_send_message_shape(bot: Bot, fresh_emulator: Emu) -> None:
    _, emu = fresh_emulator
    me = await bot.get_me()
    assert me.id == BOT_ID
    assert me.is_bot
    msg = await bot.send_message(EMU_GROUP, "hello", reply_markup=keyboard(("Approve", "a:1")))
    assert msg.message_id == 1
    assert msg.chat.id == EMU_GROUP
    assert msg.chat.type == "group"
    assert msg.chat.title == "Ops"
    assert msg.from_user is not None
    assert msg.from_user.id == BOT_ID
    assert msg.text == "hello"
    assert msg.reply_markup is not None
    assert msg.reply_markup.inline_keyboard[0][0].callback_data == "a:1"
    second = await bot.send_message(EMU_GROUP, "again")
    assert second.message_id == 2
    stored = await emu.messages(EMU_GROUP)
    assert [m["text"] for m in stored] == ["hello", "again"]
    assert stored[0]["from_id"] == BOT_ID


async def test_token_shapes_and_unknown_method(fresh_emulator: Emu) -> None:
    url, emu = fresh_emulator
    status, body = await raw_call(url, "/botnotatoken/getMe")
    assert status == 404
    assert body == {"ok": False, "error_code": 404, "description": "Not Found"}
    status, body = await raw_call(url, "/bot42:short/getMe")
    assert status == 401
    assert body["description"] == "Unauthorized"
    status, body = await raw_call(url, f"/bot{EMU_TOKEN}/noSuchMethod")
    assert status == 404
    assert body["description"] == "Not Found"
    # Registering the real token makes another secret for the same bot id unknown.
    await emu.add_bot(EMU_TOKEN, username="quorum_bot")
    other = EMU_TOKEN.split(":")[0] + ":" + "B" * 35
    status, body = await raw_call(url, f"/bot{other}/getMe")
    assert status == 401
    status, body = await raw_call(url, f"/bot{EMU_TOKEN}/getme")
    assert status == 200
    assert body["result"]["username"] == "quorum_bot"


async def test_json_form_and_case_insensitive_method(fresh_emulator: Emu) -> None:
    url, emu = fresh_emulator
    markup = {"inline_keyboard": [[{"text": "Go", "callback_data": "go"}]]}
    status, body = await raw_call(
        url,
        f"/bot{EMU_TOKEN}/SENDMESSAGE",
        json={"chat_id": EMU_GROUP, "text": "json", "reply_markup": markup},
    )
    assert status == 200
    assert body["ok"] is True
    assert body["result"]["reply_markup"] == markup
    form = {"chat_id": str(EMU_GROUP), "text": "form", "reply_markup": json.dumps(markup)}
    status, body = await raw_call(url, f"/bot{EMU_TOKEN}/sendMessage", data=form)
    assert status == 200
    assert body["result"]["reply_markup"] == markup
    mp = aiohttp.FormData()
    mp.add_field("chat_id", str(EMU_GROUP))
    mp.add_field("text", "multipart")
    mp.add_field("dummy", b"x", filename="x.bin")
    status, body = await raw_call(url, f"/bot{EMU_TOKEN}/sendMessage", data=mp)
    assert status == 200
    assert body["result"]["text"] == "multipart"
    assert [m["text"] for m in await emu.messages(EMU_GROUP)] == ["json", "form", "multipart"]


async def test_send_to_unknown_chat(bot: Bot) -> None:
    with pytest.raises(TelegramBadRequest, match="chat not found"):
        await bot.send_message(-999, "x")


# --------------------------------------------------------------------------- edits and deletes


async def test_edit_not_modified_and_not_found(bot: Bot, fresh_emulator: Emu) -> None:
    _, emu = fresh_emulator
    await emu.configure(enforce_limits=False)
    kb = keyboard(("A", "a"))
    msg = await bot.send_message(EMU_GROUP, "card", reply_markup=kb)
    with pytest.raises(TelegramBadRequest, match="message is not modified"):
        await bot.edit_message_text(
            "card", chat_id=EMU_GROUP, message_id=msg.message_id, reply_markup=kb
        )
    edited = await bot.edit_message_text("card", chat_id=EMU_GROUP, message_id=msg.message_id)
    assert not isinstance(edited, bool)
    assert edited.reply_markup is None
    assert edited.edit_date is not None
    with pytest.raises(TelegramBadRequest, match="message is not modified"):
        await bot.edit_message_reply_markup(chat_id=EMU_GROUP, message_id=msg.message_id)
    with pytest.raises(TelegramBadRequest, match="message to edit not found"):
        await bot.edit_message_text("x", chat_id=EMU_GROUP, message_id=999)
    assert await bot.delete_message(EMU_GROUP, msg.message_id) is True
    with pytest.raises(TelegramBadRequest, match="message to delete not found"):
        await bot.delete_message(EMU_GROUP, msg.message_id)
    with pytest.raises(TelegramBadRequest, match="message to edit not found"):
        await bot.edit_message_text("y", chat_id=EMU_GROUP, message_id=msg.message_id)
    [stored] = await emu.messages(EMU_GROUP)
    assert stored["deleted"] is True
    assert stored["edits"] == 1
    assert await bot.edit_message_text("inline", inline_message_id="abc") is True


# --------------------------------------------------------------------------- callbacks


async def test_tap_carries_real_callback_data_and_wait_returns_answer(
    bot: Bot, fresh_emulator: Emu
) -> None:
    _, emu = fresh_emulator
    msg = await bot.send_message(
        EMU_GROUP, "card", reply_markup=keyboard(("Approve", "ap:42"), ("Reject", "rj:42"))
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
    tap = await emu.tap(EMU_GROUP, msg.message_id, BOB, button_text="Reject", wait=5)
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
    by_pos = await emu.tap(EMU_GROUP, msg.message_id, ALICE, row=0, col=0, wait=0.1)
    assert by_pos["answer"] is None
    with pytest.raises(EmulatorError) as exc:
        await emu.tap(EMU_GROUP, msg.message_id, ALICE, callback_data="forged")
    assert exc.value.status == 400


async def test_inject_forged_update(bot: Bot, fresh_emulator: Emu) -> None:
    _, emu = fresh_emulator
    msg = await bot.send_message(EMU_GROUP, "card", reply_markup=keyboard(("A", "a")))
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
                    "chat": {"id": EMU_GROUP, "type": "group", "title": "Ops"},
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


async def test_get_updates_offset_and_long_polling(bot: Bot, fresh_emulator: Emu) -> None:
    _, emu = fresh_emulator
    await bot.get_me()  # make the bot known
    r1 = await emu.send_text(EMU_GROUP, ALICE, "/approve@test123456789_bot now")
    r2 = await emu.send_text(EMU_GROUP, BOB, "hi")
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
    r3 = await emu.send_text(EMU_GROUP, ALICE, "wake")
    async with asyncio.timeout(3):
        got = await poll
    assert [u.update_id for u in got] == [r3["update_id"]]
    assert time.monotonic() - started < 1.0
    assert (await emu.stats())["pending_updates"] == 1


async def test_updates_before_bot_known_are_kept(bot: Bot, fresh_emulator: Emu) -> None:
    _, emu = fresh_emulator
    await emu.send_text(EMU_GROUP, ALICE, "early")
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


async def test_kick_add_and_migrate_helpers(bot: Bot, fresh_emulator: Emu) -> None:
    _, emu = fresh_emulator
    await bot.get_me()
    [kick_id] = await emu.kick(EMU_GROUP, by_user_id=ALICE)
    with pytest.raises(TelegramForbiddenError, match="kicked"):
        await bot.send_message(EMU_GROUP, "x")
    [add_id] = await emu.add_back(EMU_GROUP, by_user_id=ALICE)
    await bot.send_message(EMU_GROUP, "back")
    updates = await bot.get_updates()
    members = [u.my_chat_member for u in updates if u.my_chat_member]
    assert [u.update_id for u in updates] == [kick_id, add_id]
    assert [(m.old_chat_member.status, m.new_chat_member.status) for m in members] == [
        ("member", "kicked"),
        ("kicked", "member"),
    ]
    new_id = await emu.migrate(EMU_GROUP, by_user_id=ALICE)
    with pytest.raises(TelegramMigrateToChat) as exc:
        await bot.send_message(EMU_GROUP, "old")
    assert exc.value.migrate_to_chat_id == new_id
    chat = await bot.get_chat(new_id)
    assert chat.type == "supergroup"
    msgs = await emu.messages(EMU_GROUP)
    assert msgs[-1]["migrate_to_chat_id"] == new_id


async def test_private_chat_opens_only_when_the_user_writes(bot: Bot, fresh_emulator: Emu) -> None:
    _, emu = fresh_emulator
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
    await emu.send_text(EMU_GROUP, BOB, "hi")
    with pytest.raises(TelegramForbiddenError, match="can't initiate"):
        await bot.send_message(BOB, "hi Bob")


async def test_blocked_bot_gets_403_until_the_user_writes_again(
    bot: Bot, fresh_emulator: Emu
) -> None:
    _, emu = fresh_emulator
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


async def test_start_payload_follows_the_deep_link_rules(fresh_emulator: Emu) -> None:
    _, emu = fresh_emulator
    for bad in ["", "x" * 65, "a b", "ü"]:
        with pytest.raises(EmulatorError, match="start payload"):
            await emu.start_bot(ALICE, payload=bad)


# --------------------------------------------------------------------------- control API


async def test_calls_stats_and_reset(bot: Bot, fresh_emulator: Emu) -> None:
    _, emu = fresh_emulator
    await bot.get_me()
    await bot.send_message(EMU_GROUP, "x")
    await bot.send_chat_action(EMU_GROUP, "typing")
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
        await emu.messages(EMU_GROUP)
    assert exc.value.status == 404


async def test_commands_roundtrip(bot: Bot) -> None:
    from aiogram.types import BotCommand

    await bot.set_my_commands([BotCommand(command="approve", description="Approve a request")])
    commands = await bot.get_my_commands()
    assert [(c.command, c.description) for c in commands] == [("approve", "Approve a request")]
    with pytest.raises(TelegramBadRequest, match="BOT_COMMAND_INVALID"):
        await bot.set_my_commands([BotCommand(command="Bad Command", description="x")])
    assert await bot.leave_chat(EMU_GROUP) is True
    with pytest.raises(TelegramForbiddenError):
        await bot.send_message(EMU_GROUP, "gone")


async def test_two_bots_share_chats_with_separate_updates_and_budgets(
    bot: Bot, fresh_emulator: Emu
) -> None:
    url, emu = fresh_emulator
    other_token = "987654321:" + "Z" * 35
    other = Bot(other_token, session=AiohttpSession(api=TelegramAPIServer.from_base(url)))
    try:
        await bot.get_me()
        assert (await other.get_me()).id == 987654321
        sent = await emu.send_text(EMU_GROUP, ALICE, "to both")
        assert len(sent["update_ids"]) == 2
        for tg in (bot, other):
            [upd] = await tg.get_updates()
            assert upd.message is not None
            assert upd.message.text == "to both"
        for i in range(3):
            await bot.send_message(EMU_GROUP, f"b{i}")
        with pytest.raises(TelegramRetryAfter):
            await bot.send_message(EMU_GROUP, "over")
        m = await other.send_message(EMU_GROUP, "other bot has its own budget")
        assert m.from_user is not None
        assert m.from_user.id == 987654321
        with pytest.raises(TelegramBadRequest, match="message can't be edited"):
            await bot.edit_message_text("x", chat_id=EMU_GROUP, message_id=m.message_id)
    finally:
        await other.session.close()


# --------------------------------------------------------------------------- replies and topics


FORUM = -1002


async def test_force_reply_is_validated_and_the_answer_carries_reply_to_message(
    bot: Bot, fresh_emulator: Emu
) -> None:
    url, emu = fresh_emulator
    question = await bot.send_message(
        EMU_GROUP,
        "@alice why?",
        reply_markup=ForceReply(selective=True, input_field_placeholder="p" * 80),
    )
    [stored] = [m for m in await emu.messages(EMU_GROUP) if m["message_id"] == question.message_id]
    assert stored["reply_markup"] == {
        "force_reply": True,
        "selective": True,
        "input_field_placeholder": "p" * 64,
    }
    path = f"/bot{EMU_TOKEN}/sendMessage"
    for markup, needle in [
        ({"force_reply": "yes"}, 'Field \\"force_reply\\" must be of type Boolean'),
        ({"force_reply": False}, "can't parse reply keyboard markup"),
        ({"force_reply": True, "selective": 1}, 'Field \\"selective\\"'),
        ({"force_reply": True, "input_field_placeholder": 5}, "must be of type String"),
    ]:
        status, body = await raw_call(
            url, path, json={"chat_id": EMU_GROUP, "text": "x", "reply_markup": markup}
        )
        assert status == 400 and needle.replace("\\", "") in body["description"], body
    # An edit takes only an inline keyboard.
    edit = {"chat_id": EMU_GROUP, "message_id": question.message_id, "text": "y"}
    status, body = await raw_call(
        url,
        f"/bot{EMU_TOKEN}/editMessageText",
        json={**edit, "reply_markup": {"force_reply": True}},
    )
    assert status == 400 and "inline keyboard expected" in body["description"]
    answered = await emu.reply(EMU_GROUP, question.message_id, ALICE, "wrong cluster")
    updates = await bot.get_updates()
    [message] = [u.message for u in updates if u.message and u.message.text == "wrong cluster"]
    assert message.message_id == answered["message_id"]
    assert message.reply_to_message is not None
    assert message.reply_to_message.message_id == question.message_id
    assert message.reply_to_message.text == "@alice why?"
    assert message.reply_to_message.reply_to_message is None


async def test_bot_replies_and_a_missing_message_to_reply_to(bot: Bot, fresh_emulator: Emu) -> None:
    _, emu = fresh_emulator
    sent = await emu.send_text(EMU_GROUP, ALICE, "deploy?")
    answer = await bot.send_message(
        EMU_GROUP, "on it", reply_parameters=ReplyParameters(message_id=sent["message_id"])
    )
    assert answer.reply_to_message is not None
    assert answer.reply_to_message.message_id == sent["message_id"]
    with pytest.raises(TelegramBadRequest, match="message to be replied not found"):
        await bot.send_message(EMU_GROUP, "x", reply_parameters=ReplyParameters(message_id=999))
    lenient = ReplyParameters(message_id=999, allow_sending_without_reply=True)
    plain = await bot.send_message(EMU_GROUP, "x", reply_parameters=lenient)
    assert plain.reply_to_message is None


async def test_forum_topics_threads_and_their_errors(bot: Bot, fresh_emulator: Emu) -> None:
    _, emu = fresh_emulator
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
        await bot.send_message(EMU_GROUP, "x", message_thread_id=5)
    with pytest.raises(TelegramBadRequest, match="not a forum"):
        await bot.create_forum_topic(EMU_GROUP, "x")
    with pytest.raises(TelegramBadRequest, match="TOPIC_TITLE_EMPTY"):
        await bot.create_forum_topic(FORUM, " ")
    state = await emu.chat(FORUM)
    assert [t["name"] for t in state["topics"]] == ["alerts"]
    listed = {m["message_id"]: m for m in await emu.messages(FORUM)}
    assert listed[reply.message_id]["reply_to_message_id"] == in_topic.message_id
    assert listed[reply.message_id]["deleted"] is True
