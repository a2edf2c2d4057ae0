"""Trust records: per team and action pattern, approvals that went well in a row."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from storage.models import TrustRecord as TrustRow

_T = cast(Table, TrustRow.__table__)
_COLUMNS = tuple(c for c in _T.c if c.name not in ("created_at",))


@dataclass(frozen=True, slots=True)
class TrustRecord:
    team_id: int
    pattern: str
    score: int
    total_approvals: int
    total_rejections: int
    last_approver: str | None
    last_approved_at: datetime | None
    last_rejecter: str | None
    last_rejected_at: datetime | None
    updated_at: datetime


def _record(row: Any) -> TrustRecord:
    m = row._mapping
    return TrustRecord(*(m[c] for c in _COLUMNS))


async def score(session: AsyncSession, team_id: int, pattern: str) -> int:
    """The pattern's score now (0 for a pattern never seen)."""
    found = await session.scalar(
        select(_T.c.score).where(_T.c.team_id == team_id, _T.c.pattern == pattern)
    )
    return int(found or 0)


async def raise_score(
    session: AsyncSession, team_id: int, pattern: str, approver: str
) -> TrustRecord:
    """+1: an approved request of the pattern whose executor reported success."""
    stmt = pg_insert(_T).values(
        team_id=team_id,
        pattern=pattern,
        score=1,
        total_approvals=1,
        last_approver=approver,
        last_approved_at=func.now(),
    )
    row = (
        await session.execute(
            stmt.on_conflict_do_update(
                index_elements=[_T.c.team_id, _T.c.pattern],
                set_={
                    "score": _T.c.score + 1,
                    "total_approvals": _T.c.total_approvals + 1,
                    "last_approver": approver,
                    "last_approved_at": func.now(),
                    "updated_at": func.now(),
                },
            ).returning(*_COLUMNS)
        )
    ).one()
    return _record(row)


async def reset_score(
    session: AsyncSession, team_id: int, pattern: str, *, rejecter: str | None
) -> tuple[int, TrustRecord]:
    """Back to 0, with the score it had; `rejecter` (a rejection, a failure, a revocation)
    also counts one more rejection, None (a reset by hand, a break-glass) does not."""
    before = await score(session, team_id, pattern)
    counted = int(rejecter is not None)
    values: dict[str, Any] = {"score": 0, "updated_at": func.now()}
    if rejecter is not None:
        values |= {"last_rejecter": rejecter, "last_rejected_at": func.now()}
    stmt = pg_insert(_T).values(
        team_id=team_id,
        pattern=pattern,
        score=0,
        total_rejections=counted,
        last_rejecter=rejecter,
        last_rejected_at=func.now() if rejecter is not None else None,
    )
    row = (
        await session.execute(
            stmt.on_conflict_do_update(
                index_elements=[_T.c.team_id, _T.c.pattern],
                set_={**values, "total_rejections": _T.c.total_rejections + counted},
            ).returning(*_COLUMNS)
        )
    ).one()
    return before, _record(row)


async def get(session: AsyncSession, team_id: int, pattern: str) -> TrustRecord | None:
    row = (
        await session.execute(
            select(*_COLUMNS).where(_T.c.team_id == team_id, _T.c.pattern == pattern)
        )
    ).first()
    return _record(row) if row else None


async def by_digest(session: AsyncSession, team_id: int, digest: bytes) -> str | None:
    """The team's pattern whose SHA-256 starts with `digest` (a button's reference)."""
    found = await session.scalar(
        select(_T.c.pattern).where(
            _T.c.team_id == team_id,
            func.substring(func.sha256(func.convert_to(_T.c.pattern, "UTF8")), 1, len(digest))
            == digest,
        )
    )
    return cast(str | None, found)


async def page(
    session: AsyncSession, team_id: int, limit: int, *, after: str | None = None
) -> list[TrustRecord]:
    """The team's records by pattern, those after `after` if given (keyset pagination)."""
    stmt = select(*_COLUMNS).where(_T.c.team_id == team_id)
    if after is not None:
        stmt = stmt.where(_T.c.pattern > after)
    rows = await session.execute(stmt.order_by(_T.c.pattern).limit(limit))
    return [_record(r) for r in rows]
