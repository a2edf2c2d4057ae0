"""The append-only audit log: one row per state change, written in that change's transaction."""

from __future__ import annotations

import json
import uuid
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from storage.db import raw

_COLUMNS = "event, actor, actor_telegram_id, team_id, approval_id, alert_id, chat_id, detail"


def insert_from(rows: str) -> str:
    """The one INSERT into audit_log: its rows come from `rows`, a FROM item aliased `r` with
    the columns of _COLUMNS (a missing detail is stored as {}). The vote path embeds it in its
    single statement (storage.approvals._ADD_VOTE)."""
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
