"""Fixtures of the emulator's own tests: a fresh emulator per test, a bot on it, webhook sinks."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from aiogram import Bot
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiohttp import web

from sandbox.emulator import EmulatorClient, TelegramEmulator
from tests.support import ALICE, BOB, EMU_GROUP, EMU_TOKEN, Emu, Receiver, ShiftedClock


@pytest.fixture
def clock() -> ShiftedClock:
    return ShiftedClock()


@pytest.fixture
async def fresh_emulator(clock: ShiftedClock) -> AsyncIterator[Emu]:
    """A fresh emulator on 127.0.0.1:<free port>, plus a control client."""
    emulator = TelegramEmulator(
        webhook_retry_base=0.05, callback_update_max_age=5.0, flood_clock=clock
    )
    url = await emulator.start()
    client = EmulatorClient(url)
    await client.add_user(ALICE, "Alice", username="alice")
    await client.add_user(BOB, "Bob")
    await client.add_chat(EMU_GROUP, "group", title="Ops", members=[ALICE, BOB])
    try:
        yield url, client
    finally:
        await client.close()
        await emulator.stop()


@pytest.fixture
async def bot(fresh_emulator: Emu) -> AsyncIterator[Bot]:
    url, _ = fresh_emulator
    session = AiohttpSession(api=TelegramAPIServer.from_base(url))
    tg = Bot(EMU_TOKEN, session=session)
    try:
        yield tg
    finally:
        await tg.session.close()


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
