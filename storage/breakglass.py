"""Break-glass: the team's daily count (serialised per team) and the reviews afterwards."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import cast

from sqlalchemy import Table, func, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from storage.models import ApprovalRequest, BreakGlassReview

_R = cast(Table, ApprovalRequest.__table__)


async def count_today(session: AsyncSession, team_id: int, since: datetime) -> int:
    """Break-glasses of the team decided since `since`, with a transaction lock per team, so
    two at once cannot both pass the daily limit."""
    await session.execute(
        text("SELECT pg_advisory_xact_lock(hashtext('quorum.break_glass'), :team)"),
        {"team": team_id},
    )
    found = await session.scalar(
        select(func.count()).where(
            _R.c.team_id == team_id,
            _R.c.break_glass_reason.is_not(None),
            _R.c.decided_at >= since,
        )
    )
    return int(found or 0)


async def open_review(session: AsyncSession, request_id: uuid.UUID, message_row: int) -> None:
    await session.execute(
        update(_R)
        .where(_R.c.id == request_id)
        .values(review_status="open", review_message_row=message_row)
    )


async def add_review(
    session: AsyncSession, request_id: uuid.UUID, voter: int, name: str, verdict: str
) -> bool:
    """One verdict per approver; False for a second one."""
    done = await session.scalar(
        pg_insert(BreakGlassReview)
        .values(request_id=request_id, voter_telegram_id=voter, voter_name=name, verdict=verdict)
        .on_conflict_do_nothing()
        .returning(BreakGlassReview.voter_telegram_id)
    )
    return done is not None


async def reviews(session: AsyncSession, request_id: uuid.UUID) -> list[tuple[int, str, str]]:
    """(voter, name, verdict) in the order given."""
    rows = await session.execute(
        select(
            BreakGlassReview.voter_telegram_id,
            BreakGlassReview.voter_name,
            BreakGlassReview.verdict,
        )
        .where(BreakGlassReview.request_id == request_id)
        .order_by(BreakGlassReview.created_at, BreakGlassReview.voter_telegram_id)
    )
    return [(r[0], r[1], r[2]) for r in rows]


async def close_review(session: AsyncSession, request_id: uuid.UUID, status: str) -> bool:
    """open → acknowledged/disputed once; False if it was already closed."""
    done = await session.scalar(
        update(_R)
        .where(_R.c.id == request_id, _R.c.review_status == "open")
        .values(review_status=status)
        .returning(_R.c.id)
    )
    return done is not None
