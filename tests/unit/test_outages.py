"""storage_outage on asyncpg's own errors, raised unwrapped by statements on the raw connection."""

from __future__ import annotations

import asyncpg
import pytest

from bot.outages import storage_outage


@pytest.mark.parametrize(
    ("exc", "outage"),
    [
        (asyncpg.exceptions.ConnectionDoesNotExistError("gone"), True),  # 08003
        (asyncpg.exceptions.AdminShutdownError("shutdown"), True),  # 57P01
        (asyncpg.exceptions.SerializationError("retry"), True),  # 40001
        (asyncpg.exceptions.UntranslatableCharacterError("\\u0000"), False),  # 22P05
        (asyncpg.exceptions.UniqueViolationError("dup"), False),  # 23505
        (asyncpg.exceptions.RaiseError("trigger"), False),  # P0001
    ],
)
def test_raw_asyncpg_errors_are_classified_by_sqlstate(exc: Exception, outage: bool) -> None:
    assert storage_outage(exc) is outage
