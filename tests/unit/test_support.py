"""tests.support.wait_until: its deadline bounds the whole wait, a stuck predicate included."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine
from typing import Any

import pytest
import uvloop

from tests.support import wait_until


def run(coro: Coroutine[Any, Any, Any]) -> Any:
    # Its own loop, so no unit test needs the app's loop factory (and the app's imports).
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)


def test_returns_the_first_truthy_value_of_a_sync_or_async_predicate() -> None:
    calls = iter([None, 0, "ready"])
    assert run(wait_until(lambda: next(calls), 5, interval=0.001)) == "ready"

    async def answer() -> int:
        return 42

    assert run(wait_until(answer, 5)) == 42


def test_a_predicate_stuck_on_io_is_cut_at_the_deadline() -> None:
    async def stuck() -> bool:
        await asyncio.sleep(30)
        return True

    started = time.monotonic()
    with pytest.raises(AssertionError, match=r"not met in time.*the stuck thing was still running"):
        run(wait_until(stuck, 0.2, what="the stuck thing"))
    assert time.monotonic() - started < 2


def test_a_never_true_predicate_names_what_was_awaited() -> None:
    with pytest.raises(
        AssertionError, match=r"not met in time \(0.1 s\): .*<lambda> \(test_support.py:\d+\)"
    ):
        run(wait_until(lambda: False, 0.1))


def test_the_predicates_own_timeout_is_not_mistaken_for_the_deadline() -> None:
    def raises() -> bool:
        raise TimeoutError("from the predicate")

    with pytest.raises(TimeoutError, match="from the predicate"):
        run(wait_until(raises, 5))
