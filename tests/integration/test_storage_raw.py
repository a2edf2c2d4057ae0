"""storage.db.Raw: the private SQLAlchemy members it reads; one transaction with the session."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.dialects.postgresql.asyncpg import AsyncAdapt_asyncpg_connection
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


def test_adapter_still_has_the_members_raw_reads() -> None:
    # storage.db.begin_deferred reads these; a SQLAlchemy release without them must fail here,
    # not as raw statements silently running outside the session's transaction.
    assert "_transaction" in AsyncAdapt_asyncpg_connection.__slots__
    assert callable(AsyncAdapt_asyncpg_connection._start_transaction)
    assert any(
        "_execute_mutex" in getattr(k, "__slots__", ())
        for k in AsyncAdapt_asyncpg_connection.__mro__
    )


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
        adapter = (await (await s.connection()).get_raw_connection()).dbapi_connection
        assert adapter is not None and adapter._transaction is not None
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
