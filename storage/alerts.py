"""Alerts, acknowledgements and silences: set-based upserts for ingest, frozen records out."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, func, or_, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from storage.models import Alert, AlertAcknowledgement, ApprovalRequest, TelegramMessage

# Silences live in storage.silences; these names stay importable from here.
from storage.silences import (
    SilenceRecord as SilenceRecord,
)
from storage.silences import (
    active_silences as active_silences,
)
from storage.silences import (
    cancel_silence as cancel_silence,
)
from storage.silences import (
    claim_alertmanager_jobs as claim_alertmanager_jobs,
)
from storage.silences import (
    create_silence as create_silence,
)
from storage.silences import (
    find_silence as find_silence,
)
from storage.silences import (
    finish_alertmanager_job as finish_alertmanager_job,
)
from storage.silences import (
    release_silenced as release_silenced,
)
from storage.silences import (
    silence_record as silence_record,
)


@dataclass(frozen=True, slots=True)
class IncomingAlert:
    """One alert as a source reported it, already normalised."""

    fingerprint: str
    status: str
    source: str
    title: str
    severity: str | None = None
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    url: str | None = None
    incident_id: str | None = None
    starts_at: datetime | None = None
    ends_at: datetime | None = None
    context: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class AlertRecord:
    id: int
    team_id: int
    fingerprint: str
    occurrence: int
    status: str
    source: str
    title: str
    severity: str | None
    labels: dict[str, Any]
    annotations: dict[str, Any]
    url: str | None
    incident_id: str | None
    starts_at: datetime | None
    ends_at: datetime | None
    hit_count: int
    first_seen_at: datetime
    last_seen_at: datetime
    resolved_at: datetime | None
    resolved_by: str | None
    silenced: bool
    last_card_edit_at: datetime | None
    context: dict[str, Any]
    group_key: str | None = None
    group_id: int | None = None

    @property
    def group(self) -> int:
        """The group's id: its first alert's (alerts from before groups are groups of one)."""
        return self.group_id if self.group_id is not None else self.id


@dataclass(frozen=True, slots=True)
class AckRecord:
    alert_id: int
    telegram_id: int
    name: str
    at: datetime


@dataclass(frozen=True, slots=True)
class LinkedApproval:
    id: uuid.UUID
    team_id: int
    fingerprint: str | None
    incident_id: str | None
    action: str
    target: str
    status: str


@dataclass(frozen=True, slots=True)
class CardRef:
    """A bot message showing an alert card."""

    row_id: int
    chat_id: int
    alert_id: int
    text: str
    reply_markup: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class UpsertRow:
    id: int
    fingerprint: str
    inserted: bool
    silenced: bool


def alert_record(row: Alert) -> AlertRecord:
    return AlertRecord(
        id=row.id,
        team_id=row.team_id,
        fingerprint=row.fingerprint,
        occurrence=row.occurrence,
        status=row.status,
        source=row.source,
        title=row.title,
        severity=row.severity,
        labels=dict(row.labels or {}),
        annotations=dict(row.annotations or {}),
        url=row.url,
        incident_id=row.incident_id,
        starts_at=row.starts_at,
        ends_at=row.ends_at,
        hit_count=row.hit_count,
        first_seen_at=row.first_seen_at,
        last_seen_at=row.last_seen_at,
        resolved_at=row.resolved_at,
        resolved_by=row.resolved_by,
        silenced=row.silenced,
        last_card_edit_at=row.last_card_edit_at,
        context=dict(row.context or {}),
        group_key=row.group_key,
        group_id=row.group_id,
    )


def iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


async def get_alerts(session: AsyncSession, ids: Iterable[int]) -> list[AlertRecord]:
    id_list = list(ids)
    if not id_list:
        return []
    rows = await session.scalars(select(Alert).where(Alert.id.in_(id_list)).order_by(Alert.id))
    return [alert_record(r) for r in rows]


async def get_alert(
    session: AsyncSession, alert_id: int, *, for_update: bool = False
) -> AlertRecord | None:
    stmt = select(Alert).where(Alert.id == alert_id)
    if for_update:
        stmt = stmt.with_for_update()
    row = await session.scalar(stmt)
    return alert_record(row) if row else None


# SQL text for the same reason as _UPSERT_FIRING: set-based over jsonb_to_recordset.
_RESOLVE = text(
    """
    UPDATE alerts AS a SET status = 'resolved', resolved_at = now(), resolved_by = :by,
        card_due_at = NULL, updated_at = now(), ends_at = coalesce(r.ends_at, now()),
        last_card_edit_at = greatest(now(),
            a.last_card_edit_at + make_interval(secs => CAST(:interval AS float8)))
    FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS r(fingerprint text, ends_at timestamptz)
    WHERE a.id = ANY(:ids) AND a.fingerprint = r.fingerprint
    RETURNING a.id
    """
)


async def resolve_firing(
    session: AsyncSession,
    team_id: int,
    ends: dict[str, datetime | None],
    *,
    edit_interval: float,
    resolved_by: str | None = None,
) -> list[AlertRecord]:
    """Resolve the firing occurrences of these fingerprints (fingerprint -> source end time).

    last_card_edit_at becomes the time the resolved card may be sent (one edit per interval).
    """
    if not ends:
        return []
    locked = (
        select(Alert.id)
        .where(
            Alert.team_id == team_id,
            Alert.status == "firing",
            Alert.fingerprint.in_(sorted(ends)),
        )
        .order_by(Alert.fingerprint)
        .with_for_update()
    )
    ids = list(await session.scalars(locked))
    if not ids:
        return []
    rows = [{"fingerprint": fp, "ends_at": iso(end)} for fp, end in ends.items()]
    result = await session.execute(
        _RESOLVE,
        {
            "ids": ids,
            "rows": json.dumps(rows),
            "by": resolved_by,
            "interval": float(edit_interval),
        },
    )
    return await get_alerts(session, [r[0] for r in result])


async def resolve_one(session: AsyncSession, alert_id: int, by: str) -> AlertRecord | None:
    """A person resolved it: None when it was not firing."""
    row = await session.scalar(
        update(Alert)
        .where(Alert.id == alert_id, Alert.status == "firing")
        .values(
            status="resolved",
            resolved_at=func.now(),
            ends_at=func.now(),
            resolved_by=by,
            card_due_at=None,
            updated_at=func.now(),
            last_card_edit_at=func.now(),
        )
        .returning(Alert),
        execution_options={"synchronize_session": False},
    )
    return alert_record(row) if row else None


async def mark_cards_rendered(session: AsyncSession, ids: Sequence[int]) -> None:
    if ids:
        await session.execute(
            update(Alert)
            .where(Alert.id.in_(list(ids)))
            .values(last_card_edit_at=func.now(), card_due_at=None)
        )


async def schedule_refresh(
    session: AsyncSession, ids: Sequence[int], *, edit_interval: float = 0.0
) -> None:
    """Ask the card worker to re-render these alerts' cards as soon as it can: now, or one
    edit interval after their group's card was last rendered."""
    if not ids:
        return
    due: Any = func.now()
    if edit_interval > 0:
        anchor = Alert.__table__.alias("anchor")
        last = (
            select(anchor.c.last_card_edit_at)
            .where(anchor.c.id == func.coalesce(Alert.group_id, Alert.id))
            .scalar_subquery()
        )
        due = func.greatest(
            func.now(), last + func.make_interval(0, 0, 0, 0, 0, 0, float(edit_interval))
        )
    await session.execute(
        update(Alert)
        .where(Alert.id.in_(list(ids)), Alert.status == "firing")
        .values(card_due_at=func.coalesce(due, func.now()))
    )


