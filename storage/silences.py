"""Silences: stored, matched against firing alerts, and synced to Alertmanager by a job."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import DateTime, and_, case, func, literal, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from storage.models import Alert, Silence

# The fingerprint of a maintenance window's silence: it matches alerts by the labels in its
# matchers ({"labels": {...}}), not by one fingerprint.
MAINTENANCE = "maintenance"


@dataclass(frozen=True, slots=True)
class SilenceRecord:
    id: int
    team_id: int
    fingerprint: str
    matchers: dict[str, Any]
    created_by_id: int
    created_by_name: str
    starts_at: datetime
    ends_at: datetime
    cancelled_at: datetime | None
    alertmanager_silence_id: str | None
    am_status: str | None
    am_error: str | None


def silence_record(row: Silence) -> SilenceRecord:
    return SilenceRecord(
        id=row.id,
        team_id=row.team_id,
        fingerprint=row.fingerprint,
        matchers=dict(row.matchers or {}),
        created_by_id=row.created_by_id,
        created_by_name=row.created_by_name,
        starts_at=row.starts_at,
        ends_at=row.ends_at,
        cancelled_at=row.cancelled_at,
        alertmanager_silence_id=row.alertmanager_silence_id,
        am_status=row.am_status,
        am_error=row.am_error,
    )


def _active_silence() -> Any:
    return (
        Silence.cancelled_at.is_(None),
        Silence.starts_at <= func.now(),
        Silence.ends_at > func.now(),
    )


async def create_silence(
    session: AsyncSession,
    *,
    team_id: int,
    fingerprint: str,
    matchers: dict[str, Any],
    by_id: int,
    by_name: str,
    hours: int,
    sync_alertmanager: bool,
) -> SilenceRecord:
    """Store a silence and mark the fingerprint's firing alert silenced."""
    row = await session.scalar(
        pg_insert(Silence)
        .values(
            team_id=team_id,
            fingerprint=fingerprint,
            matchers=matchers,
            created_by_id=by_id,
            created_by_name=by_name[:128],
            ends_at=func.now() + func.make_interval(0, 0, 0, 0, hours),
            am_status="create" if sync_alertmanager else None,
        )
        .returning(Silence)
    )
    assert row is not None
    await session.execute(
        update(Alert)
        .where(Alert.team_id == team_id, Alert.fingerprint == fingerprint, Alert.status == "firing")
        .values(silenced=True, updated_at=func.now())
    )
    return silence_record(row)


async def active_silences(
    session: AsyncSession, team_id: int, fingerprints: Sequence[str] | None = None
) -> list[SilenceRecord]:
    stmt = select(Silence).where(Silence.team_id == team_id, *_active_silence())
    if fingerprints is not None:
        stmt = stmt.where(Silence.fingerprint.in_(list(fingerprints)))
    rows = await session.scalars(stmt.order_by(Silence.ends_at.desc(), Silence.id.desc()))
    return [silence_record(r) for r in rows]


async def find_silence(session: AsyncSession, team_id: int, ref: str) -> SilenceRecord | None:
    """By our numeric id or by the Alertmanager silence id."""
    cond = Silence.alertmanager_silence_id == ref
    if ref.isdigit() and len(ref) < 18:
        cond = or_(Silence.id == int(ref), cond)
    row = await session.scalar(
        select(Silence).where(Silence.team_id == team_id, cond).with_for_update()
    )
    return silence_record(row) if row else None


async def cancel_silence(session: AsyncSession, silence_id: int, by_id: int) -> SilenceRecord:
    """End a silence now; a synced Alertmanager silence is queued to expire there too.

    Firing alerts left without an active silence are unsilenced and their cards refreshed.
    """
    row = await session.scalar(
        update(Silence)
        .where(Silence.id == silence_id)
        .values(
            cancelled_at=func.now(),
            cancelled_by_id=by_id,
            am_status=case(
                (Silence.alertmanager_silence_id.is_not(None), "expire"),
                (Silence.am_status == "create", "cancelled"),
                else_=Silence.am_status,
            ),
            am_claimed_until=None,
        )
        .returning(Silence),
        execution_options={"synchronize_session": False},
    )
    assert row is not None
    await release_silenced(session, team_id=row.team_id, fingerprint=row.fingerprint)
    return silence_record(row)


async def release_silenced(
    session: AsyncSession, *, team_id: int | None = None, fingerprint: str | None = None
) -> list[int]:
    """Unsilence firing alerts whose silences all ended; their cards are due for a refresh."""
    matches = or_(
        Silence.fingerprint == Alert.fingerprint,
        and_(
            Silence.fingerprint == MAINTENANCE,
            Alert.labels.contains(Silence.matchers["labels"]),
        ),
    )
    still = (
        select(Silence.id)
        .where(Silence.team_id == Alert.team_id, matches, *_active_silence())
        .exists()
    )
    stmt = update(Alert).where(Alert.silenced, Alert.status == "firing", ~still)
    if team_id is not None:
        stmt = stmt.where(Alert.team_id == team_id)
    if fingerprint is not None:
        stmt = stmt.where(Alert.fingerprint == fingerprint)
    result = await session.execute(
        stmt.values(silenced=False, card_due_at=func.now(), updated_at=func.now()).returning(
            Alert.id
        ),
        execution_options={"synchronize_session": False},
    )
    return [r[0] for r in result]


