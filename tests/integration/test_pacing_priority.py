"""Count refreshes leave part of a group's per-minute window to first appearances and
resolves: the shared budget in real Redis."""

from __future__ import annotations

from bot.outbox.pacing import Pacer
from storage.outbox import Priority
from tests.support import CHAT, QuorumFactory


async def test_refreshes_leave_half_the_group_window(make_quorum: QuorumFactory) -> None:
    # Only the group window binds here: the bot and chat rates are far above it.
    h = await make_quorum(pace_bot_per_second=1000, pace_chat_per_second=1000, pace_chat_burst=100)
    pacer = Pacer(h.app.runtime)
    refreshes = [await pacer.acquire(CHAT, Priority.ALERT_EDIT) for _ in range(11)]
    assert refreshes[:10] == [0.0] * 10 and refreshes[10] > 0
    firsts = [await pacer.acquire(CHAT, Priority.ALERT_RESOLVE) for _ in range(11)]
    assert firsts[:10] == [0.0] * 10 and firsts[10] > 0
    assert await pacer.acquire(CHAT, Priority.ALERT_EDIT) > 0
