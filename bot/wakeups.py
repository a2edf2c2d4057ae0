"""Wake-ups for idle workers: one LISTEN connection per process, shared by every worker.

A worker that finds nothing to do sleeps until the database NOTIFYs its channel (a trigger
fires in the transaction that gives it work, and every replica listening is told), until its
next piece of work comes due, or at most FALLBACK_SECONDS: a safety net for a notification
lost with a connection, never the way work is found.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Callable, Iterator

from sqlalchemy.ext.asyncio import AsyncEngine

from storage.db import listening
from storage.wakeups import CHANNELS

log = logging.getLogger(__name__)

FALLBACK_SECONDS = 30.0
# How often the listening connection is checked (a half-open TCP connection says nothing).
CHECK_SECONDS = 30.0
# A worker that found work due but could claim none (another replica holds it) looks again
# after this long, not at once.
BUSY_ELSEWHERE_SECONDS = 0.5


def sleep_for(due_in: float | None, did_work: bool) -> float:
    """How long an idle worker sleeps, from when its next work is due (None: nothing is)."""
    if due_in is None:
        return FALLBACK_SECONDS
    if due_in <= 0:
        return 0.0 if did_work else BUSY_ELSEWHERE_SECONDS
    return min(due_in, FALLBACK_SECONDS)


class Watch:
    """Notifications on one channel since the worker last woke."""

    __slots__ = ("event",)

    def __init__(self) -> None:
        self.event = asyncio.Event()

    async def sleep(self, seconds: float) -> bool:
        """Until notified (perhaps already, while the worker was busy) or `seconds` pass;
        True when notified."""
        try:
            if seconds > 0 and not self.event.is_set():
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(seconds):
                        await self.event.wait()
            return self.event.is_set()
        finally:
            self.event.clear()


class Wakeups:
    """The process's listening connection and, per channel, who to tell."""

    def __init__(self) -> None:
        self._subscribers: dict[str, set[Callable[[], None]]] = {c: set() for c in CHANNELS}
        self._lost = asyncio.Event()
        self.listening = asyncio.Event()  # set while the connection listens
        self.received: Counter[str] = Counter()  # notifications per channel since start

    def subscribe(self, channel: str, callback: Callable[[], None]) -> Callable[[], None]:
        """Call `callback` on each notification on `channel` (and whenever one may have been
        missed); returns the function that unsubscribes."""
        self._subscribers[channel].add(callback)
        return lambda: self._subscribers[channel].discard(callback)

    @contextlib.contextmanager
    def watch(self, channel: str) -> Iterator[Watch]:
        """A worker's subscription to `channel` for the life of its loop: notifications that
        arrive while it works are kept for its next sleep, never lost between the two."""
        watch = Watch()
        unsubscribe = self.subscribe(channel, watch.event.set)
        try:
            yield watch
        finally:
            unsubscribe()

    def notify(self, channel: str) -> None:
        """A notification on `channel`: as the LISTEN connection delivers one."""
        self.received[channel] += 1
        for callback in list(self._subscribers.get(channel, ())):
            callback()

    def _wake_all(self) -> None:
        for callbacks in self._subscribers.values():
            for callback in list(callbacks):
                callback()

    async def run(self, engine: AsyncEngine) -> None:
        """Listen until cancelled; reconnect after losing the connection (every worker is woken
        then, as notifications may have been missed)."""
        backoff = 0.2
        while True:
            self._lost.clear()
            try:
                async with listening(engine, CHANNELS, self.notify, self._lost.set) as check:
                    backoff = 0.2
                    self.listening.set()
                    self._wake_all()  # work may have arrived while nobody listened
                    while True:
                        with contextlib.suppress(TimeoutError):
                            async with asyncio.timeout(CHECK_SECONDS):
                                await self._lost.wait()
                        if self._lost.is_set():
                            raise ConnectionError("listening connection closed")
                        await check()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.info("LISTEN connection lost (%s); reconnecting", type(exc).__name__)
            finally:
                self.listening.clear()
            self._wake_all()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 5.0)
