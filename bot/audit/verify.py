"""Verification and export: recompute the chain from the rows, check every checkpoint."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.audit import chain
from storage import audit as repo
from storage.audit import AuditRow


@dataclass(frozen=True, slots=True)
class Verdict:
    """What `quorum audit verify` found: `bad_seq` None when everything verified."""

    rows: int
    head_seq: int | None
    head_hash: bytes | None
    checkpoints: int
    unsealed: int
    bad_seq: int | None = None
    problem: str = ""

    @property
    def line(self) -> str:
        if self.bad_seq is not None:
            return f"seq {self.bad_seq}: {self.problem}"
        head = "none" if self.head_seq is None else f"seq {self.head_seq} {self.head_hash_hex}"
        return (
            f"verified {self.rows} rows, head {head}; {self.checkpoints} checkpoints;"
            f" {self.unsealed} rows not yet sealed"
        )

    @property
    def head_hash_hex(self) -> str:
        return self.head_hash.hex() if self.head_hash else ""


@dataclass
class _Walk:
    """The walk's state along the chain."""

    expected: int
    prev: bytes | None
    order: tuple[int, int] = (-1, -1)
    rows: int = 0
    checked: int = 0
    pending: dict[int, list[chain.Checkpoint]] = field(default_factory=dict)

    def step(self, row: AuditRow) -> str | None:
        """The problem with `row` as the next link, or None (and the walk moves on)."""
        if row.seq != self.expected:
            return f"row missing or moved (seq {row.seq} found in its place)"
        if row.hash is None or row.prev_hash is None:
            return "sealed without a hash"
        if self.prev is not None and row.prev_hash != self.prev:
            return "prev_hash is not the hash of the row before (rows deleted, swapped or inserted)"
        if chain.link(row.prev_hash, row, self.expected) != row.hash:
            return "hash does not match the row's contents (row edited or forged)"
        if (row.xid, row.id) <= self.order:
            return "row out of the sealer's order (inserted or reordered)"
        for checkpoint in self.pending.pop(self.expected, []):
            if checkpoint.hash != row.hash:
                return f"differs from the checkpoint signed {checkpoint.signed_at.isoformat()}"
            self.checked += 1
        self.order, self.prev = (row.xid, row.id), row.hash
        self.expected += 1
        self.rows += 1
        return None


async def verify(
    sessions: async_sessionmaker[AsyncSession],
    public_key: Ed25519PublicKey | None,
    *,
    from_seq: int = 1,
    extra: chain.Checkpoint | None = None,
) -> Verdict:
    """Recompute the chain from `from_seq` and check each checkpoint at or after it (its
    signature with `public_key`, its hash against the recomputed one); `extra` is one more
    checkpoint, from a file. Rows stream through a server-side cursor."""
    async with sessions() as session, session.begin():
        stored = await repo.checkpoints(session)
        unsealed = await repo.unsealed_count(session)
        found = [chain.Checkpoint.of(c) for c in stored]
        walk = _Walk(expected=from_seq, prev=chain.GENESIS if from_seq == 1 else None)
        for checkpoint in [*found, *([extra] if extra else [])]:
            if checkpoint.seq < from_seq:
                continue
            if public_key is not None and not chain.signature_valid(public_key, checkpoint):
                return _bad(walk, unsealed, checkpoint.seq, "checkpoint signature does not verify")
            walk.pending.setdefault(checkpoint.seq, []).append(checkpoint)
        last: AuditRow | None = None
        async for row in repo.stream_sealed(session, from_seq):
            problem = walk.step(row)
            if problem is not None:
                return _bad(walk, unsealed, min(walk.expected, row.seq or walk.expected), problem)
            last = row
    if walk.pending:
        return _bad(walk, unsealed, walk.expected, "row missing (a checkpoint covers it)")
    return Verdict(
        walk.rows,
        None if last is None else last.seq,
        None if last is None else last.hash,
        walk.checked,
        unsealed,
    )


def _bad(walk: _Walk, unsealed: int, seq: int, problem: str) -> Verdict:
    return Verdict(walk.rows, None, None, walk.checked, unsealed, seq, problem)


# ---------------------------------------------------------------- export

COLUMNS = (
    "seq",
    "id",
    "at",
    "event",
    "actor",
    "actor_telegram_id",
    "team_id",
    "approval_id",
    "alert_id",
    "chat_id",
    "detail",
    "xid",
    "prev_hash",
    "hash",
)


def export_fields(row: AuditRow) -> dict[str, Any]:
    """A row as exported and served (hashes in hex)."""
    return {
        "seq": row.seq,
        "id": row.id,
        "at": row.at.isoformat(timespec="microseconds"),
        "event": row.event,
        "actor": row.actor,
        "actor_telegram_id": row.actor_telegram_id,
        "team_id": row.team_id,
        "approval_id": None if row.approval_id is None else str(row.approval_id),
        "alert_id": row.alert_id,
        "chat_id": row.chat_id,
        "detail": row.detail,
        "xid": row.xid,
        "prev_hash": None if row.prev_hash is None else row.prev_hash.hex(),
        "hash": None if row.hash is None else row.hash.hex(),
    }


async def export(
    sessions: async_sessionmaker[AsyncSession],
    fmt: str,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    team_id: int | None = None,
) -> AsyncIterator[str]:
    """Sealed rows as jsonl lines or csv lines (a header first), one at a time."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    if fmt == "csv":
        yield ",".join(COLUMNS) + "\n"
    async with sessions() as session, session.begin():
        async for row in repo.stream_export(session, since=since, until=until, team_id=team_id):
            fields = export_fields(row)
            if fmt == "jsonl":
                yield json.dumps(fields, ensure_ascii=False, separators=(",", ":")) + "\n"
                continue
            fields["detail"] = json.dumps(row.detail, ensure_ascii=False, sort_keys=True)
            writer.writerow([fields[c] for c in COLUMNS])
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
