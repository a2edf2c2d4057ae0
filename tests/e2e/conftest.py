"""Fixtures of the end-to-end tests: a real Alertmanager beside Quorum."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from tests.e2e.alertmanager import Alertmanager
from tests.support import in_ci

BINARY = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")


@pytest.fixture
def alertmanager_binary() -> str:
    if BINARY is None:
        if in_ci():
            pytest.fail("prometheus-alertmanager is not installed; CI must install it")
        pytest.skip(
            "prometheus-alertmanager not installed (apt-get install prometheus-alertmanager)"
        )
    return BINARY


@pytest.fixture
async def alertmanagers(
    alertmanager_binary: str, tmp_path: Path
) -> AsyncIterator[Callable[[int], Alertmanager]]:
    started: list[Alertmanager] = []

    def make(port: int) -> Alertmanager:
        am = Alertmanager(alertmanager_binary, tmp_path / f"am-{len(started)}", port)
        started.append(am)
        return am

    yield make
    for am in started:
        await am.stop()
