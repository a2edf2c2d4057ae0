"""storage.db.Raw: raw asyncpg statements share one transaction with the session."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from storage.db import make_engine, make_sessionmaker, raw
from storage.models import AuditEntry


@pytest.fixture
async def engine(db_url: str) -> AsyncIterator[AsyncEngine]:
    eng = make_engine(db_url, pool_size=2)
    yield eng
    await eng.dispose()


@pytest.fixture
def sessions(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return make_sessionmaker(engine)


async def _audit_count(sessions: async_sessionmaker[AsyncSession]) -> int:
    async with sessions() as s:
        return int(await s.scalar(select(func.count()).select_from(AuditEntry)) or 0)


async def test_raw_first_then_session_share_one_transaction(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    before = await _audit_count(sessions)
    async with sessions() as s:
        await s.begin()
        r = await raw(s)  # before any session statement: Raw must send the BEGIN itself
        await r.execute("INSERT INTO audit_log (event) VALUES ('test.raw')")
        driver = (await (await s.connection()).get_raw_connection()).driver_connection
        assert driver is not None and driver.is_in_transaction()  # asyncpg's own answer
        await s.execute(text("INSERT INTO audit_log (event) VALUES ('test.session')"))
        assert await _audit_count(sessions) == before  # neither is visible outside yet
        await s.rollback()
    assert await _audit_count(sessions) == before


async def test_session_first_then_raw_share_one_transaction(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    before = await _audit_count(sessions)
    async with sessions() as s, s.begin():
        await s.execute(text("INSERT INTO audit_log (event) VALUES ('test.session')"))
        await (await raw(s)).execute("INSERT INTO audit_log (event) VALUES ('test.raw')")
    assert await _audit_count(sessions) == before + 2
    async with sessions() as s:
        await s.begin()
        await s.execute(text("INSERT INTO audit_log (event) VALUES ('test.session')"))
        await (await raw(s)).execute("INSERT INTO audit_log (event) VALUES ('test.raw')")
        await s.rollback()
    assert await _audit_count(sessions) == before + 2
