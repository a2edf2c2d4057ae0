"""Alert groups (alerts sharing one card) and storm digests (one card per chat in a storm)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import and_, func, or_, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from storage.alerts import AlertRecord, alert_record
from storage.models import Alert, AlertDigest, AlertDigestGroup, OutboxItem, TelegramMessage


@dataclass(frozen=True, slots=True)
class DigestRecord:
    id: int
    chat_id: int
    team_id: int
    message_row_id: int | None
    opened_at: datetime
    calm_since: datetime | None
    finalised_at: datetime | None


def _digest(row: AlertDigest) -> DigestRecord:
    return DigestRecord(
        row.id,
        row.chat_id,
        row.team_id,
        row.message_row_id,
        row.opened_at,
        row.calm_since,
        row.finalised_at,
    )


# Each group key locked for the rest of the transaction (in key order, so two batches never
# wait on each other crosswise): two bodies opening the same new group at once make one group.
_LOCK_KEYS = text(
    "SELECT pg_advisory_xact_lock(7171, hashtext(:team || ':' || k))"
    " FROM unnest(CAST(:keys AS text[])) AS k ORDER BY k"
)
_ASSIGN = text(
    """
    UPDATE alerts AS a SET group_key = r.key, group_id = r.gid
    FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS r(id bigint, key text, gid bigint)
    WHERE a.id = r.id
    """
)


async def assign_groups(
    session: AsyncSession, team_id: int, new: Sequence[tuple[int, str]]
) -> dict[int, int]:
    """Put new alerts (id, group key) into their groups: the firing group of that key, or a
    new one named after its first alert. Returns alert id -> group id."""
    if not new:
        return {}
    keys = sorted({k for _, k in new})
    await session.execute(_LOCK_KEYS, {"team": str(team_id), "keys": keys})
    new_ids = [i for i, _ in new]
    found = await session.execute(
        select(Alert.group_key, func.min(Alert.group_id))
        .where(
            Alert.team_id == team_id,
            Alert.status == "firing",
            Alert.group_key.in_(keys),
            Alert.group_id.is_not(None),
            Alert.id.not_in(new_ids),
        )
        .group_by(Alert.group_key)
    )
    group_of_key: dict[str, int] = {k: int(g) for k, g in found if k is not None and g is not None}
    out: dict[int, int] = {}
    for alert_id, key in sorted(new):
        gid = group_of_key.setdefault(key, alert_id)
        out[alert_id] = gid
    rows = [{"id": i, "key": k, "gid": out[i]} for i, k in new]
    await session.execute(_ASSIGN, {"rows": json.dumps(rows)})
    return out


async def group_members(
    session: AsyncSession, group_ids: Sequence[int]
) -> dict[int, list[AlertRecord]]:
    """Every alert of these groups, firing first, then by first sighting."""
    out: dict[int, list[AlertRecord]] = {g: [] for g in group_ids}
    if not group_ids:
        return out
    gids = list(group_ids)
    rows = await session.scalars(
        select(Alert)
        .where(or_(Alert.group_id.in_(gids), and_(Alert.group_id.is_(None), Alert.id.in_(gids))))
        .order_by(Alert.status, Alert.id)
    )
    for row in rows:
        rec = alert_record(row)
        out.setdefault(rec.group, []).append(rec)
    return out


async def chat_backlog(session: AsyncSession, chat_id: int) -> int:
    """Rows waiting to go to this chat (ix_outbox_chat_queue answers it)."""
    n = await session.scalar(
        select(func.count())
        .select_from(OutboxItem)
        .where(OutboxItem.chat_id == chat_id, OutboxItem.status.in_(("pending", "sending")))
    )
    return int(n or 0)


async def open_digest(session: AsyncSession, chat_id: int) -> DigestRecord | None:
    row = await session.scalar(
        select(AlertDigest)
        .where(AlertDigest.chat_id == chat_id, AlertDigest.finalised_at.is_(None))
        .with_for_update()
    )
    return _digest(row) if row else None


async def start_digest(session: AsyncSession, chat_id: int, team_id: int) -> DigestRecord:
    """Open the chat's digest (or return the one a concurrent storm opened first)."""
    row = await session.scalar(
        pg_insert(AlertDigest)
        .values(chat_id=chat_id, team_id=team_id)
        .on_conflict_do_nothing(
            index_elements=["chat_id"], index_where=text("finalised_at IS NULL")
        )
        .returning(AlertDigest)
    )
    if row is not None:
        return _digest(row)
    found = await open_digest(session, chat_id)
    assert found is not None
    return found


async def set_digest_message(session: AsyncSession, digest_id: int, message_row_id: int) -> None:
    await session.execute(
        update(AlertDigest).where(AlertDigest.id == digest_id).values(message_row_id=message_row_id)
    )


async def add_to_digest(session: AsyncSession, digest_id: int, group_id: int) -> bool:
    """False when the group was already in it."""
    row = await session.execute(
        pg_insert(AlertDigestGroup)
        .values(digest_id=digest_id, group_id=group_id)
        .on_conflict_do_nothing()
        .returning(AlertDigestGroup.group_id)
    )
    return row.first() is not None


async def digest_group_ids(session: AsyncSession, digest_id: int) -> list[int]:
    rows = await session.scalars(
        select(AlertDigestGroup.group_id)
        .where(AlertDigestGroup.digest_id == digest_id)
        .order_by(AlertDigestGroup.group_id)
    )
    return list(rows)


async def digests_of_groups(session: AsyncSession, group_ids: Sequence[int]) -> list[DigestRecord]:
    """The digests (open or finalised) that list any of these groups."""
    if not group_ids:
        return []
    rows = await session.scalars(
        select(AlertDigest)
        .join(AlertDigestGroup, AlertDigestGroup.digest_id == AlertDigest.id)
        .where(AlertDigestGroup.group_id.in_(list(group_ids)))
        .distinct()
        .order_by(AlertDigest.id)
    )
    return [_digest(r) for r in rows]


async def claim_open_digests(session: AsyncSession) -> list[DigestRecord]:
    """Open digests, locked (another process skips them)."""
    rows = await session.scalars(
        select(AlertDigest)
        .where(AlertDigest.finalised_at.is_(None))
        .order_by(AlertDigest.id)
        .with_for_update(skip_locked=True)
    )
    return [_digest(r) for r in rows]


async def mark_calm(session: AsyncSession, digest_id: int, calm: bool) -> DigestRecord:
    """Note whether the chat is under budget now; calm_since keeps the start of the calm."""
    row = await session.scalar(
        update(AlertDigest)
        .where(AlertDigest.id == digest_id)
        .values(calm_since=func.coalesce(AlertDigest.calm_since, func.now()) if calm else None)
        .returning(AlertDigest),
        execution_options={"synchronize_session": False},
    )
    assert row is not None
    return _digest(row)


async def finalise_digest(session: AsyncSession, digest_id: int) -> None:
    await session.execute(
        update(AlertDigest).where(AlertDigest.id == digest_id).values(finalised_at=func.now())
    )


async def get_digest(session: AsyncSession, digest_id: int) -> DigestRecord:
    row = await session.scalar(select(AlertDigest).where(AlertDigest.id == digest_id))
    assert row is not None
    return _digest(row)


async def message_text(session: AsyncSession, message_row_id: int) -> str | None:
    text_html: str | None = await session.scalar(
        select(TelegramMessage.text).where(TelegramMessage.id == message_row_id)
    )
    return text_html
