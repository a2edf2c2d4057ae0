"""The assembled bot answers /start through the emulator over real HTTP."""

from __future__ import annotations

import asyncio

import uvloop

from quorum.app import run_loop
from tests.support import ALICE, CHAT, Harness


def test_serving_processes_and_tests_run_on_uvloop() -> None:
    async def loop_type() -> type[asyncio.AbstractEventLoop]:
        return type(asyncio.get_running_loop())

    assert run_loop(loop_type()) is uvloop.Loop


async def test_start_answers_with_sender_id(quorum: Harness) -> None:
    assert isinstance(asyncio.get_running_loop(), uvloop.Loop)  # as under `quorum run`
    await quorum.emu.send_text(CHAT, ALICE, "/start")

    async def reply() -> list[dict[str, object]]:
        return [m for m in await quorum.bot_messages() if "Telegram id is 1001" in str(m["text"])]

    msgs = await quorum.wait_for(reply)
    assert "team platform" in str(msgs[0]["text"])
