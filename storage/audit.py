"""The append-only audit log: one row per state change, written in that change's transaction."""

from __future__ import annotations

import json
import uuid
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from storage.db import raw

# Run on the session's asyncpg connection, prepared once per connection: through the ORM (or
# even a prebuilt text()) SQLAlchemy spent more CPU per row than PostgreSQL did.
_INSERT = (
    "INSERT INTO audit_log (event, actor, actor_telegram_id, team_id, approval_id, alert_id,"
    " chat_id, detail) VALUES ($1, $2, $3, $4, $5, $6, $7, $8::jsonb)"
)


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
    await (await raw(session)).execute(
        _INSERT,
        event,
        actor,
        actor_telegram_id,
        team_id,
        approval_id,
        alert_id,
        chat_id,
        json.dumps(detail, default=str),
    )


async def record_many(session: AsyncSession, rows: list[dict[str, Any]]) -> None:
    """Append many audit rows in one statement (keys as in `record`, plus a `detail` dict)."""
    if not rows:
        return
    fields = ("event", "actor", "actor_telegram_id", "team_id", "approval_id", "alert_id")
    payload = [
        {
            **{f: row.get(f) for f in fields},
            "approval_id": str(row["approval_id"]) if row.get("approval_id") else None,
            "chat_id": row.get("chat_id"),
            "detail": row.get("detail") or {},
        }
        for row in rows
    ]
    await session.execute(
        text(
            "INSERT INTO audit_log (event, actor, actor_telegram_id, team_id, approval_id,"
            " alert_id, chat_id, detail)"
            " SELECT r.event, r.actor, r.actor_telegram_id, r.team_id, r.approval_id,"
            " r.alert_id, r.chat_id, coalesce(r.detail, '{}'::jsonb)"
            " FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS r(event text, actor text,"
            " actor_telegram_id bigint, team_id int, approval_id uuid, alert_id bigint,"
            " chat_id bigint, detail jsonb)"
        ),
        {"rows": json.dumps(payload, default=str)},
    )
