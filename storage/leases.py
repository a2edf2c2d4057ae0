"""The polling lease: one process per bot reads getUpdates from a database's point of view."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

# The advisory-lock namespace (first key) of polling leases; the outbox uses 7170.
POLLING_LOCK = 7171


async def take_polling_lease(engine: AsyncEngine, bot_id: int) -> AsyncConnection | None:
    """A connection holding the session-level lock for `bot_id`, or None when another session
    holds it. The lock lives as long as the connection: close it to give the lease back (a
    process that dies gives it back with its connection)."""
    conn = await engine.connect()
    try:
        got = await conn.scalar(
            text("SELECT pg_try_advisory_lock(:ns, hashtext(:bot))"),
            {"ns": POLLING_LOCK, "bot": str(bot_id)},
        )
        # Out of the transaction: an idle one would be ended by idle_in_transaction timeout.
        await conn.commit()
    except BaseException:
        await conn.close()
        raise
    if not got:
        await conn.close()
        return None
    return conn


async def give_back_polling_lease(conn: AsyncConnection) -> None:
    """Unlock before the connection returns to the pool (which would otherwise keep the lock)."""
    try:
        await conn.execute(text("SELECT pg_advisory_unlock_all()"))
        await conn.commit()
    finally:
        await conn.close()
