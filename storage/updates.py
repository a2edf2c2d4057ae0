"""Inbound Telegram updates: stored once by update id, retried when handling failed, pruned."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from storage.db import raw
from storage.models import InboundUpdate

# Attempts after which a failed update is left alone (kept for an operator to look at).
MAX_ATTEMPTS = 5


@dataclass(frozen=True, slots=True)
class StoredUpdate:
    id: int
    update_id: int
    payload: dict[str, Any]


# Run on the session's asyncpg connection, prepared once per connection (through SQLAlchemy
# this insert cost more CPU than the database spent on it).
_STORE_DONE = (
    "INSERT INTO inbound_updates (update_id, payload, status, processed_at)"
    " VALUES ($1, $2::jsonb, 'done', now())"
    " ON CONFLICT (update_id) DO NOTHING RETURNING id"
)


async def store_done(session: AsyncSession, update_id: int, body: str) -> bool:
    """Store an update (its JSON text) as handled; False when it was stored before."""
    return await (await raw(session)).fetchrow(_STORE_DONE, update_id, body) is not None


async def store_failed(
    session: AsyncSession, update_id: int, payload: dict[str, Any], error: str
) -> None:
    """Keep an update whose handling raised, for `claim_retry` (a stored one is left as is)."""
    await session.execute(
        pg_insert(InboundUpdate)
        .values(update_id=update_id, payload=payload, status="failed", attempts=1, last_error=error)
        .on_conflict_do_nothing(index_elements=[InboundUpdate.update_id])
    )


async def claim_retry(session: AsyncSession) -> StoredUpdate | None:
    """The oldest update still to be handled, locked; other processes skip it."""
    row = (
        await session.execute(
            select(InboundUpdate.id, InboundUpdate.update_id, InboundUpdate.payload)
            .where(
                InboundUpdate.status.in_(("pending", "failed")),
                InboundUpdate.attempts < MAX_ATTEMPTS,
            )
            .order_by(InboundUpdate.id)
            .limit(1)
            .with_for_update(skip_locked=True)
        )
    ).first()
    return None if row is None else StoredUpdate(row.id, row.update_id, row.payload)


async def mark_done(session: AsyncSession, row_id: int) -> None:
    await session.execute(
        update(InboundUpdate)
        .where(InboundUpdate.id == row_id)
        .values(status="done", processed_at=func.now())
    )


async def mark_failed(session: AsyncSession, row_id: int, error: str) -> None:
    await session.execute(
        update(InboundUpdate)
        .where(InboundUpdate.id == row_id)
        .values(attempts=InboundUpdate.attempts + 1, last_error=error)
    )


async def prune(session: AsyncSession, older_than_days: int) -> int:
    """Forget handled updates received more than `older_than_days` ago; returns how many."""
    result = await session.execute(
        delete(InboundUpdate)
        .where(
            InboundUpdate.status == "done",
            InboundUpdate.received_at < func.now() - timedelta(days=older_than_days),
        )
        .returning(InboundUpdate.id)
    )
    return len(result.all())


async def store_unretried(
    session: AsyncSession, update_id: int, payload: dict[str, Any], error: str
) -> None:
    """Keep a failed update for an operator only: `claim_retry` never picks it up."""
    await session.execute(
        pg_insert(InboundUpdate)
        .values(
            update_id=update_id,
            payload=payload,
            status="failed",
            attempts=MAX_ATTEMPTS,
            last_error=error,
        )
        .on_conflict_do_nothing(index_elements=[InboundUpdate.update_id])
    )
