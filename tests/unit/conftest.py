"""Unit tests are pure: any attempt to open a network connection fails the test loudly."""

from __future__ import annotations

import asyncio
import os
import socket
from pathlib import Path
from typing import Any

import pytest


class NetworkInUnitTest(AssertionError):
    """A unit test tried to connect somewhere; it belongs in tests/integration or tests/e2e."""


def _refuse(*args: Any, **kwargs: Any) -> Any:
    raise NetworkInUnitTest(
        "unit tests must not open connections (PostgreSQL, Redis, HTTP); "
        f"attempted with {args[1:]!r}: move the test to tests/integration or tests/e2e"
    )


async def _refuse_async(*args: Any, **kwargs: Any) -> Any:
    _refuse(*args, **kwargs)


def _loop_classes() -> list[type[Any]]:
    classes: list[type[Any]] = [asyncio.BaseEventLoop]
    try:
        import uvloop
    except ImportError:  # the plain asyncio loop is then the only one
        return classes
    classes.append(uvloop.Loop)
    return classes


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(socket.socket, "connect", _refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", _refuse)
    for cls in _loop_classes():
        for name in ("create_connection", "create_unix_connection", "sock_connect"):
            monkeypatch.setattr(cls, name, _refuse_async)


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No QUORUM_* from the developer's shell and no .env from the repository."""
    for name in list(os.environ):
        if name.startswith("QUORUM_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
