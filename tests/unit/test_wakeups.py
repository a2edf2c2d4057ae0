"""How long an idle worker sleeps, and notifications kept while it works."""

from __future__ import annotations

import asyncio

import pytest

from bot.wakeups import BUSY_ELSEWHERE_SECONDS, FALLBACK_SECONDS, Wakeups, sleep_for
from storage.wakeups import CARDS, OUTBOX


@pytest.mark.parametrize(
    ("due_in", "did_work", "expected"),
    [
        (None, False, FALLBACK_SECONDS),  # nothing scheduled: only the safety net
        (None, True, FALLBACK_SECONDS),
        (2.5, False, 2.5),  # the next item's due time
        (FALLBACK_SECONDS * 10, False, FALLBACK_SECONDS),  # never past the safety net
        (0.0, True, 0.0),  # due now and work was done: go again at once
        (-3.0, True, 0.0),
        (0.0, False, BUSY_ELSEWHERE_SECONDS),  # due but unclaimable: another replica has it
        (-3.0, False, BUSY_ELSEWHERE_SECONDS),
    ],
)
def test_sleep_for(due_in: float | None, did_work: bool, expected: float) -> None:
    assert sleep_for(due_in, did_work) == expected


async def test_a_notification_during_work_ends_the_next_sleep_at_once() -> None:
    hub = Wakeups()
    with hub.watch(CARDS) as woken:
        hub.notify(CARDS)  # arrives while the worker is busy, before it sleeps
        hub.notify(OUTBOX)  # another channel's
        async with asyncio.timeout(1):
            assert await woken.sleep(FALLBACK_SECONDS) is True
        assert await woken.sleep(0.01) is False  # consumed: the next sleep runs its course
    hub.notify(CARDS)  # unsubscribed: nobody left to tell
