"""The append-only audit log: one row per state change, written in that change's transaction."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from storage.db import raw

_COLUMNS = "event, actor, actor_telegram_id, team_id, approval_id, alert_id, chat_id, detail"


def insert_from(rows: str) -> str:
    """The one INSERT into audit_log: its rows come from `rows`, a FROM item aliased `r` with
    the columns of _COLUMNS (a missing detail is stored as {}). The vote path embeds it in its
    single statement (storage.votes._ADD_VOTE)."""
    picked = ", ".join(f"r.{c}" for c in _COLUMNS.split(", ")[:-1])
    return (
        f"INSERT INTO audit_log ({_COLUMNS})"  # noqa: S608 (our own column names)
        f" SELECT {picked}, coalesce(r.detail, '{{}}'::jsonb) FROM {rows}"
    )


# Run on the session's asyncpg connection, prepared once per connection: through the ORM (or
# even a prebuilt text()) SQLAlchemy spent more CPU per row than PostgreSQL did.
_INSERT = insert_from(
    "jsonb_to_recordset($1::jsonb) AS r(event text, actor text, actor_telegram_id bigint,"
    " team_id int, approval_id uuid, alert_id bigint, chat_id bigint, detail jsonb)"
)
_FIELDS = ("event", "actor", "actor_telegram_id", "team_id", "approval_id", "alert_id", "chat_id")


async def record(
    session: AsyncSession,
    event: str,
    *,
    actor: str | None = None,
    actor_telegram_id: int | None = None,
    team_id: int | None = None,
    approval_id: uuid.UUID | None = None,
    alert_id: int | None = None,
    chat_id: int | None = None,
    **detail: Any,
) -> None:
    """Append one audit row; `detail` holds the event's particulars."""
    await record_many(
        session,
        [
            {
                "event": event,
                "actor": actor,
                "actor_telegram_id": actor_telegram_id,
                "team_id": team_id,
                "approval_id": approval_id,
                "alert_id": alert_id,
                "chat_id": chat_id,
                "detail": detail,
            }
        ],
    )


async def record_many(session: AsyncSession, rows: list[dict[str, Any]]) -> None:
    """Append many audit rows in one statement (keys as in `record`, plus a `detail` dict)."""
    if not rows:
        return
    payload = [
        {**{f: row.get(f) for f in _FIELDS}, "detail": row.get("detail") or {}} for row in rows
    ]
    await (await raw(session)).execute(_INSERT, json.dumps(payload, default=str))


# ---------------------------------------------------------------- the hash chain

# The advisory-lock namespace (first key) of the sealer; polling leases use 7171.
SEALER_LOCK = 7172

_ROW = (
    "id, at, event, actor, actor_telegram_id, team_id, approval_id, alert_id, chat_id, detail,"
    " xid::text AS xid, seq, prev_hash, hash"
)


@dataclass(frozen=True, slots=True)
class AuditRow:
    id: int
    at: datetime
    event: str
    actor: str | None
    actor_telegram_id: int | None
    team_id: int | None
    approval_id: uuid.UUID | None
    alert_id: int | None
    chat_id: int | None
    detail: dict[str, Any]
    xid: int
    seq: int | None
    prev_hash: bytes | None
    hash: bytes | None


def _row(r: Any) -> AuditRow:
    detail = r["detail"]
    return AuditRow(
        id=r["id"],
        at=r["at"],
        event=r["event"],
        actor=r["actor"],
        actor_telegram_id=r["actor_telegram_id"],
        team_id=r["team_id"],
        approval_id=r["approval_id"],
        alert_id=r["alert_id"],
        chat_id=r["chat_id"],
        detail=json.loads(detail) if isinstance(detail, str) else detail,
        xid=int(r["xid"]),
        seq=r["seq"],
        prev_hash=None if r["prev_hash"] is None else bytes(r["prev_hash"]),
        hash=None if r["hash"] is None else bytes(r["hash"]),
    )


async def take_sealer_lock(session: AsyncSession, *, wait: bool = False) -> bool:
    """The transaction-level lock one sealer holds at a time across replicas (released at
    commit, so no connection is held between rounds). `wait`: for a sealer's round to end
    (bounded by lock_timeout) instead of giving up at once."""
    if wait:
        await (await raw(session)).execute("SELECT pg_advisory_xact_lock($1, 0)", SEALER_LOCK)
        return True
    got = await (await raw(session)).fetchval(
        "SELECT pg_try_advisory_xact_lock($1, 0)", SEALER_LOCK
    )
    return bool(got)


async def chain_head(session: AsyncSession) -> AuditRow | None:
    """The last sealed row, if any: sealed rows are a prefix of the (xid, id) order, so this
    walks back over the unsealed tail only (short, with the sealer running)."""
    found = await (await raw(session)).fetchrow(
        f"SELECT {_ROW} FROM audit_log WHERE seq IS NOT NULL"  # noqa: S608
        " ORDER BY xid DESC, id DESC LIMIT 1"
    )
    return None if found is None else _row(found)


# Only rows whose writing transaction is older than every transaction still running: those
# transactions have all ended, and any row written from now on gets an xid at or above this
# xmin, so it sorts after every row sealed here. (xid, id) is the chain's order. One
# statement, one snapshot: every row the xmin admits is visible to it.
_UNSEALED = (
    f"SELECT {_ROW} FROM audit_log"  # noqa: S608
    " WHERE (xid, id) > ($1::text::xid8, $2::bigint) AND seq IS NULL"
    " AND xid < pg_snapshot_xmin(pg_current_snapshot()) ORDER BY xid, id LIMIT $3"
)


