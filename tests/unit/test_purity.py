"""The unit folder's guard works: a connection attempt fails instead of quietly succeeding."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable

import pytest
import uvloop

REFUSED = "unit tests must not open connections"


def test_a_blocking_connect_is_refused() -> None:
    with pytest.raises(AssertionError, match=REFUSED):
        socket.create_connection(("127.0.0.1", 5432), timeout=0.5)
    with socket.socket() as s, pytest.raises(AssertionError, match=REFUSED):
        s.connect_ex(("127.0.0.1", 6379))


@pytest.mark.parametrize("new_loop", [asyncio.new_event_loop, uvloop.new_event_loop])
def test_an_event_loop_connect_is_refused(
    new_loop: Callable[[], asyncio.AbstractEventLoop],
) -> None:
    # Sync on purpose, with its own loop: both loop kinds the suite runs on are covered, and
    # no unit test needs the app's loop factory (importing it loads the whole app).
    with (
        asyncio.Runner(loop_factory=new_loop) as runner,
        pytest.raises(AssertionError, match=REFUSED),
    ):
        runner.run(asyncio.open_connection("127.0.0.1", 6379))
