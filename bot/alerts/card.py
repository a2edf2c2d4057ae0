"""An alert card's HTML and buttons: pure rendering, every outside string escaped."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from zoneinfo import ZoneInfo

from bot.buttons import ButtonSigner, keyboard
from bot.fingerprints import web_url
from bot.rendering import MAX_TEXT, fit, fmt_duration, fmt_time, href, plural
from storage.alerts import AckRecord, AlertRecord, LinkedApproval, SilenceRecord

SEVERITY_ICON = {
    "critical": "🔴",
    "page": "🔴",
    "high": "🔴",
    "error": "🔴",
    "warning": "🟠",
    "warn": "🟠",
    "medium": "🟠",
    "info": "🔵",
    "low": "🔵",
}
# Annotations shown in full as the card's text; any others are shown as `key: value` lines.
NOTE_KEYS = ("summary", "description", "message")
RUNBOOK_KEY = "runbook_url"  # a label or annotation shown as a link when it is http(s)


def render_card(
    alert: AlertRecord,
    *,
    tz: ZoneInfo,
    acks: Sequence[AckRecord] = (),
    silence: SilenceRecord | None = None,
    approvals: Sequence[LinkedApproval] = (),
) -> str:
    """The card's HTML: every outside string escaped and the whole within Telegram's 4096."""
    top = [_head_line(alert), f"<b>{fit(alert.title, 300)}</b>"]
    meta = _state_lines(alert, tz) + activity_lines(
        tz, acks, silence, approvals, firing=alert.status == "firing"
    )
    runbook = _runbook_url(alert)
    tail = [_fingerprint_line(alert, runbook)]
    fixed = len("\n".join(top + meta + tail)) + 40
    label_budget = min(1400, max(0, MAX_TEXT - fixed - 400))
    shown_labels = _without_runbook(alert.labels, runbook)
    labels = _label_lines(shown_labels, label_budget) if shown_labels else []
    if labels:
        labels.insert(0, "<b>Labels</b>")
    notes = _note_lines(
        _without_runbook(alert.annotations, runbook),
        MAX_TEXT - fixed - len("\n".join(labels)) - 10,
    )
    sections = ["\n".join(top)]
    if notes:
        sections.append("\n".join(notes))
    if labels:
        sections.append("\n".join(labels))
    sections.append("\n".join(meta + tail))
    html = "\n\n".join(sections)
    if len(html) > MAX_TEXT:  # cannot happen with the budgets above; never send an invalid card
        html = "\n\n".join([sections[0], sections[-1]])[:MAX_TEXT]
    return html


def _head_line(alert: AlertRecord) -> str:
    if alert.status == "firing":
        icon = SEVERITY_ICON.get((alert.severity or "").lower(), "⚪")
        head = f"🔥 <b>FIRING</b> {icon}"
    else:
        start = alert.starts_at or alert.first_seen_at
        end = alert.ends_at or alert.resolved_at or alert.last_seen_at
        head = f"✅ <b>RESOLVED</b> after {fmt_duration((end - start).total_seconds())}"
    if alert.severity:
        head += f" · {fit(alert.severity, 32)}"
    head += f" · {fit(alert.source, 32)}"
    if alert.occurrence > 1:
        head += f" · #{alert.occurrence}"
    return head


def _state_lines(alert: AlertRecord, tz: ZoneInfo) -> list[str]:
    """Hits, times, the value and Alertmanager's truncation warning."""
    # The source's startsAt and our first sighting differ (a late webhook, a restarted
    # Alertmanager), so each time says whose it is.
    started = f" · started {fmt_time(alert.starts_at, tz)} (source)" if alert.starts_at else ""
    lines = [
        f"Hits: <b>{alert.hit_count}</b>{started}"
        f" · first seen here {fmt_time(alert.first_seen_at, tz)}"
        f" · last {fmt_time(alert.last_seen_at, tz)}"
    ]
    if alert.status == "resolved":
        by = f" by {fit(alert.resolved_by, 64)}" if alert.resolved_by else ""
        lines.append(f"Resolved: {fmt_time(alert.resolved_at, tz)}{by}")
    value = alert.context.get("value")
    if value:
        lines.append(f"Value: <code>{fit(value, 300)}</code>")
    truncated = alert.context.get("truncated_alerts")
    if isinstance(truncated, int) and truncated > 0:
        more = plural(truncated, "more alert")
        lines.append(f"⚠️ Alertmanager truncated {more} of this group")
    return lines


