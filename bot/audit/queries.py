"""Reading the audit log over the API and the web view: a team's rows a page at a time."""

from __future__ import annotations

import base64
import uuid
from dataclasses import dataclass
from datetime import datetime

from bot.errors import Invalid, NotFound
from bot.policy import Team
from bot.runtime import Runtime
from storage import audit as repo
from storage.audit import AuditRow, CheckpointRecord
from storage.db import transaction

PAGE_SIZE = 50
PAGE_MAX = 100


@dataclass(frozen=True, slots=True)
class Search:
    """A team's audit rows narrowed by event, actor, approval and time (`since` <= at <
    `until`)."""

    event: str | None = None
    actor: str | None = None
    approval_id: uuid.UUID | None = None
    since: datetime | None = None
    until: datetime | None = None


@dataclass(frozen=True, slots=True)
class Page:
    rows: list[AuditRow]
    next: str | None  # the cursor of the following page, None on the last


def cursor_of(row: AuditRow) -> str:
    return base64.urlsafe_b64encode(f"audit:{row.id}".encode()).decode().rstrip("=")


def read_cursor(cursor: str) -> int:
    """The row id a cursor of `cursor_of` names; Invalid for anything else."""
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except ValueError:
        text = ""
    prefix, _, ident = text.partition(":")
    if prefix != "audit" or not (ident.isascii() and ident.isdigit() and len(ident) <= 19):
        raise Invalid("cursor", "not a cursor from a previous page's `next`")
    return int(ident)


async def page(rt: Runtime, team: Team, search: Search, *, limit: int, cursor: str | None) -> Page:
    """Up to `limit` of the team's audit rows, newest first, after `cursor` if given."""
    if not 1 <= limit <= PAGE_MAX:
        raise Invalid("limit", f"an integer from 1 to {PAGE_MAX}")
    before = read_cursor(cursor) if cursor is not None else None
    team_id = rt.team_ids.get(team.name)
    if team_id is None:
        return Page([], None)
    where = repo.AuditFilter(
        team_id, search.event, search.actor, search.approval_id, search.since, search.until
    )
    async with rt.sessions() as session:
        rows = await repo.page(session, where, before_id=before, limit=limit + 1)
    more = len(rows) > limit
    return Page(rows[:limit], cursor_of(rows[limit - 1]) if more else None)


async def latest_checkpoint(rt: Runtime) -> CheckpointRecord:
    async with rt.sessions() as session:
        found = await repo.latest_checkpoint(session)
    if found is None:
        raise NotFound("no audit checkpoint has been signed yet")
    return found


@dataclass(frozen=True, slots=True)
class ChainStatus:
    head: AuditRow | None
    unsealed: int
    checkpoint: CheckpointRecord | None


async def chain_status(rt: Runtime) -> ChainStatus:
    """The chain's head, how many rows wait for the sealer, and the last checkpoint."""
    async with rt.sessions() as session:
        return ChainStatus(
            await repo.chain_head(session),
            await repo.unsealed_count(session),
            await repo.latest_checkpoint(session),
        )


async def record_view(
    rt: Runtime, team_id: int, approval_id: uuid.UUID, viewer: str, uid: int
) -> None:
    """Audit that a person looked at a request in the web view."""
    async with transaction(rt.sessions) as session:
        await repo.record(
            session,
            "web.viewed",
            actor=viewer,
            actor_telegram_id=uid,
            team_id=team_id,
            approval_id=approval_id,
        )
