"""Database engine and sessions, plus the embedded PostgreSQL used when no URL is configured."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
from sqlalchemy import exc as sa_exc
from sqlalchemy import text
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
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


def make_engine(
    url: str,
    *,
    pool_size: int = 30,
    statement_timeout_ms: int = 15000,
    lock_timeout_ms: int = 5000,
) -> AsyncEngine:
    # Bounded waits: a held row lock or a slow statement becomes a clear error, never a hang.
    # No pre-ping (a round trip per checkout): a dropped connection fails its statement, the
    # dialect flags it as a disconnect and the pool invalidates it; callers retry the unit of
    # work (webhook 503, outbox record retries).
    # No overflow: the pool closes an overflow connection as soon as it is returned, so under
    # load (64 taps or 32 alert senders at once) every checkout past the pool's size paid for a
    # new connection (TLS attempt, authentication, the dialect's codec set-up: about half of
    # the single-alert intake's CPU in bench.alerts). `pool_size` connections, kept open.
    return create_async_engine(
        to_async_url(url),
        pool_size=pool_size,
        max_overflow=0,
        pool_pre_ping=False,
        pool_timeout=10,
        # Error messages and logs never carry values (tokens, request bodies).
        hide_parameters=True,
        connect_args={
            "timeout": 5,
            "command_timeout": statement_timeout_ms / 1000 + 5,
            "server_settings": {
                "statement_timeout": str(statement_timeout_ms),
                "lock_timeout": str(lock_timeout_ms),
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


async def ensure_database(base_url: str, database: str) -> None:
    conn = await asyncpg.connect(to_sync_dsn(base_url))
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", database)
        if not exists:
            await conn.execute(f'CREATE DATABASE "{database}"')
    finally:
        await conn.close()


@asynccontextmanager
async def listening(
    engine: AsyncEngine,
    channels: Sequence[str],
    notified: Callable[[str], None],
    lost: Callable[[], None],
) -> AsyncIterator[Callable[[], Awaitable[None]]]:
    """LISTEN on `channels` over one dedicated connection (outside the pool) while in the block;
    `notified(channel)` runs on each notification, `lost()` once if the connection closes.

    Yields a health check to await now and then: it raises once the connection is lost (a
    half-open TCP connection is only found by using it).
    """
    dsn = to_sync_dsn(engine.url.render_as_string(hide_password=False))
    conn = await asyncpg.connect(dsn, timeout=5, server_settings={"application_name": "quorum"})
    try:
        conn.add_termination_listener(lambda *_: lost())
        for channel in channels:
            await conn.add_listener(channel, lambda _c, _pid, ch, _payload: notified(ch))

        async def check() -> None:
            await conn.fetchval("SELECT 1", timeout=5)

        yield check
    finally:
        with contextlib.suppress(Exception):
            async with asyncio.timeout(1):
                await conn.close()


# ---------------------------------------------------------------- raw asyncpg inside a session

# asyncpg errors that mean the connection is gone (or in an unknown state): the pool must drop
# it, and callers see what SQLAlchemy would raise (storage unavailable, retry the unit of work).
_GONE: tuple[type[BaseException], ...] = (
    asyncpg.exceptions.InterfaceError,
    asyncpg.exceptions.PostgresConnectionError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CrashShutdownError,
    asyncpg.exceptions.CannotConnectNowError,
    # The client's protocol in a state it cannot leave ("cannot switch to state 11; another
    # operation (2) is in progress"), seen on a pooled connection whose backend was terminated
    # while it sat idle: the plain repeat answered 500 instead of 503.
    asyncpg.exceptions.InternalClientError,
    OSError,
    TimeoutError,
)
_RAW_KEY = "quorum.raw"


async def begin_deferred(adapter: Any) -> None:
    """Send the BEGIN that SQLAlchemy's asyncpg adapter defers to its first statement.

    SQLAlchemy has no public call for this: the adapter begins inside its cursor's execute,
    and the public ways to trigger that (`session.execute(select(1))`, `connection.exec_driver_sql`)
    cost a statement round trip, which the raw hot paths exist to save. So this, and only
    this, reads three private members of AsyncAdapt_asyncpg_connection (checked against
    SQLAlchemy 2.1): `_transaction`, `_execute_mutex`, `_start_transaction`.
    tests/test_storage_raw.py fails if a release renames them or changes what they mean.
    """
    if adapter._transaction is None and adapter.isolation_level != "autocommit":
        async with adapter._execute_mutex:
            if adapter._transaction is None:
                await adapter._start_transaction()


class Raw:
    """The asyncpg connection of a session's open transaction.

    Hot paths run their fixed statements here: asyncpg prepares each SQL text once per
    connection and reuses it, skipping SQLAlchemy's per-execute compile, cache-key and result
    machinery (a third of the vote path's CPU). jsonb parameters are passed as JSON text
    (`$1::jsonb` with json.dumps); json/jsonb results come back decoded by the codecs the
    SQLAlchemy dialect installs on each connection. Errors surface as the SQLAlchemy
    exceptions the same statement would raise through the session.
    """

    __slots__ = ("_adapter", "_conn", "_driver")

    def __init__(self, conn: AsyncConnection, adapter: Any, driver: Any) -> None:
        self._conn = conn
        self._adapter = adapter  # SQLAlchemy's DBAPI adapter around `driver`
        self._driver = driver

    async def _begin(self) -> None:
        try:
            await begin_deferred(self._adapter)
        except Exception as exc:
            # The adapter raised its DBAPI-level translation; judge the asyncpg original.
            cause = exc.__cause__
            raise await self._translate(
                "BEGIN", cause if isinstance(cause, Exception) else exc
            ) from exc

    async def fetchrow(self, sql: str, *args: Any) -> Any:
        try:
            return await self._driver.fetchrow(sql, *args)
        except Exception as exc:
            raise await self._translate(sql, exc) from exc

    async def fetchval(self, sql: str, *args: Any) -> Any:
        try:
            return await self._driver.fetchval(sql, *args)
        except Exception as exc:
            raise await self._translate(sql, exc) from exc

    async def fetch(self, sql: str, *args: Any) -> list[Any]:
        try:
            rows: list[Any] = await self._driver.fetch(sql, *args)
        except Exception as exc:
            raise await self._translate(sql, exc) from exc
        return rows

    async def execute(self, sql: str, *args: Any) -> None:
        try:
            await self._driver.execute(sql, *args)
        except Exception as exc:
            raise await self._translate(sql, exc) from exc

    async def stream(self, sql: str, *args: Any, prefetch: int = 1000) -> AsyncIterator[Any]:
        """The rows of `sql` through a server-side cursor: at most `prefetch` rows in memory."""
        try:
            async for row in self._driver.cursor(sql, *args, prefetch=prefetch):
                yield row
        except Exception as exc:
            raise await self._translate(sql, exc) from exc

    async def _translate(self, sql: str, exc: Exception) -> Exception:
        if isinstance(exc, _GONE):
            # Invalidated, the session's rollback skips the dead connection and the pool
            # replaces it, as after a disconnect seen by SQLAlchemy itself.
            with contextlib.suppress(Exception):
                await self._conn.invalidate(exc)
            cls: type[sa_exc.DBAPIError] = (
                sa_exc.InterfaceError
                if isinstance(exc, asyncpg.exceptions.InterfaceError)
                else sa_exc.OperationalError
            )
            return cls(sql, None, exc, connection_invalidated=True)
        if isinstance(exc, asyncpg.exceptions.IntegrityConstraintViolationError):
            return sa_exc.IntegrityError(sql, None, exc)
        if isinstance(exc, asyncpg.exceptions.SyntaxOrAccessError):
            return sa_exc.ProgrammingError(sql, None, exc)
        if isinstance(exc, asyncpg.exceptions.InternalServerError):
            return sa_exc.InternalError(sql, None, exc)
        if isinstance(exc, asyncpg.exceptions.PostgresError):
            return sa_exc.DBAPIError(sql, None, exc)
        return exc


@asynccontextmanager
async def autocommit(engine: AsyncEngine) -> AsyncIterator[Raw]:
    """A pooled connection outside any transaction: each statement commits on its own (no
    BEGIN and COMMIT round trips, no session). For single statements that are a whole unit of
    work (storage.votes.count_plain)."""
    async with engine.connect() as conn:
        fairy = await conn.get_raw_connection()
        yield Raw(conn, fairy.dbapi_connection, fairy.driver_connection)


async def raw(session: AsyncSession) -> Raw:
    """The asyncpg connection under `session`, inside the transaction the session has begun.

    SQLAlchemy's asyncpg adapter sends BEGIN lazily, with its first statement; it is sent
    here when needed, so statements on the raw connection never run outside the unit of work.
    The handle is kept for the rest of the session's transaction (two greenlet hops saved per
    statement).
    """
    tx = session.sync_session.get_transaction()
    cached = session.info.get(_RAW_KEY)
    found: Raw
    if tx is not None and cached is not None and cached[0] is tx:
        found = cached[1]
    else:
        conn = await session.connection()
        fairy = await conn.get_raw_connection()
        found = Raw(conn, fairy.dbapi_connection, fairy.driver_connection)
        session.info[_RAW_KEY] = (session.sync_session.get_transaction(), found)
    await found._begin()
    return found
