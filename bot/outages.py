"""Which storage failures are outages (unavailable, retry later) rather than bugs or bad values."""

from __future__ import annotations

from sqlalchemy import exc as sa_exc

# SQLSTATE classes that say the database is unreachable, overloaded or shutting down (retry
# later), never that the statement or its values were wrong: connection exception, transaction
# rollback (serialization, deadlock), invalid authorization, invalid catalog name, insufficient
# resources, object not in prerequisite state (lock timeout, database not accepting
# connections), operator intervention (shutdown, cancel), system error.
_OUTAGE_SQLSTATE_CLASSES = frozenset({"08", "40", "28", "3D", "53", "55", "57", "58"})


def storage_outage(exc: BaseException) -> bool:
    """Whether a storage error means "unavailable, retry" rather than a bug or a bad value.

    Also for asyncpg's own errors, raised unwrapped by statements run on the raw connection."""
    if isinstance(exc, (OSError, TimeoutError, sa_exc.TimeoutError, sa_exc.DisconnectionError)):
        return True
    cause: BaseException | None = exc
    if isinstance(exc, sa_exc.DBAPIError):
        if exc.connection_invalidated or isinstance(
            exc, (sa_exc.OperationalError, sa_exc.InterfaceError)
        ):
            return True
        cause = exc.orig
    sqlstate = getattr(cause, "sqlstate", None)
    return isinstance(sqlstate, str) and sqlstate[:2] in _OUTAGE_SQLSTATE_CLASSES
