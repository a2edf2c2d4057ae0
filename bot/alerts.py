"""Alerts (being built in issue 5; these two functions are the approvals link interface)."""

from __future__ import annotations

import asyncio

from sqlalchemy.ext.asyncio import AsyncSession

from bot.runtime import Runtime


async def linked_alert_line(
    session: AsyncSession, team_id: int, fingerprint: str | None, incident_id: str | None
) -> str | None:
    """An escaped HTML line for an approval card naming the firing alert it refers to."""
    return None


async def on_approval_changed(
    rt: Runtime,
    session: AsyncSession,
    team_id: int,
    fingerprint: str | None,
    incident_id: str | None,
) -> None:
    """Re-render the alert cards linked to this fingerprint or incident."""
    return None


async def run_maintenance(rt: Runtime) -> None:
    await asyncio.Event().wait()
