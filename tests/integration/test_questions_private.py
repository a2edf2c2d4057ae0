"""ForceReply questions routed to their handler, private messages refused by Telegram (403)
recorded and not retried, and cards falling back from a closed forum topic: real PostgreSQL,
Redis and the emulator over HTTP."""

from __future__ import annotations

import functools
import json
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from bot import private, questions
from bot.runtime import Runtime
from storage import audit
from storage.db import transaction
from storage.outbox import Priority, put_message
from tests.support import ALICE, BOB, CHAT, Harness, QuorumFactory, db_rows, metric

KIND = "test.echo"
FORUM = -1001000000900


@questions.on_answer(KIND)
async def _echo(rt: Runtime, session: AsyncSession, answer: questions.Answer) -> None:
    await audit.record(
        session,
        "test.answered",
        actor_telegram_id=answer.user_id,
        chat_id=answer.chat_id,
        text=answer.text,
        subject=answer.question.subject,
    )


async def ask(h: Harness, *, ttl: float = 600, user: int = ALICE) -> int:
    async with transaction(h.app.runtime.sessions) as s:
        return await questions.ask(
            s,
            kind=KIND,
            chat_id=CHAT,
            user_id=user,
            text_html='<a href="tg://user?id=1001">alice</a>, why?',
            subject={"thing": 7},
            ttl_seconds=ttl,
            placeholder="a reason",
        )


async def question_message(h: Harness) -> dict[str, Any]:
    async def sent() -> dict[str, Any] | None:
        for m in await h.bot_messages():
            if (m["reply_markup"] or {}).get("force_reply"):
                return m
        return None

    found: dict[str, Any] = await h.wait_for(sent)
    return found


async def answers(h: Harness) -> list[Any]:
    rows = await db_rows(
        h, "SELECT actor_telegram_id, detail FROM audit_log WHERE event = 'test.answered'"
    )
    return [(r["actor_telegram_id"], json.loads(r["detail"])) for r in rows]


async def test_only_the_asked_person_answers_once(make_quorum: QuorumFactory) -> None:
    h = await make_quorum()
    await ask(h)
    msg = await question_message(h)
    assert msg["reply_markup"] == {
        "force_reply": True,
        "selective": True,
        "input_field_placeholder": "a reason",
    }
    replies = [
        await h.emu.reply(CHAT, msg["message_id"], BOB, "not mine to answer"),
        await h.emu.reply(CHAT, msg["message_id"], ALICE, "wrong cluster"),
        await h.emu.reply(CHAT, msg["message_id"], ALICE, "second thoughts"),
    ]
    for update_id in [sent["update_id"] for sent in replies]:
        await h.wait_for(functools.partial(handled, h, update_id))
    assert await answers(h) == [(ALICE, {"text": "wrong cluster", "subject": {"thing": 7}})]
    [row] = await db_rows(h, "SELECT answer, answered_at FROM questions")
    assert row["answer"] == "wrong cluster" and row["answered_at"] is not None


async def handled(h: Harness, update_id: int) -> bool:
    rows = await db_rows(h, "SELECT 1 FROM inbound_updates WHERE update_id = $1", update_id)
    return bool(rows)


async def test_a_late_reply_is_not_an_answer(make_quorum: QuorumFactory) -> None:
    h = await make_quorum()
    await ask(h, ttl=0)
    msg = await question_message(h)
    sent = await h.emu.reply(CHAT, msg["message_id"], ALICE, "too late")
    await h.wait_for(lambda: handled(h, sent["update_id"]))
    assert await answers(h) == []
    [row] = await db_rows(h, "SELECT answer FROM questions")
    assert row["answer"] is None


async def test_a_reply_before_the_question_is_recorded_is_answered(
    make_quorum: QuorumFactory,
) -> None:
    h = await make_quorum()
    # Telegram shows the question at once and answers the bot's sendMessage 3 s later.
    await h.emu.add_fault("timeout", method="sendMessage", chat_id=CHAT, delay=3)
    await ask(h)
    msg = await question_message(h)
    sent = await h.emu.reply(CHAT, msg["message_id"], ALICE, "wrong cluster")
    await h.wait_for(functools.partial(handled, h, sent["update_id"]))
    [row] = await db_rows(h, "SELECT message_id FROM telegram_messages WHERE purpose = 'question'")
    assert row["message_id"] is None  # the reply came before the bot knew its question's id

    async def answered() -> list[Any]:
        return await answers(h)

    assert await h.wait_for(answered, timeout=30) == [
        (ALICE, {"text": "wrong cluster", "subject": {"thing": 7}})
    ]
    [update] = await db_rows(
        h, "SELECT status, last_error FROM inbound_updates WHERE update_id = $1", sent["update_id"]
    )
    assert update["status"] == "done" and "being sent" in update["last_error"]
    assert metric(h, "quorum_updates_failed_total") == 0  # held, not failed


