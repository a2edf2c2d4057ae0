"""The outbox sender against the emulator: sends, edits, coalescing, faults, truncation."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select

from bot.outbox import Sender, sanitize
from storage.db import transaction
from storage.models import AuditEntry, Chat, OutboxItem, TelegramMessage
from storage.outbox import Priority, edit_message, enqueue_call, enqueue_text, put_message
from tests.support import BOT_TOKEN, CHAT, Harness, QuorumFactory, metric

# Quick retries; the call timeout stays the default: one shorter than a loaded machine takes
# to answer makes duplicates (the documented cost of a timeout), which tests counting messages
# must not see.
FAST: dict[str, Any] = {"outbox_retry_base_seconds": 0.05}
KEYBOARD = {"inline_keyboard": [[{"text": "OK", "callback_data": "ok"}]]}


async def put_card(h: Harness, text: str, *, chat: int = CHAT, markup: Any = None) -> int:
    async with transaction(h.app.runtime.sessions) as s:
        return await put_message(
            s,
            chat_id=chat,
            purpose="test",
            text_html=text,
            reply_markup=markup,
            priority=Priority.CARD,
        )


async def edit_card(
    h: Harness, row_id: int, text: str, *, markup: Any = None, not_before: datetime | None = None
) -> None:
    async with transaction(h.app.runtime.sessions) as s:
        await edit_message(
            s,
            row_id,
            text_html=text,
            reply_markup=markup,
            priority=Priority.CARD,
            not_before=not_before,
        )


async def card(h: Harness, row_id: int) -> TelegramMessage:
    async with h.app.runtime.sessions() as s:
        row = await s.get(TelegramMessage, row_id)
        assert row is not None
        return row


async def outbox(h: Harness) -> list[OutboxItem]:
    async with h.app.runtime.sessions() as s:
        return list(await s.scalars(select(OutboxItem).order_by(OutboxItem.id)))


async def drained(h: Harness) -> bool:
    return all(r.status in ("done", "dead") for r in await outbox(h))


async def sent(h: Harness, row_id: int, version: int = 1) -> bool:
    return (await card(h, row_id)).sent_version >= version


async def test_card_is_sent_then_edited_in_place(make_quorum: QuorumFactory) -> None:
    h = await make_quorum()
    row_id = await put_card(h, "<b>deploy</b> api", markup=KEYBOARD)
    await h.wait_for(lambda: sent(h, row_id))
    msgs = await h.bot_messages()
    assert [m["text"] for m in msgs] == ["deploy api"]
    assert (await card(h, row_id)).message_id == msgs[0]["message_id"]

    await edit_card(h, row_id, "<b>deploy</b> api: approved", markup=None)
    await h.wait_for(lambda: sent(h, row_id, 2))
    msgs = await h.bot_messages()
    assert [(m["text"], m["edits"], m["reply_markup"]) for m in msgs] == [
        ("deploy api: approved", 1, None)
    ]


async def test_markup_only_change_edits_the_markup(make_quorum: QuorumFactory) -> None:
    h = await make_quorum()
    row_id = await put_card(h, "card", markup=KEYBOARD)
    await h.wait_for(lambda: sent(h, row_id))
    await edit_card(h, row_id, "card", markup=None)
    await h.wait_for(lambda: sent(h, row_id, 2))
    assert len(await h.emu.calls("editMessageReplyMarkup")) == 1
    assert await h.emu.calls("editMessageText") == []


async def test_unchanged_content_is_not_sent_again(make_quorum: QuorumFactory) -> None:
    h = await make_quorum()
    row_id = await put_card(h, "same", markup=KEYBOARD)
    await h.wait_for(lambda: sent(h, row_id))
    await edit_card(h, row_id, "same", markup=KEYBOARD)
    await h.wait_for(lambda: sent(h, row_id, 2))
    await h.wait_for(lambda: drained(h))
    assert await h.emu.calls("editMessageText") == []
    assert await h.emu.calls("editMessageReplyMarkup") == []


async def test_pending_edits_coalesce_to_the_last(make_quorum: QuorumFactory) -> None:
    h = await make_quorum()
    async with transaction(h.app.runtime.sessions) as s:
        row_id = await put_message(
            s,
            chat_id=CHAT,
            purpose="test",
            text_html="v1",
            reply_markup=None,
            priority=Priority.CARD,
        )
        for v in range(2, 6):
            await edit_message(
                s, row_id, text_html=f"v{v}", reply_markup=None, priority=Priority.CARD
            )
    await h.wait_for(lambda: sent(h, row_id, 5))
    assert [c["params"]["text"] for c in await h.emu.calls("sendMessage")] == ["v5"]

    later = datetime.now(UTC) + timedelta(seconds=1)
    for v in range(6, 10):
        await edit_card(h, row_id, f"v{v}", not_before=later)
    assert len([r for r in await outbox(h) if r.status == "pending"]) == 1
    await h.wait_for(lambda: sent(h, row_id, 9))
    assert [c["params"]["text"] for c in await h.emu.calls("editMessageText")] == ["v9"]


async def test_server_error_is_retried_with_backoff(make_quorum: QuorumFactory) -> None:
    h = await make_quorum(**FAST)
    await h.emu.add_fault("server_error", method="sendMessage", count=2, status=502)
    row_id = await put_card(h, "after two 502s")
    await h.wait_for(lambda: sent(h, row_id))
    (row,) = await outbox(h)
    assert (row.status, row.attempts) == ("done", 2)
    assert [m["text"] for m in await h.bot_messages()] == ["after two 502s"]
    assert metric(h, "quorum_outbox_retries_total") == 2


async def test_timeout_is_retried(make_quorum: QuorumFactory) -> None:
    h = await make_quorum(outbox_call_timeout_seconds=1.0, **FAST)
    await h.emu.add_fault("timeout", method="sendMessage", delay=2.5)
    async with transaction(h.app.runtime.sessions) as s:
        await enqueue_text(s, CHAT, "slow")
    await h.wait_for(lambda: drained(h))
    (row,) = await outbox(h)
    assert (row.status, row.attempts) == ("done", 1)
    # The timed-out call did reach Telegram: a duplicate is the documented cost.
    assert 1 <= len([m for m in await h.bot_messages() if m["text"] == "slow"]) <= 2


async def test_dead_letter_after_the_last_try(make_quorum: QuorumFactory) -> None:
    h = await make_quorum(outbox_max_attempts=3, **FAST)
    await h.emu.add_fault("server_error", method="sendMessage", count=10)
    row_id = await put_card(h, "never")
    await h.wait_for(lambda: drained(h))
    (row,) = await outbox(h)
    assert (row.status, row.attempts) == ("dead", 3)
    assert row.last_error and BOT_TOKEN not in row.last_error
    assert (await card(h, row_id)).status == "failed"
    async with h.app.runtime.sessions() as s:
        events = list(await s.scalars(select(AuditEntry.event)))
    assert "outbox.dead_letter" in events
    assert metric(h, "quorum_outbox_dead_letters_total") == 1
    _status, body = await h.api("GET", "/readyz", key=None)
    assert body["checks"]["outbox_dead_letters"] == 1


async def test_other_bad_request_is_dead_at_once(make_quorum: QuorumFactory) -> None:
    h = await make_quorum(**FAST)
    async with transaction(h.app.runtime.sessions) as s:
        await enqueue_text(s, CHAT, "<b>broken")
    await h.wait_for(lambda: drained(h))
    (row,) = await outbox(h)
    assert (row.status, row.attempts) == ("dead", 1)
    assert "parse" in (row.last_error or "")


async def test_not_modified_counts_as_success(make_quorum: QuorumFactory) -> None:
    h = await make_quorum(**FAST)
    row_id = await put_card(h, "one")
    await h.wait_for(lambda: sent(h, row_id))
    await h.emu.add_fault("not_modified", method="editMessageText")
    await edit_card(h, row_id, "two")
    await h.wait_for(lambda: sent(h, row_id, 2))
    rows = await outbox(h)
    assert [(r.status, r.attempts) for r in rows] == [("done", 0), ("done", 0)]


async def test_edit_of_a_vanished_card_posts_it_again(make_quorum: QuorumFactory) -> None:
    h = await make_quorum(**FAST)
    row_id = await put_card(h, "first")
    await h.wait_for(lambda: sent(h, row_id))
    first_id = (await card(h, row_id)).message_id
    await h.emu.add_fault("not_found", method="editMessageText")
    await edit_card(h, row_id, "second")
    await h.wait_for(lambda: sent(h, row_id, 2))
    again = await card(h, row_id)
    assert again.message_id is not None and again.message_id != first_id
    texts = {m["message_id"]: m["text"] for m in await h.bot_messages()}
    assert texts[again.message_id] == "second"


async def test_429_pauses_the_chat_without_using_a_try(make_quorum: QuorumFactory) -> None:
    h = await make_quorum(**FAST)
    await h.emu.add_fault("too_many_requests", method="sendMessage", chat_id=CHAT, retry_after=1)
    t0 = datetime.now(UTC)
    row_id = await put_card(h, "patient")
    await h.wait_for(lambda: sent(h, row_id))
    (row,) = await outbox(h)
    assert (row.status, row.attempts) == ("done", 0)
    assert row.done_at is not None and row.done_at - t0 >= timedelta(seconds=0.9)
    ok = [c for c in await h.emu.calls("sendMessage") if c["status"] == 200]
    assert len(ok) == 1
    assert metric(h, "quorum_telegram_429_total") == 1


async def test_forbidden_holds_rows_until_the_bot_is_back(make_quorum: QuorumFactory) -> None:
    h = await make_quorum(mode="polling", **FAST)
    await h.emu.add_fault("kicked", method="sendMessage", chat_id=CHAT)
    await put_card(h, "while kicked")

    async def inactive() -> bool:
        async with h.app.runtime.sessions() as s:
            chat = await s.get(Chat, CHAT)
            return chat is not None and not chat.active

    await h.wait_for(inactive)
    await put_card(h, "also held")
    rows = await outbox(h)
    assert [(r.status, r.attempts) for r in rows] == [("pending", 0), ("pending", 0)]
    assert await h.bot_messages() == []
    async with h.app.runtime.sessions() as s:
        events = list(await s.scalars(select(AuditEntry.event)))
    assert "chat.deactivated" in events

    await h.emu.add_back(CHAT, by_user_id=1001)
    await h.wait_for(lambda: drained(h))
    assert sorted(m["text"] for m in await h.bot_messages()) == ["also held", "while kicked"]


async def test_migrated_chat_gets_the_message_once(make_quorum: QuorumFactory) -> None:
    h = await make_quorum(**FAST)
    await h.emu.add_fault("migrate", method="sendMessage", chat_id=CHAT)
    row_id = await put_card(h, "to the supergroup")
    await h.wait_for(lambda: sent(h, row_id))
    new_id = (await h.emu.chat(CHAT))["migrated_to"]
    assert new_id is not None
    msg = await card(h, row_id)
    assert msg.chat_id == new_id
    assert [m["text"] for m in await h.bot_messages(new_id)] == ["to the supergroup"]
    async with h.app.runtime.sessions() as s:
        old = await s.get(Chat, CHAT)
        assert old is not None and old.migrated_to == new_id
        assert await s.get(Chat, new_id) is not None


async def test_long_text_is_cut_on_a_safe_boundary(make_quorum: QuorumFactory) -> None:
    h = await make_quorum()
    text = "<b>" + "a &amp; b " * 700 + "</b><i>" + "x" * 2000 + "</i>"
    row_id = await put_card(h, text)
    await h.wait_for(lambda: sent(h, row_id))
    (msg,) = await h.bot_messages()
    assert len(msg["text"]) <= 4096 and msg["text"].endswith("…")
    assert (await card(h, row_id)).sent_text == text


async def test_callback_answer_too_old_is_dropped(make_quorum: QuorumFactory) -> None:
    h = await make_quorum(**FAST)
    async with transaction(h.app.runtime.sessions) as s:
        await enqueue_call(
            s,
            "answerCallbackQuery",
            {"callback_query_id": "12345", "text": "late"},
            chat_id=None,
            priority=Priority.CALLBACK,
            kind="callback_answer",
        )
    await h.wait_for(lambda: drained(h))
    (row,) = await outbox(h)
    assert (row.status, row.attempts) == ("done", 0)


def test_sanitize_masks_the_token() -> None:
    err = f"Cannot connect to https://api.telegram.org/bot{BOT_TOKEN}/sendMessage"
    assert BOT_TOKEN not in sanitize(err)
    assert "<token>" in sanitize(err, BOT_TOKEN)


async def test_sender_stops_when_cancelled_as_it_is_woken(make_quorum: QuorumFactory) -> None:
    # Under load the sender is woken all the time, so a shutdown's cancellation often lands
    # just as its wake-up fires. Python 3.11's wait_for then returned normally and dropped the
    # cancellation: the sender outlived the shutdown. Here the wake-up and the cancellation
    # land in the same loop iteration, while the sender waits for work.
    h = await make_quorum()
    for _ in range(3):
        sender = Sender(h.app.runtime)
        task = asyncio.create_task(sender.run())
        async with asyncio.timeout(5):
            await sender.waiting.wait()  # waiting for work (nothing is queued)
        sender.wake.set()
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=3)
        assert task in done, "the sender kept running after it was cancelled"


async def test_sender_with_every_slot_busy_waits_for_one(make_quorum: QuorumFactory) -> None:
    # One slot, held by a send Telegram is slow to answer, while new rows keep waking the
    # sender: it must sleep until the slot frees, not loop. (It once looped without yielding:
    # webhooks, Redis and the database pool of the whole process starved.)
    h = await make_quorum(outbox_concurrency=1)
    await h.emu.add_fault("timeout", method="sendMessage", delay=3.0)
    async with transaction(h.app.runtime.sessions) as s:
        await enqueue_text(s, CHAT, "slow")
    await h.wait_for(h.bot_messages)  # claimed, its call in flight (answered in 3 s)
    loop = asyncio.get_running_loop()
    worst = 0.0
    for i in range(5):
        async with transaction(h.app.runtime.sessions) as s:
            await enqueue_text(s, CHAT, f"waiting {i}")  # each one wakes the sender
        started = loop.time()
        await asyncio.sleep(0.01)  # a probe, not a wait: how late does the loop wake us?
        worst = max(worst, loop.time() - started)
    assert worst < 0.5, f"the event loop stalled for {worst:.2f} s"
    await h.wait_for(lambda: drained(h), timeout=30)
    texts = [m["text"] for m in await h.bot_messages()]
    assert all(f"waiting {i}" in texts for i in range(5))


async def test_drain_returns_once_everything_due_is_sent(make_quorum: QuorumFactory) -> None:
    # A second sender beside the app's: drain waits for the rows the other one holds too, and
    # for the row a 429 put back (its chat paused for a second).
    h = await make_quorum(**FAST)
    await h.emu.add_fault("too_many_requests", method="sendMessage", chat_id=CHAT, retry_after=1)
    await put_card(h, "card", markup=KEYBOARD)
    async with transaction(h.app.runtime.sessions) as s:
        for i in range(3):
            await enqueue_text(s, CHAT, f"reply {i}")
    async with asyncio.timeout(15):
        await Sender(h.app.runtime).drain()
    assert await drained(h)
    texts = sorted(m["text"] for m in await h.bot_messages())
    assert texts == ["card", "reply 0", "reply 1", "reply 2"]
    assert metric(h, "quorum_telegram_429_total") == 1
