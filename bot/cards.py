"""The card worker: one loop re-renders every kind of card whose coalesced refresh is due.

Votes and alert repeats never edit a card themselves: they mark it due, and this worker
renders it at most once per interval (Telegram lets a group's message be edited about every
3 s), so a storm of taps or repeats costs one edit per card per interval.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from bot import alerts, approvals
from bot.runtime import Runtime
from bot.wakeups import sleep_for
from storage import wakeups
from storage.db import transaction

# One pass per kind of card: claims that kind's due cards (row locks, so replicas share the
# work), renders them, returns how many it refreshed.
CardPass = Callable[[Runtime], Awaitable[int]]
CARD_KINDS: tuple[CardPass, ...] = (approvals.refresh_due_cards, alerts.refresh_due_cards)


async def refresh_due_cards(rt: Runtime) -> int:
    """One pass over every kind of card; the number of cards refreshed."""
    done = 0
    for kind in CARD_KINDS:
        done += await kind(rt)
    return done


async def run_cards(rt: Runtime) -> None:
    """The card worker: a pass, then (when it found nothing) sleep until a card is marked due
    (NOTIFY) or the next one comes due. A failure (a database restart) ends it; the app's
    supervisor logs it and starts it again."""
    with rt.wakeups.watch(wakeups.CARDS) as woken:
        while True:
            if await refresh_due_cards(rt):
                continue
            async with transaction(rt.sessions) as session:
                due_in = await wakeups.cards_due_in(session)
            await woken.sleep(sleep_for(due_in, did_work=False))
