"""Maintenance windows: alerts matching given labels are stored and counted but not posted,
mirrored to Alertmanager as a silence, and summed up in one line when the window ends."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from bot.alerts.texts import chat_team
from bot.errors import Invalid, NotAMember, Refused
from bot.policy import Team
from bot.rendering import esc, fit, fmt_time
from bot.runtime import Runtime
from storage import audit, silences
from storage.db import transaction
from storage.outbox import enqueue_text
from storage.silences import SilenceRecord
from storage.teams import active_chats

MAX_WINDOW = timedelta(days=30)
MAX_LABELS = 20
SUMMARY_BATCH = 20
_DURATION = re.compile(r"(\d{1,4})([mhd])")
_UNIT = {"m": 60, "h": 3600, "d": 86400}
_LABEL = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")


@dataclass(frozen=True, slots=True)
class Window:
    labels: dict[str, str]
    starts_at: datetime
    ends_at: datetime
    comment: str


def window_problem(w: Window, now: datetime) -> tuple[str, str] | None:
    """(field, why) when the window cannot be opened, else None."""
    if not 1 <= len(w.labels) <= MAX_LABELS:
        return "matchers", f"from 1 to {MAX_LABELS} labels"
    for name, value in w.labels.items():
        if not _LABEL.fullmatch(name):
            return "matchers", f"{name[:40]!r} is not a label name"
        if not value or len(value) > 256:
            return "matchers", f"{name}: a value of 1 to 256 characters"
    if w.ends_at <= w.starts_at:
        return "ends_at", "after starts_at"
    if w.ends_at <= now:
        return "ends_at", "in the future"
    if w.ends_at - w.starts_at > MAX_WINDOW:
        return "ends_at", "at most 30 days after starts_at"
    return None


def parse_command(args: str, now: datetime) -> Window | str:
    """`/maintenance 2h service=payments [more=labels] comment…`; a usage text otherwise."""
    usage = "Usage: /maintenance 2h service=payments comment (m, h or d; labels as name=value)"
    words = args.split()
    if len(words) < 2 or not (found := _DURATION.fullmatch(words[0])):
        return usage
    labels: dict[str, str] = {}
    rest = words[1:]
    while rest and "=" in rest[0]:
        name, _, value = rest.pop(0).partition("=")
        labels[name] = value
    seconds = int(found.group(1)) * _UNIT[found.group(2)]
    comment = " ".join(rest)[:500]
    return Window(labels, now, now + timedelta(seconds=seconds), comment) if labels else usage


def am_matchers(labels: dict[str, str]) -> list[dict[str, object]]:
    return [
        {"name": k, "value": v, "isRegex": False, "isEqual": True}
        for k, v in sorted(labels.items())
    ]


async def open_window(
    rt: Runtime,
    session: AsyncSession,
    team: Team,
    window: Window,
    *,
    by_name: str,
    by_id: int | None,
) -> SilenceRecord:
    """Store the window (Invalid naming the field when it cannot be), audited."""
    problem = window_problem(window, datetime.now(UTC))
    if problem is not None:
        raise Invalid(*problem)
    record = await silences.create_window(
        session,
        team_id=rt.team_ids[team.name],
        labels=window.labels,
        am_matchers=am_matchers(window.labels),
        comment=window.comment,
        starts_at=window.starts_at,
        ends_at=window.ends_at,
        by_id=by_id or 0,
        by_name=by_name,
        sync_alertmanager=bool(team.alertmanager_url),
    )
    await audit.record(
        session,
        "maintenance.created",
        actor=by_name[:200],
        actor_telegram_id=by_id,
        team_id=record.team_id,
        silence_id=record.id,
        labels=window.labels,
        starts_at=window.starts_at.isoformat(),
        ends_at=window.ends_at.isoformat(),
    )
    return record


async def from_chat(
    rt: Runtime, session: AsyncSession, *, chat_id: int, user_id: int | None, args: str
) -> str:
    """/maintenance 2h service=payments comment…, by one of the chat team's approvers."""
    window = parse_command(args, datetime.now(UTC))
    if isinstance(window, str):
        return esc(window)
    if user_id is None:
        raise Refused("Post as yourself to open a maintenance window.")
    team = chat_team(rt, chat_id)
    approver = team.approvers.get(user_id)
    if approver is None:
        await audit.record(
            session,
            "maintenance.refused",
            actor_telegram_id=user_id,
            team_id=rt.team_ids[team.name],
            chat_id=chat_id,
            reason="not an approver",
        )
        raise NotAMember(team.name)
    made = await open_window(rt, session, team, window, by_name=approver.name, by_id=user_id)
    mirrored = " Also silenced in Alertmanager." if made.am_status == "create" else ""
    return f"{describe(rt, made)}: matching alerts are counted, not posted.{mirrored}"


def describe(rt: Runtime, w: SilenceRecord) -> str:
    labels = ", ".join(f"{k}={v}" for k, v in sorted(w.matchers.get("labels", {}).items()))
    return (
        f"🛠 Maintenance <b>{w.id}</b> for <code>{fit(labels, 200)}</code> from "
        f"{fmt_time(w.starts_at, rt.zone)} to {fmt_time(w.ends_at, rt.zone)}"
    )


async def summarize_ended(rt: Runtime, limit: int = SUMMARY_BATCH) -> int:
    """One line in the team's chats for each window that ended; returns how many."""
    async with transaction(rt.sessions) as session:
        ended = await silences.claim_ended_windows(session, limit)
        for w in ended:
            total, firing = await silences.window_counts(session, w)
            line = (
                f"{describe(rt, w)} ended: during maintenance: {total} alert"
                f"{'' if total == 1 else 's'}, {firing} still firing."
            )
            for chat_id in await active_chats(session, w.team_id):
                await enqueue_text(session, chat_id, line)
            await silences.mark_summarized(session, w.id)
        await silences.release_silenced(session)
        return len(ended)
