"""The card worker: one loop re-renders every kind of card whose coalesced refresh is due.

Votes and alert repeats never edit a card themselves: they mark it due, and this worker
renders it at most once per interval (Telegram lets a group's message be edited about every
3 s), so a storm of taps or repeats costs one edit per card per interval.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from bot import alerts, approvals
from bot.incidents import workers as incidents
from bot.runtime import Runtime
from bot.wakeups import sleep_for
from storage import wakeups
from storage.db import transaction

# One pass per kind of card: claims that kind's due cards (row locks, so replicas share the
# work), renders them, returns how many it refreshed.
CardPass = Callable[[Runtime], Awaitable[int]]
CARD_KINDS: tuple[CardPass, ...] = (
    approvals.refresh_due_cards,
    alerts.refresh_due_cards,
    incidents.refresh_due_cards,
)


def _due(due: wakeups.CardsDue) -> tuple[float | None, ...]:
    """Each kind's due time, in CARD_KINDS order."""
    return (due.approvals, due.alerts, due.incidents)


async def run_cards(rt: Runtime) -> None:
    """The card worker: asks when each kind's next card is due (one query), runs the passes of
    the kinds due now, and otherwise sleeps until a card is marked due (NOTIFY) or the next one
    comes due. A pass of a kind with nothing due is never run: each is a transaction, and a
    vote's card once cost five of them (two passes of both kinds and the query). A failure (a
    database restart) ends it; the app's supervisor logs it and starts it again."""
    with rt.wakeups.watch(wakeups.CARDS) as woken:
        while True:
            async with transaction(rt.sessions) as session:
                due = _due(await wakeups.cards_due_in(session))
            done = 0
            for kind, due_in in zip(CARD_KINDS, due, strict=True):
                if due_in is not None and due_in <= 0:
                    done += await kind(rt)
            if done:
                continue  # more may have come due meanwhile
            soonest = min((d for d in due if d is not None), default=None)
            await woken.sleep(sleep_for(soonest, did_work=False))
