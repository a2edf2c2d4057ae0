"""Step-up confirmations of approvals: a vote that counts once its voter confirms it."""

from __future__ import annotations

import uuid
from typing import Any, Literal

from sqlalchemy import ColumnElement, delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from storage.models import Vote

Confirmed = Literal["confirmed", "late", "missing"]


def _unconfirmed(request_id: uuid.UUID, voter: int) -> tuple[ColumnElement[bool], ...]:
    return (
        Vote.request_id == request_id,
        Vote.voter_telegram_id == voter,
        Vote.decision == "approve",
        Vote.confirmed_at.is_(None),
    )


def _age() -> ColumnElement[Any]:
    return func.extract("epoch", func.now() - Vote.created_at)


async def confirmed_voters(session: AsyncSession, request_id: uuid.UUID) -> frozenset[int]:
    rows = await session.scalars(
        select(Vote.voter_telegram_id).where(
            Vote.request_id == request_id, Vote.confirmed_at.is_not(None)
        )
    )
    return frozenset(rows)


async def confirm(
    session: AsyncSession, request_id: uuid.UUID, voter: int, within_seconds: float
) -> Confirmed:
    """Confirm the voter's unconfirmed approval if it is younger than `within_seconds` (by
    the database's clock); a late one is withdrawn, so that a new tap can replace it."""
    done = await session.scalar(
        update(Vote)
        .where(*_unconfirmed(request_id, voter), _age() < within_seconds)
        .values(confirmed_at=func.now())
        .returning(Vote.id)
    )
    if done is not None:
        return "confirmed"
    late = await withdraw(session, request_id, voter)
    return "late" if late else "missing"


async def withdraw(session: AsyncSession, request_id: uuid.UUID, voter: int) -> bool:
    """Delete the voter's approval while it is unconfirmed (Cancel, or too late)."""
    gone = await session.scalar(
        delete(Vote).where(*_unconfirmed(request_id, voter)).returning(Vote.id)
    )
    return gone is not None


async def withdraw_stale(
    session: AsyncSession, request_id: uuid.UUID, voter: int, older_than: float
) -> bool:
    """Delete the voter's unconfirmed approval past its confirmation window, so a new tap
    counts as a new vote instead of "you already voted"."""
    gone = await session.scalar(
        delete(Vote)
        .where(*_unconfirmed(request_id, voter), _age() >= older_than)
        .returning(Vote.id)
    )
    return gone is not None
