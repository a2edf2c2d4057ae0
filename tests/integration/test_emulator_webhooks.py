"""The emulator's webhook delivery: secrets, retries, ordering, parallelism, expiry."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiogram import Bot
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiohttp import web

from sandbox.emulator import EmulatorClient, TelegramEmulator
from tests.support import (
    ALICE,
    BOB,
    BOT_ID,
    EMU_GROUP,
    EMU_TOKEN,
    Emu,
    Receiver,
    keyboard,
    wait_until,
)

# --------------------------------------------------------------------------- webhooks


async def test_webhook_delivery_with_secret_and_retry(
    bot: Bot,
    fresh_emulator: Emu,
    webhook_receiver: Callable[[Receiver], Awaitable[str]],
) -> None:
    _, emu = fresh_emulator
    seen: list[tuple[str | None, dict[str, Any]]] = []
    answers = iter([500, 200, 200])

    async def handler(request: web.Request) -> web.StreamResponse:
        seen.append((request.headers.get("X-Telegram-Bot-Api-Secret-Token"), await request.json()))
        return web.Response(status=next(answers))

    hook = await webhook_receiver(handler)
    await bot.set_webhook(hook, secret_token="s3cr3t", allowed_updates=["message"])
    sent = await emu.send_text(EMU_GROUP, ALICE, "via hook")
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
    await emu.send_text(EMU_GROUP, ALICE, "second")
    await wait_until(lambda: len(seen) >= 3)
    assert seen[2][1]["message"]["text"] == "second"


async def test_webhook_retry_backoff_and_pending_moved(
    bot: Bot,
    fresh_emulator: Emu,
    webhook_receiver: Callable[[Receiver], Awaitable[str]],
) -> None:
    _, emu = fresh_emulator
    times: list[float] = []

    async def handler(request: web.Request) -> web.StreamResponse:
        times.append(time.monotonic())
        return web.Response(status=503 if len(times) < 4 else 200)

    await bot.get_me()
    await emu.send_text(EMU_GROUP, ALICE, "queued before webhook")
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
    fresh_emulator: Emu,
    webhook_receiver: Callable[[Receiver], Awaitable[str]],
) -> None:
    _, emu = fresh_emulator

    async def handler(request: web.Request) -> web.StreamResponse:
        update = await request.json()
        cq = update.get("callback_query")
        if cq is None:
            return web.Response()
        return web.json_response(
            {"method": "answerCallbackQuery", "callback_query_id": cq["id"], "text": "Voted"}
        )

    msg = await bot.send_message(EMU_GROUP, "card", reply_markup=keyboard(("Approve", "ap:1")))
    await bot.set_webhook(await webhook_receiver(handler))
    tap = await emu.tap(EMU_GROUP, msg.message_id, ALICE, callback_data="ap:1", wait=5)
    assert tap["answer"] is not None
    assert tap["answer"]["text"] == "Voted"
    calls = await emu.calls("answerCallbackQuery")
    assert len(calls) == 1
    assert calls[0]["via_webhook_reply"] is True
    assert calls[0]["status"] == 200
    hooks = await emu.webhook()
    assert hooks[str(BOT_ID)]["url"].endswith("/hook")


# --------------------------------------------------------------------------- control API


async def test_webhook_queues_parallel_per_chat_ordered_within_chat(
    bot: Bot,
    fresh_emulator: Emu,
    webhook_receiver: Callable[[Receiver], Awaitable[str]],
) -> None:
    _, emu = fresh_emulator
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
    await emu.send_text(EMU_GROUP, ALICE, "group-1")
    await emu.send_text(EMU_GROUP, ALICE, "group-2")
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
    fresh_emulator: Emu,
    webhook_receiver: Callable[[Receiver], Awaitable[str]],
) -> None:
    _, emu = fresh_emulator
    release = asyncio.Event()
    arrived: list[str] = []

    async def handler(request: web.Request) -> web.StreamResponse:
        arrived.append((await request.json())["message"]["text"])
        await release.wait()
        return web.Response()

    await emu.add_chat(-2002, "group", title="Other", members=[BOB])
    await bot.set_webhook(await webhook_receiver(handler), max_connections=1)
    await emu.send_text(EMU_GROUP, ALICE, "a")
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

    tg = Bot(EMU_TOKEN, session=AiohttpSession(api=TelegramAPIServer.from_base(url)))
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