async def claim_due_cards(session: AsyncSession, limit: int) -> list[AlertRecord]:
    """Alerts whose cards must be refreshed now, locked; other workers skip them."""
    rows = await session.scalars(
        select(Alert)
        .where(Alert.card_due_at.is_not(None), Alert.card_due_at <= func.now())
        .order_by(Alert.card_due_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return [alert_record(r) for r in rows]


async def card_refs(session: AsyncSession, alert_ids: Sequence[int]) -> dict[int, list[CardRef]]:
    out: dict[int, list[CardRef]] = {i: [] for i in alert_ids}
    if not alert_ids:
        return out
    rows = await session.execute(
        select(
            TelegramMessage.id,
            TelegramMessage.chat_id,
            TelegramMessage.alert_id,
            TelegramMessage.text,
            TelegramMessage.reply_markup,
        )
        .where(TelegramMessage.alert_id.in_(list(alert_ids)))
        .order_by(TelegramMessage.id)
    )
    for row_id, chat_id, alert_id, text_html, markup in rows:
        if alert_id is not None:
            ref = CardRef(row_id, chat_id, alert_id, text_html, markup)
            out.setdefault(alert_id, []).append(ref)
    return out


async def add_ack(session: AsyncSession, alert_id: int, telegram_id: int, name: str) -> bool:
    """False when this person had already acknowledged it."""
    stmt = (
        pg_insert(AlertAcknowledgement)
        .values(alert_id=alert_id, telegram_id=telegram_id, name=name[:128])
        .on_conflict_do_nothing(constraint="uq_alert_ack_who")
        .returning(AlertAcknowledgement.id)
    )
    return (await session.execute(stmt)).first() is not None


async def acks_for(session: AsyncSession, alert_ids: Sequence[int]) -> dict[int, list[AckRecord]]:
    out: dict[int, list[AckRecord]] = {i: [] for i in alert_ids}
    if not alert_ids:
        return out
    rows = await session.scalars(
        select(AlertAcknowledgement)
        .where(AlertAcknowledgement.alert_id.in_(list(alert_ids)))
        .order_by(AlertAcknowledgement.at, AlertAcknowledgement.id)
    )
    for r in rows:
        out.setdefault(r.alert_id, []).append(AckRecord(r.alert_id, r.telegram_id, r.name, r.at))
    return out


async def firing_alerts(session: AsyncSession, team_id: int, limit: int) -> list[AlertRecord]:
    rows = await session.scalars(
        select(Alert)
        .where(Alert.team_id == team_id, Alert.status == "firing")
        .order_by(Alert.first_seen_at.desc(), Alert.id.desc())
        .limit(limit)
    )
    return [alert_record(r) for r in rows]


async def count_firing(session: AsyncSession, team_id: int) -> int:
    n = await session.scalar(
        select(func.count())
        .select_from(Alert)
        .where(Alert.team_id == team_id, Alert.status == "firing")
    )
    return int(n or 0)


async def find_linked_alerts(
    session: AsyncSession, team_id: int, fingerprint: str | None, incident_id: str | None
) -> list[AlertRecord]:
    """Firing alerts with this fingerprint or incident id."""
    conds = []
    if fingerprint:
        conds.append(Alert.fingerprint == fingerprint)
    if incident_id:
        conds.append(Alert.incident_id == incident_id)
    if not conds:
        return []
    rows = await session.scalars(
        select(Alert)
        .where(Alert.team_id == team_id, Alert.status == "firing", or_(*conds))
        .order_by(Alert.id)
        .limit(20)
    )
    return [alert_record(r) for r in rows]


async def pending_approvals_for(
    session: AsyncSession, alerts: Sequence[AlertRecord]
) -> dict[int, list[LinkedApproval]]:
    """Pending approval requests naming each alert's fingerprint or incident id."""
    out: dict[int, list[LinkedApproval]] = {a.id: [] for a in alerts}
    if not alerts:
        return out
    teams = {a.team_id for a in alerts}
    fps = {a.fingerprint for a in alerts}
    incidents = {a.incident_id for a in alerts if a.incident_id}
    cond: ColumnElement[bool] = ApprovalRequest.fingerprint.in_(fps)
    if incidents:
        cond = or_(cond, ApprovalRequest.incident_id.in_(incidents))
    rows = await session.execute(
        select(
            ApprovalRequest.id,
            ApprovalRequest.team_id,
            ApprovalRequest.fingerprint,
            ApprovalRequest.incident_id,
            ApprovalRequest.action,
            ApprovalRequest.target,
            ApprovalRequest.status,
        )
        .where(ApprovalRequest.team_id.in_(teams), ApprovalRequest.status == "pending", cond)
        .order_by(ApprovalRequest.created_at)
        .limit(200)
    )
    found = [LinkedApproval(*r) for r in rows]
    for a in alerts:
        out[a.id] = [
            r
            for r in found
            if r.team_id == a.team_id
            and (
                r.fingerprint == a.fingerprint or (a.incident_id and r.incident_id == a.incident_id)
            )
        ]
    return out
