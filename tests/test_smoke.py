"""The assembled bot answers /start through the emulator over real HTTP."""

from __future__ import annotations

from tests.conftest import ALICE, CHAT, Harness


async def test_start_answers_with_sender_id(quorum: Harness) -> None:
    await quorum.emu.send_text(CHAT, ALICE, "/start")

    async def reply() -> list[dict[str, object]]:
        return [m for m in await quorum.bot_messages() if "Telegram id is 1001" in str(m["text"])]

    msgs = await quorum.wait_for(reply)
    assert "team platform" in str(msgs[0]["text"])