async def claim_alertmanager_jobs(
    session: AsyncSession, limit: int, lease_seconds: int = 60
) -> list[SilenceRecord]:
    """Silences waiting to be created or expired in Alertmanager, leased to this worker."""
    ids = list(
        await session.scalars(
            select(Silence.id)
            .where(
                Silence.am_status.in_(("create", "expire")),
                or_(Silence.am_claimed_until.is_(None), Silence.am_claimed_until < func.now()),
            )
            .order_by(Silence.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
    )
    if not ids:
        return []
    rows = await session.scalars(
        update(Silence)
        .where(Silence.id.in_(ids))
        .values(am_claimed_until=func.now() + func.make_interval(0, 0, 0, 0, 0, 0, lease_seconds))
        .returning(Silence),
        execution_options={"synchronize_session": False},
    )
    return [silence_record(r) for r in rows]


async def finish_alertmanager_job(
    session: AsyncSession,
    silence_id: int,
    *,
    expected: str,
    status: str,
    silence_ref: str | None = None,
    error: str | None = None,
) -> SilenceRecord | None:
    """Store the outcome, unless the silence changed meanwhile (then the job runs again)."""
    values: dict[str, Any] = {"am_status": status, "am_error": error, "am_claimed_until": None}
    if silence_ref is not None:
        values["alertmanager_silence_id"] = silence_ref[:64]
    row = await session.scalar(
        update(Silence)
        .where(Silence.id == silence_id, Silence.am_status == expected)
        .values(**values)
        .returning(Silence),
        execution_options={"synchronize_session": False},
    )
    if row is None and silence_ref is not None:
        # Cancelled while being created: keep the id so the expiry reaches Alertmanager.
        row = await session.scalar(
            update(Silence)
            .where(Silence.id == silence_id)
            .values(
                alertmanager_silence_id=silence_ref[:64],
                am_status="expire",
                am_claimed_until=None,
            )
            .returning(Silence),
            execution_options={"synchronize_session": False},
        )
    return silence_record(row) if row else None


async def create_window(
    session: AsyncSession,
    *,
    team_id: int,
    labels: dict[str, str],
    am_matchers: list[dict[str, Any]],
    comment: str,
    starts_at: datetime,
    ends_at: datetime,
    by_id: int,
    by_name: str,
    sync_alertmanager: bool,
) -> SilenceRecord:
    """A maintenance window: a silence matching alerts by labels between two times; firing
    alerts it matches now are silenced."""
    row = await session.scalar(
        pg_insert(Silence)
        .values(
            team_id=team_id,
            fingerprint=MAINTENANCE,
            matchers={"labels": labels, "matchers": am_matchers, "comment": comment},
            created_by_id=by_id,
            created_by_name=by_name[:128],
            starts_at=starts_at,
            ends_at=ends_at,
            am_status="create" if sync_alertmanager else None,
        )
        .returning(Silence)
    )
    assert row is not None
    await session.execute(
        update(Alert)
        .where(
            Alert.team_id == team_id,
            Alert.status == "firing",
            Alert.labels.contains(labels),
            func.now() >= literal(starts_at, DateTime(timezone=True)),
            func.now() < literal(ends_at, DateTime(timezone=True)),
        )
        .values(silenced=True, updated_at=func.now())
    )
    return silence_record(row)


async def claim_ended_windows(session: AsyncSession, limit: int) -> list[SilenceRecord]:
    """Maintenance windows that ended (or were cancelled) and are not summarised, locked."""
    rows = await session.scalars(
        select(Silence)
        .where(
            Silence.fingerprint == MAINTENANCE,
            Silence.summarized_at.is_(None),
            or_(Silence.ends_at <= func.now(), Silence.cancelled_at.is_not(None)),
        )
        .order_by(Silence.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return [silence_record(r) for r in rows]


async def window_counts(session: AsyncSession, window: SilenceRecord) -> tuple[int, int]:
    """(alerts seen during the window that it matched, those of them still firing)."""
    end = window.cancelled_at or window.ends_at
    rows = await session.execute(
        select(Alert.status, func.count())
        .where(
            Alert.team_id == window.team_id,
            Alert.labels.contains(window.matchers.get("labels", {})),
            Alert.last_seen_at >= window.starts_at,
            Alert.first_seen_at < end,
        )
        .group_by(Alert.status)
    )
    counts = {status: int(n) for status, n in rows}
    return sum(counts.values()), counts.get("firing", 0)


async def mark_summarized(session: AsyncSession, silence_id: int) -> None:
    await session.execute(
        update(Silence).where(Silence.id == silence_id).values(summarized_at=func.now())
    )
