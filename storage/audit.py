"""The append-only audit log: one row per state change, written in that change's transaction."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncSession

from storage.models import AuditEntry


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
    await session.execute(
        insert(AuditEntry).values(
            event=event,
            actor=actor,
            actor_telegram_id=actor_telegram_id,
            team_id=team_id,
            approval_id=approval_id,
            alert_id=alert_id,
            chat_id=chat_id,
            detail=detail,
        )
    )
