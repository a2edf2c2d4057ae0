"""An incident card's HTML and buttons: pure rendering, every outside string escaped."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from bot.buttons import ButtonSigner, keyboard
from bot.rendering import fit, fit_html, fmt_duration, fmt_time
from storage.incidents import ApprovalLink, IncidentRecord, TimelineRecord

STATUS_ICON = {"investigating": "🔎", "mitigating": "🛠", "resolved": "✅", "closed": "🔒"}
SEVERITY_ICON = {"P0": "🟥", "P1": "🟧", "P2": "🟨", "P3": "🟦"}
APPROVAL_ICON = {"pending": "⏳", "approved": "✅", "rejected": "❌", "expired": "⌛"}
CARD_LINES = 5  # the newest timeline lines a card shows

# Button actions: (label, act) rows by status; `act` is what IncidentAction carries.
COMMAND, MITIGATING, RESOLVED, NOTE, WORSE, MILDER = "cmd", "mit", "res", "note", "up", "dn"
CLOSE, REOPEN = "cls", "reo"
ACTIONS = frozenset({COMMAND, MITIGATING, RESOLVED, NOTE, WORSE, MILDER, CLOSE, REOPEN})
_OPEN_ROWS = [
    [("🙋 Take command", COMMAND), ("⏩ Mitigating", MITIGATING), ("✅ Resolved", RESOLVED)],
    [("📝 Note", NOTE), ("⬆️ Severity", WORSE), ("⬇️ Severity", MILDER)],
]
_RESOLVED_ROWS = [[("🔒 Close", CLOSE), ("↩️ Reopen", REOPEN), ("📝 Note", NOTE)]]


def render_card(
    incident: IncidentRecord,
    *,
    tz: ZoneInfo,
    now: datetime,
    firing: int,
    resolved: int,
    approvals: Sequence[ApprovalLink],
    lines: Sequence[TimelineRecord],
) -> str:
    i = incident
    escalated = " · ⬆️ escalated" if i.escalated_at else ""
    end = i.resolved_at or now
    commander = fit(i.commander_name, 64) if i.commander_name else "nobody yet"
    out = [
        f"🚨 <b>{i.id}</b> · {SEVERITY_ICON[i.severity]} {i.severity}{escalated}",
        f"<b>{fit(i.title, 300)}</b>",
        "",
        f"{STATUS_ICON[i.status]} {i.status.capitalize()} · commander: {commander}",
        f"Open {fmt_duration((end - i.created_at).total_seconds())}"
        f" (since {fmt_time(i.created_at, tz)})",
        f"Alerts: {firing} firing, {resolved} resolved",
    ]
    if i.services:
        out.append("Services: " + ", ".join(fit(s, 64) for s in i.services[:10]))
    if approvals:
        out += ["", "<b>Approvals</b>"]
        out += [
            f"{APPROVAL_ICON.get(a.status, '•')} {fit(a.action, 80)} → {fit(a.target, 80)}"
            f" ({a.status})"
            for a in approvals[:10]
        ]
    if lines:
        out += ["", "<b>Timeline</b>"]
        out += [timeline_line(e, tz) for e in lines[-CARD_LINES:]]
    return fit_html("\n".join(out))


def timeline_line(e: TimelineRecord, tz: ZoneInfo) -> str:
    """One timeline line as chat HTML: time, text (×count for coalesced repeats)."""
    count = f" ×{e.count}" if e.count > 1 else ""
    at = e.at.astimezone(tz).strftime("%H:%M")
    return f"<code>{at}</code> {fit(e.text, 200)}{count}"


def card_markup(signer: ButtonSigner, incident: IncidentRecord, chat_id: int) -> dict[str, Any]:
    rows = _OPEN_ROWS if incident.open else _RESOLVED_ROWS if incident.status == "resolved" else []
    return keyboard(
        [
            [(label, signer.incident_button(incident.id, act, chat_id)) for label, act in row]
            for row in rows
        ]
    )
