"""The channels idle workers LISTEN on (migration 0008's triggers NOTIFY them), and when each
worker's next piece of work comes due, so that an idle process sleeps until then."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from storage.db import raw
from storage.outbox import NEW_ROWS_CHANNEL

OUTBOX = NEW_ROWS_CHANNEL  # outbox rows inserted
CARDS = "quorum_cards"  # an approval or alert card marked due for a refresh
APPROVALS = "quorum_approvals"  # a request (its expiry, escalation) or a callback delivery added
ALERTS = "quorum_alerts"  # a silence created, cancelled or given an Alertmanager job
UPDATES = "quorum_updates"  # an inbound update stored for the retry loop
CHANNELS = (OUTBOX, CARDS, APPROVALS, ALERTS, UPDATES)

# Each query answers seconds from now until the earliest due item (<= 0: due already), or NULL
# when nothing is scheduled; each mirrors its worker's claim conditions.
_CARDS_DUE = """
    SELECT extract(epoch FROM (SELECT min(cards_due_at) FROM approval_requests
                                WHERE status = 'pending') - now())::float8,
           extract(epoch FROM (SELECT min(card_due_at) FROM alerts) - now())::float8,
           extract(epoch FROM least(
               (SELECT min(card_due_at) FROM incidents),
               -- a sent card to pin (open incident) or unpin (closed), as storage.incident_cards
               (SELECT now() WHERE EXISTS (
                    SELECT 1 FROM incident_cards c
                      JOIN incidents i ON i.id = c.incident_id
                      JOIN telegram_messages m ON m.id = c.message_row_id
                     WHERE m.message_id IS NOT NULL AND i.status <> 'resolved'
                       AND c.pinned IS DISTINCT FROM (i.status IN ('investigating', 'mitigating'))))
           ) - now())::float8
"""
_APPROVALS_DUE = """
    SELECT extract(epoch FROM least(
        (SELECT min(expires_at) FROM approval_requests WHERE status = 'pending'),
        (SELECT min(next_attempt_at) FROM callback_deliveries WHERE status = 'pending')
    ) - now())::float8
"""
# Escalation depends on each team's policy, which storage does not know: the oldest request
# still to escalate per team and risk level, as seconds since it was created.
_ESCALATION_AGES = """
    SELECT team_id, risk_level, extract(epoch FROM now() - min(created_at))::float8
      FROM approval_requests
     WHERE status = 'pending' AND escalated_at IS NULL AND expires_at > now()
     GROUP BY team_id, risk_level
"""
# Expiry warnings depend on each level's warn_before_seconds: per team and risk level, the
# seconds left to the soonest expiry among requests not yet warned, and the seconds until the
# soonest default warning (ten minutes or a fifth of the lifetime before expiry).
_WARNING_TIMES = """
    SELECT team_id, risk_level,
           min(extract(epoch FROM expires_at - now()))::float8,
           min(extract(epoch FROM expires_at - now()
                            - least(interval '600 seconds', (expires_at - created_at) / 5)))::float8
      FROM approval_requests
     WHERE status = 'pending' AND warned_at IS NULL AND expires_at > now()
     GROUP BY team_id, risk_level
"""
_ALERTS_DUE = """
    SELECT extract(epoch FROM least(
        (SELECT min(coalesce(am_claimed_until, now())) FROM silences
          WHERE am_status IN ('create', 'expire')),
        (SELECT min(ends_at) FROM silences WHERE cancelled_at IS NULL AND ends_at > now())
    ) - now())::float8
"""
_OUTBOX_DUE = """
    SELECT extract(epoch FROM min(CASE WHEN o.status = 'pending' THEN o.next_attempt_at
                                       ELSE o.claimed_until END) - now())::float8
      FROM outbox o
     WHERE o.status IN ('pending', 'sending')
       AND NOT EXISTS (SELECT 1 FROM chats c WHERE c.id = o.chat_id AND NOT c.active)
"""


@dataclass(frozen=True, slots=True)
class WarningTimes:
    team_id: int
    risk_level: str
    expires_in: float  # seconds to the soonest expiry of a request not yet warned
    default_warning_in: float  # seconds to the soonest warning by the default window


@dataclass(frozen=True, slots=True)
class EscalationAge:
    team_id: int
    risk_level: str
    oldest_seconds: float  # how long the oldest request still to escalate has waited


async def _seconds(session: AsyncSession, sql: str) -> float | None:
    value = await (await raw(session)).fetchval(sql)
    return None if value is None else float(value)


@dataclass(frozen=True, slots=True)
class CardsDue:
    """Seconds until the next approval, alert and incident card are due (None: none is)."""

    approvals: float | None
    alerts: float | None
    incidents: float | None


async def cards_due_in(session: AsyncSession) -> CardsDue:
    row = await (await raw(session)).fetchrow(_CARDS_DUE)
    return CardsDue(row[0], row[1], row[2])


async def approvals_due_in(session: AsyncSession) -> float | None:
    """Expiry and callback deliveries (escalations: escalation_ages)."""
    return await _seconds(session, _APPROVALS_DUE)


async def escalation_ages(session: AsyncSession) -> list[EscalationAge]:
    rows = await (await raw(session)).fetch(_ESCALATION_AGES)
    return [EscalationAge(r[0], r[1], float(r[2])) for r in rows]


async def warning_times(session: AsyncSession) -> list[WarningTimes]:
    rows = await (await raw(session)).fetch(_WARNING_TIMES)
    return [WarningTimes(r[0], r[1], float(r[2]), float(r[3])) for r in rows]


async def alerts_due_in(session: AsyncSession) -> float | None:
    """Alertmanager jobs and silences running out."""
    return await _seconds(session, _ALERTS_DUE)


async def outbox_due_in(session: AsyncSession) -> float | None:
    return await _seconds(session, _OUTBOX_DUE)