async def test_a_reply_to_another_message_is_not_held(make_quorum: QuorumFactory) -> None:
    h = await make_quorum()
    await ask(h)
    msg = await question_message(h)
    await h.emu.add_fault("timeout", method="sendMessage", chat_id=CHAT, delay=3)
    await ask(h)  # a second question, shown and not yet recorded
    # A reply to the first (recorded) question is its answer at once, not held.
    sent = await h.emu.reply(CHAT, msg["message_id"], ALICE, "wrong cluster")
    await h.wait_for(functools.partial(handled, h, sent["update_id"]))
    assert len(await answers(h)) == 1
    [update] = await db_rows(
        h, "SELECT last_error FROM inbound_updates WHERE update_id = $1", sent["update_id"]
    )
    assert update["last_error"] is None


async def private_state(h: Harness, user: int) -> str | None:
    rows = await db_rows(h, "SELECT state FROM private_chats WHERE telegram_id = $1", user)
    return str(rows[0]["state"]) if rows else None


async def send_private(h: Harness, user: int, text: str) -> int:
    async with transaction(h.app.runtime.sessions) as s:
        return await private.send(s, user, text)


async def test_private_refusals_are_recorded_not_retried(make_quorum: QuorumFactory) -> None:
    h = await make_quorum()
    row_id = await send_private(h, ALICE, "your request was approved")

    async def finished() -> Any:
        rows = await db_rows(h, "SELECT status, last_error FROM outbox WHERE id = $1", row_id)
        return (
            rows[0] if rows[0]["status"] != "pending" and rows[0]["status"] != "sending" else None
        )

    row = await h.wait_for(finished)
    assert row["status"] == "done" and "can't initiate conversation" in row["last_error"]
    assert (
        len([c for c in await h.emu.calls("sendMessage") if int(c["params"]["chat_id"]) == ALICE])
        == 1
    )
    [entry] = await db_rows(
        h, "SELECT actor_telegram_id, detail FROM audit_log WHERE event = 'private.refused'"
    )
    assert entry["actor_telegram_id"] == ALICE and '"reason": "not_started"' in entry["detail"]
    assert await private_state(h, ALICE) == "not_started"

    await h.emu.start_bot(ALICE)
    await h.wait_for(lambda: _is(private_state(h, ALICE), "open"))
    await send_private(h, ALICE, "hello again")
    await h.wait_for(
        lambda: _texts(h, ALICE, "hello again"),
    )
    await h.emu.block_bot(ALICE)
    await h.wait_for(lambda: _is(private_state(h, ALICE), "blocked"))
    await send_private(h, ALICE, "are you there?")
    await h.wait_for(
        lambda: db_rows(
            h,
            "SELECT 1 FROM audit_log WHERE event = 'private.refused' AND detail->>'reason' = $1",
            "blocked",
        )
    )


async def _is(state: Any, wanted: str) -> bool:
    return bool(await state == wanted)


async def _texts(h: Harness, chat: int, text: str) -> bool:
    return any(m["text"] == text for m in await h.emu.messages(chat))


async def test_a_card_for_a_closed_topic_goes_to_general_with_a_note(
    make_quorum: QuorumFactory,
) -> None:
    h = await make_quorum()
    await h.emu.add_chat(FORUM, "supergroup", title="ops", members=[ALICE], is_forum=True)
    topic = await h.emu.create_topic(FORUM, "deploys", from_id=ALICE)
    async with transaction(h.app.runtime.sessions) as s:
        in_topic = await put_message(
            s,
            chat_id=FORUM,
            purpose="test",
            text_html="card one",
            reply_markup=None,
            priority=Priority.CARD,
            thread_id=topic,
        )
    await h.wait_for(lambda: _texts(h, FORUM, "card one"))
    [one] = [m for m in await h.emu.messages(FORUM) if m["text"] == "card one"]
    assert one["message_thread_id"] == topic
    await h.emu.close_topic(FORUM, topic)
    async with transaction(h.app.runtime.sessions) as s:
        await put_message(
            s,
            chat_id=FORUM,
            purpose="test",
            text_html="card two",
            reply_markup=None,
            priority=Priority.CARD,
            thread_id=topic,
        )
    await h.wait_for(lambda: _texts(h, FORUM, "card two"))
    msgs = await h.emu.messages(FORUM)
    [two] = [m for m in msgs if m["text"] == "card two"]
    assert two["message_thread_id"] is None
    note = await h.wait_for(
        lambda: _note(h, two["message_id"]),
    )
    assert f"Topic {topic} is closed or deleted" in note["text"]
    [entry] = await db_rows(h, "SELECT detail FROM audit_log WHERE event = 'topic.fallback'")
    assert f'"thread_id": {topic}' in entry["detail"]
    rows = await db_rows(h, "SELECT thread_id FROM telegram_messages WHERE id = $1", in_topic)
    assert rows[0]["thread_id"] == topic


async def _note(h: Harness, reply_to: int) -> dict[str, Any] | None:
    for m in await h.emu.messages(FORUM):
        if m["reply_to_message_id"] == reply_to:
            return m
    return None
