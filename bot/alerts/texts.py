"""The alert chat commands' answers: firing alerts and active silences of the chat's team."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from bot.errors import Refused
from bot.policy import Team
from bot.rendering import esc, fit, fmt_time, join_lines, plural
from bot.runtime import Runtime
from storage import alerts as store
from storage.alerts import SilenceRecord
from storage.silences import MAINTENANCE


def chat_team(rt: Runtime, chat_id: int) -> Team:
    """The team whose chat this is; Refused for a chat outside the policy."""
    team = rt.policy.team_for_chat(chat_id)
    if team is None or team.name not in rt.team_ids:
        raise Refused("This chat does not belong to a team in the policy file.")
    return team


async def list_firing(rt: Runtime, session: AsyncSession, chat_id: int, limit: int = 25) -> str:
    team = chat_team(rt, chat_id)
    team_id = rt.team_ids[team.name]
    alerts = await store.firing_alerts(session, team_id, limit)
    if not alerts:
        return f"No firing alerts for team <b>{esc(team.name)}</b>. 🎉"
    total = await store.count_firing(session, team_id)
    tz = rt.zone
    lines = [f"🔥 <b>{plural(total, 'firing alert')}</b> for team <b>{esc(team.name)}</b>"]
    for a in alerts:
        flags = " 🔕" if a.silenced else ""
        sev = f"{fit(a.severity, 20)} · " if a.severity else ""
        lines.append(
            f"• <b>{fit(a.title, 80)}</b>{flags}\n  {sev}{plural(a.hit_count, 'hit')} · since "
            f"{fmt_time(a.first_seen_at, tz)} · <code>{fit(a.fingerprint, 64)}</code>"
        )
    if total > len(alerts):
        lines.append(f"… and {total - len(alerts)} more")
    return join_lines(lines)


async def list_silences(rt: Runtime, session: AsyncSession, chat_id: int) -> str:
    team = chat_team(rt, chat_id)
    silences = await store.active_silences(session, rt.team_ids[team.name])
    if not silences:
        return f"No active silences for team <b>{esc(team.name)}</b>."
    count = plural(len(silences), "active silence")
    lines = [f"🔕 <b>{count}</b> for team <b>{esc(team.name)}</b>"]
    lines += [_silence_line(rt, s) for s in silences[:30]]
    lines.append("Remove one with /unsilence &lt;id&gt;.")
    return join_lines(lines)


def _silence_line(rt: Runtime, s: SilenceRecord) -> str:
    am = ""
    if s.alertmanager_silence_id:
        am = f" · Alertmanager <code>{fit(s.alertmanager_silence_id, 64)}</code>"
    elif s.am_status == "failed":
        am = " · Alertmanager: failed"
    what = s.fingerprint
    if s.fingerprint == MAINTENANCE:
        labels = ", ".join(f"{k}={v}" for k, v in sorted(s.matchers.get("labels", {}).items()))
        what = f"maintenance {labels}"
    return (
        f"• <b>{s.id}</b> · <code>{fit(what, 200)}</code> until "
        f"{fmt_time(s.ends_at, rt.zone)} by {fit(s.created_by_name, 40)}{am}"
    )
