"""Approvals and alerts side by side: the alert line on an approval card, and card refreshes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from bot.alerts.publish import render_cards
from bot.rendering import fit, plural
from bot.runtime import Runtime
from storage import alerts as store


async def linked_alert_line(
    session: AsyncSession, team_id: int, fingerprint: str | None, incident_id: str | None
) -> str | None:
    """An escaped HTML line for an approval card naming the firing alert it refers to."""
    found = await store.find_linked_alerts(session, team_id, fingerprint, incident_id)
    if not found:
        return None
    a = found[0]
    sev = f" · {fit(a.severity, 20)}" if a.severity else ""
    more = f" (+{len(found) - 1} more)" if len(found) > 1 else ""
    return (
        f"🔥 Alert: <b>{fit(a.title, 150)}</b>{sev} · {plural(a.hit_count, 'hit')} · "
        f"<code>{fit(a.fingerprint, 64)}</code>{more}"
    )


async def on_approval_changed(
    rt: Runtime,
    session: AsyncSession,
    team_id: int,
    fingerprint: str | None,
    incident_id: str | None,
) -> None:
    """Re-render the alert cards linked to this fingerprint or incident."""
    found = await store.find_linked_alerts(session, team_id, fingerprint, incident_id)
    if not found:
        return
    now = datetime.now(UTC)
    interval = timedelta(seconds=rt.settings.alert_edit_interval_seconds)
    when = {
        a.id: max(now, a.last_card_edit_at + interval)
        for a in found
        if a.last_card_edit_at is not None
    }
    await render_cards(rt, session, found, not_before=when)
