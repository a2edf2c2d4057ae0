"""tests.support: wait_until's deadline bounds the whole wait, a stuck predicate included;
each pytest-xdist worker gets a Redis database of its own."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine
from typing import Any

import pytest
import uvloop

from tests.support import redis_db_for_worker, wait_until


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


@pytest.mark.parametrize(
    ("url", "index", "expected"),
    [
        ("redis://127.0.0.1:6379/9", 0, "redis://127.0.0.1:6379/9"),
        ("redis://127.0.0.1:6379/9", 1, "redis://127.0.0.1:6379/10"),
        ("redis://127.0.0.1:6379", 2, "redis://127.0.0.1:6379/2"),
        (
            "redis://:pw@127.0.0.1:6380/0?socket_timeout=1",
            3,
            "redis://:pw@127.0.0.1:6380/3?socket_timeout=1",
        ),
    ],
)
def test_each_worker_takes_the_next_redis_database(url: str, index: int, expected: str) -> None:
    assert redis_db_for_worker(url, index) == expected


def test_a_worker_past_the_sixteenth_database_is_refused() -> None:
    with pytest.raises(RuntimeError, match="no Redis database 16"):
        redis_db_for_worker("redis://127.0.0.1:6379/15", 1)
