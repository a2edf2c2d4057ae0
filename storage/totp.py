"""Approvers' sealed TOTP secrets and their wrong-code lock (rows shared by replicas)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from storage.models import TotpSecret


@dataclass(frozen=True, slots=True)
class SecretRecord:
    telegram_id: int
    kid: str
    sealed: bytes
    failures: int
    locked_until: datetime | None
    db_now: datetime


async def enroll(session: AsyncSession, telegram_id: int, kid: str, sealed: bytes) -> None:
    """Store (or replace) the person's secret; a new one starts with no failures."""
    stmt = pg_insert(TotpSecret).values(telegram_id=telegram_id, kid=kid, sealed=sealed)
    await session.execute(
        stmt.on_conflict_do_update(
            index_elements=[TotpSecret.telegram_id],
            set_={
                "kid": kid,
                "sealed": sealed,
                "failures": 0,
                "locked_until": None,
                "created_at": func.now(),
            },
        )
    )


async def lock_secret(session: AsyncSession, telegram_id: int) -> SecretRecord | None:
    """The person's secret, row-locked so concurrent codes count their failures one by one."""
    row = (
        await session.execute(
            select(
                TotpSecret.telegram_id,
                TotpSecret.kid,
                TotpSecret.sealed,
                TotpSecret.failures,
                TotpSecret.locked_until,
                func.now(),
            )
            .where(TotpSecret.telegram_id == telegram_id)
            .with_for_update()
        )
    ).first()
    return SecretRecord(*row) if row else None


async def enrolled(session: AsyncSession, telegram_id: int) -> bool:
    found = await session.scalar(
        select(TotpSecret.telegram_id).where(TotpSecret.telegram_id == telegram_id)
    )
    return found is not None


async def record_failure(
    session: AsyncSession, telegram_id: int, max_failures: int, lock_seconds: float
) -> int:
    """One more wrong code; the max-th locks step-up for `lock_seconds` (and starts over).
    Returns the failures left before the lock (0: locked now)."""
    failures = await session.scalar(
        update(TotpSecret)
        .where(TotpSecret.telegram_id == telegram_id)
        .values(failures=TotpSecret.failures + 1)
        .returning(TotpSecret.failures)
    )
    if failures is None or failures < max_failures:
        return max_failures - (failures or 0)
    await session.execute(
        update(TotpSecret)
        .where(TotpSecret.telegram_id == telegram_id)
        .values(
            failures=0,
            locked_until=func.now() + func.make_interval(0, 0, 0, 0, 0, 0, lock_seconds),
        )
    )
    return 0


async def record_success(session: AsyncSession, telegram_id: int) -> None:
    await session.execute(
        update(TotpSecret).where(TotpSecret.telegram_id == telegram_id).values(failures=0)
    )