async def unsealed(session: AsyncSession, head: AuditRow | None, limit: int) -> list[AuditRow]:
    """Up to `limit` rows ready to be chained after `head`, in chain order."""
    after = ("0", 0) if head is None else (str(head.xid), head.id)
    return [_row(r) for r in await (await raw(session)).fetch(_UNSEALED, *after, limit)]


async def seal(session: AsyncSession, links: list[tuple[int, int, bytes, bytes]]) -> int:
    """Set (id, seq, prev_hash, hash) on unsealed rows; the number of rows sealed."""
    if not links:
        return 0
    ids, seqs, prevs, hashes = (list(c) for c in zip(*links, strict=True))
    sealed = await (await raw(session)).fetchval(
        "WITH done AS (UPDATE audit_log AS a SET seq = s.seq, prev_hash = s.prev_hash,"
        " hash = s.hash FROM unnest($1::bigint[], $2::bigint[], $3::bytea[], $4::bytea[])"
        " AS s(id, seq, prev_hash, hash) WHERE a.id = s.id AND a.seq IS NULL RETURNING 1)"
        " SELECT count(*) FROM done",
        ids,
        seqs,
        prevs,
        hashes,
    )
    return int(sealed)


async def unsealed_count(session: AsyncSession) -> int:
    return int(
        await (await raw(session)).fetchval("SELECT count(*) FROM audit_log WHERE seq IS NULL")
    )


async def stream_sealed(session: AsyncSession, from_seq: int) -> AsyncIterator[AuditRow]:
    """Sealed rows from `from_seq` on, in chain order, through a server-side cursor."""
    sql = f"SELECT {_ROW} FROM audit_log WHERE seq >= $1 ORDER BY xid, id"  # noqa: S608
    async for r in (await raw(session)).stream(sql, from_seq):
        yield _row(r)


async def stream_export(
    session: AsyncSession,
    *,
    since: datetime | None,
    until: datetime | None,
    team_id: int | None,
) -> AsyncIterator[AuditRow]:
    """Sealed rows in chain order, `since` <= at < `until`, of one team if given."""
    sql = (
        f"SELECT {_ROW} FROM audit_log WHERE seq IS NOT NULL"  # noqa: S608
        " AND ($1::timestamptz IS NULL OR at >= $1) AND ($2::timestamptz IS NULL OR at < $2)"
        " AND ($3::int IS NULL OR team_id = $3) ORDER BY xid, id"
    )
    async for r in (await raw(session)).stream(sql, since, until, team_id):
        yield _row(r)


@dataclass(frozen=True, slots=True)
class AuditFilter:
    """What GET /api/v1/audit narrows by (every field optional but the team)."""

    team_id: int
    event: str | None = None
    actor: str | None = None
    approval_id: uuid.UUID | None = None
    since: datetime | None = None
    until: datetime | None = None


async def page(
    session: AsyncSession, where: AuditFilter, *, before_id: int | None, limit: int
) -> list[AuditRow]:
    """Up to `limit` of the team's rows, newest (highest id) first, below `before_id`."""
    rows = await (await raw(session)).fetch(
        f"SELECT {_ROW} FROM audit_log WHERE team_id = $1"  # noqa: S608
        " AND ($2::text IS NULL OR event = $2) AND ($3::text IS NULL OR actor = $3)"
        " AND ($4::uuid IS NULL OR approval_id = $4)"
        " AND ($5::timestamptz IS NULL OR at >= $5) AND ($6::timestamptz IS NULL OR at < $6)"
        " AND ($7::bigint IS NULL OR id < $7) ORDER BY id DESC LIMIT $8",
        where.team_id,
        where.event,
        where.actor,
        where.approval_id,
        where.since,
        where.until,
        before_id,
        limit,
    )
    return [_row(r) for r in rows]


# ---------------------------------------------------------------- signed checkpoints


@dataclass(frozen=True, slots=True)
class CheckpointRecord:
    id: int
    seq: int
    hash: bytes
    signed_at: datetime
    key_id: str
    signature: bytes


_CHECKPOINT = "id, seq, hash, signed_at, key_id, signature"


def _checkpoint(r: Any) -> CheckpointRecord:
    return CheckpointRecord(
        r["id"], r["seq"], bytes(r["hash"]), r["signed_at"], r["key_id"], bytes(r["signature"])
    )


async def add_checkpoint(
    session: AsyncSession, seq: int, hash_: bytes, signed_at: datetime, key_id: str, sig: bytes
) -> CheckpointRecord:
    found = await (await raw(session)).fetchrow(
        "INSERT INTO audit_checkpoints (seq, hash, signed_at, key_id, signature)"  # noqa: S608
        f" VALUES ($1, $2, $3, $4, $5) RETURNING {_CHECKPOINT}",
        seq,
        hash_,
        signed_at,
        key_id,
        sig,
    )
    return _checkpoint(found)


async def latest_checkpoint(session: AsyncSession) -> CheckpointRecord | None:
    found = await (await raw(session)).fetchrow(
        f"SELECT {_CHECKPOINT} FROM audit_checkpoints ORDER BY seq DESC, id DESC LIMIT 1"  # noqa: S608
    )
    return None if found is None else _checkpoint(found)


async def checkpoints(session: AsyncSession) -> list[CheckpointRecord]:
    """Every checkpoint, by seq (a few a hour: small beside the log)."""
    rows = await (await raw(session)).fetch(
        f"SELECT {_CHECKPOINT} FROM audit_checkpoints ORDER BY seq, id"  # noqa: S608
    )
    return [_checkpoint(r) for r in rows]