def activity_lines(
    tz: ZoneInfo,
    acks: Sequence[AckRecord],
    silence: SilenceRecord | None,
    approvals: Sequence[LinkedApproval],
    *,
    firing: bool,
) -> list[str]:
    """What people did about an alert or a group: acknowledgements, a silence (while
    `firing`), pending approvals."""
    lines = []
    if acks:
        names = ", ".join(f"{fit(a.name, 40)} ({fmt_time(a.at, tz)})" for a in acks[:5])
        more = f" +{len(acks) - 5} more" if len(acks) > 5 else ""
        lines.append(f"👀 Acknowledged by {names}{more}")
    if silence is not None and firing:
        line = (
            f"🔕 Silenced until {fmt_time(silence.ends_at, tz)} by "
            f"{fit(silence.created_by_name, 40)} (silence {silence.id})"
        )
        matchers = silence.matchers.get("matchers") or []
        if silence.alertmanager_silence_id:
            line += f" · Alertmanager <code>{fit(silence.alertmanager_silence_id, 64)}</code>"
        if matchers:
            line += f" matching <code>{fit(matcher_text(matchers), 300)}</code>"
        else:
            line += " · in Quorum only"
        lines.append(line)
    for req in approvals[:3]:
        lines.append(
            f"⏳ Pending approval: {fit(req.action, 60)} on {fit(req.target, 100)}"
            f" (<code>{str(req.id)[:8]}</code>)"
        )
    if len(approvals) > 3:
        lines.append(f"⏳ +{plural(len(approvals) - 3, 'more pending approval')}")
    return lines


def matcher_text(matchers: Sequence[dict[str, Any]]) -> str:
    """Alertmanager matchers as its own syntax, unescaped: `alertname="X", instance="y"`."""
    return ", ".join(f'{m.get("name")}="{m.get("value")}"' for m in matchers)


def _runbook_url(alert: AlertRecord) -> str | None:
    """The runbook link (annotation first, then label), if it is a plain http(s) URL; any
    other value stays among the annotations or labels as text."""
    for source in (alert.annotations, alert.labels):
        value = source.get(RUNBOOK_KEY)
        if isinstance(value, str) and web_url(value):
            return value.strip()
    return None


def _without_runbook(items: dict[str, Any], runbook: str | None) -> dict[str, Any]:
    """The labels or annotations minus the runbook entry the card already links."""
    value = items.get(RUNBOOK_KEY)
    if runbook is None or not isinstance(value, str) or value.strip() != runbook:
        return items
    return {k: v for k, v in items.items() if k != RUNBOOK_KEY}


def _fingerprint_line(alert: AlertRecord, runbook: str | None) -> str:
    line = f"Fingerprint: <code>{fit(alert.fingerprint, 64)}</code>"
    if alert.url:
        line += f' · <a href="{href(alert.url)}">source</a>'
    if runbook:
        line += f' · <a href="{href(runbook)}">runbook</a>'
    return line


def _label_lines(labels: dict[str, Any], budget: int, max_lines: int = 15) -> list[str]:
    items = sorted(labels.items())
    lines: list[str] = []
    used = 0
    for i, (key, value) in enumerate(items):
        line = f"<code>{fit(key, 60)}</code> = <code>{fit(value, 160)}</code>"
        if len(lines) >= max_lines or used + len(line) + 20 > budget:
            lines.append(f"<i>+{len(items) - i} more</i>")
            break
        lines.append(line)
        used += len(line) + 1
    return lines


def _note_lines(annotations: dict[str, Any], budget: int) -> list[str]:
    """The annotations within `budget` characters: the main texts first, then up to 5 others."""
    notes: list[str] = []
    for key in NOTE_KEYS:
        text = annotations.get(key)
        if text and budget > 40:
            part = fit(text, min(1500, budget - 1))
            notes.append(part)
            budget -= len(part) + 1
    others = sorted((k, v) for k, v in annotations.items() if k not in NOTE_KEYS)
    for key, text in others[:5]:
        if budget <= 80:
            break
        part = f"<i>{fit(key, 40)}</i>: {fit(text, min(300, budget - 60))}"
        notes.append(part)
        budget -= len(part) + 1
    return notes


def card_markup(
    signer: ButtonSigner,
    alert: AlertRecord,
    chat_id: int,
    *,
    firing: bool | None = None,
    details: bool = False,
) -> dict[str, Any] | None:
    """The card's buttons, signed for this chat; a resolved card has none. On a group's card
    they name its first alert and act on the whole group (`firing`: whether any member is);
    `details` adds the button that sends the group's full list privately."""
    if not (alert.status == "firing" if firing is None else firing):
        return None
    b = signer.alert_button
    return keyboard(
        [
            [
                ("👀 Acknowledge", b(alert.id, "ack", chat_id)),
                ("✅ Resolve", b(alert.id, "res", chat_id)),
            ],
            [
                ("🔕 1h", b(alert.id, "s1", chat_id)),
                ("🔕 4h", b(alert.id, "s4", chat_id)),
                ("🔕 24h", b(alert.id, "s24", chat_id)),
            ],
            *([[("📋 Details", b(alert.id, "det", chat_id))]] if details else []),
            # An alert already in an incident is counted on the incident's card instead.
            *([] if alert.incident_id else [[_declare_button(signer, alert, chat_id)]]),
        ]
    )


def _declare_button(signer: ButtonSigner, alert: AlertRecord, chat_id: int) -> tuple[str, str]:
    return ("🚨 Declare incident", signer.declare_button(alert.id, chat_id))
