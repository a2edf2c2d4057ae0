"""The postmortem draft: Markdown from an incident, its timeline and its approvals (pure)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime
from zoneinfo import ZoneInfo

from bot.rendering import fmt_duration
from storage.incidents import ApprovalLink, IncidentRecord, TimelineRecord

_MD_SPECIAL = re.compile(r"([\\`*_\[\]<>#|~])")


def md(value: object) -> str:
    """Untrusted text as inert Markdown on one line: specials escaped, line breaks folded."""
    return _MD_SPECIAL.sub(r"\\\1", " ".join(str(value).split()))


def _at(moment: datetime | None, tz: ZoneInfo) -> str:
    return moment.astimezone(tz).strftime("%Y-%m-%d %H:%M:%S %Z") if moment else "—"


def _since(start: datetime | None, end: datetime | None) -> str:
    return fmt_duration((end - start).total_seconds()) if start and end else "—"


def severity_history(incident: IncidentRecord, lines: Sequence[TimelineRecord]) -> list[str]:
    """The severities the incident had, first to last."""
    changes = [e.detail for e in lines if e.kind == "incident.severity"]
    first = str(changes[0].get("from")) if changes else incident.severity
    return [first, *(str(c.get("to")) for c in changes)]


def render(
    incident: IncidentRecord,
    lines: Sequence[TimelineRecord],
    approvals: Sequence[ApprovalLink],
    *,
    team: str,
    tz: ZoneInfo,
    firing: int,
    resolved: int,
) -> str:
    i = incident
    start = i.first_alert_at or i.created_at
    out = [
        f"# {i.id}: {md(i.title)}",
        "",
        "## Summary",
        "",
        f"- Team: {md(team)}",
        f"- Severity: {i.severity}"
        + (f", escalated {_at(i.escalated_at, tz)}" if i.escalated_at else ""),
        f"- Status: {i.status}",
        f"- Commander: {md(i.commander_name) if i.commander_name else '—'}",
        f"- Services: {', '.join(md(s) for s in i.services) or '—'}",
        f"- Declared by {md(i.declared_by)} at {_at(i.created_at, tz)}",
        f"- Alerts: {firing} firing, {resolved} resolved",
        "",
        "## Impact window",
        "",
        f"From {_at(start, tz)} to {_at(i.resolved_at, tz) if i.resolved_at else 'ongoing'}"
        + (f" ({_since(start, i.resolved_at)})" if i.resolved_at else ""),
        "",
        "## Severity history",
        "",
        " → ".join(severity_history(i, lines)),
        "",
        f"## Timeline ({tz.key})",
        "",
    ]
    for e in lines:
        count = f" ×{e.count}" if e.count > 1 else ""
        who = f" ({md(e.actor)})" if e.actor else ""
        out.append(f"- {_at(e.at, tz)} · {e.kind}{who}: {md(e.text)}{count}")
    out += ["", "## Actions approved and run", ""]
    for a in approvals:
        by = ", ".join(md(v.get("name", v)) if isinstance(v, dict) else md(v) for v in a.decided_by)
        result = {True: "succeeded", False: "failed", None: "no result reported"}[a.result_success]
        approved = f", approved by {by}" if a.status == "approved" and by else ""
        ran = f", {result}" if a.status == "approved" else ""
        out.append(f"- {md(a.action)} on {md(a.target)}: {a.status}{approved}{ran}")
    if not approvals:
        out.append("None.")
    out += [
        "",
        "## Measures",
        "",
        f"- Time to acknowledge: {_since(start, i.acknowledged_at)}",
        f"- Time to resolve: {_since(i.created_at, i.resolved_at)}",
        "",
    ]
    return "\n".join(out)
