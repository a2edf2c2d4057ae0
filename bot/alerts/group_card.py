"""A group card (alerts sharing the team's group labels) and a chat's storm digest: pure HTML."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from zoneinfo import ZoneInfo

from bot.alerts.card import SEVERITY_ICON, activity_lines, render_card
from bot.rendering import MAX_TEXT, fit, fmt_duration, fmt_time, join_lines, plural
from storage.alerts import AckRecord, AlertRecord, LinkedApproval, SilenceRecord

SHOWN_MEMBERS = 10  # instances listed on a group card; the rest are "+N more"
# Worst first: the order of severities in a digest and a group's headline severity.
SEVERITY_RANK = {
    "critical": 0,
    "page": 0,
    "high": 1,
    "error": 1,
    "warning": 2,
    "warn": 2,
    "medium": 2,
    "info": 3,
    "low": 3,
}
CRITICAL = frozenset(k for k, v in SEVERITY_RANK.items() if v == 0)


def severity_rank(severity: str | None) -> int:
    return SEVERITY_RANK.get((severity or "").lower(), 4)


def worst_severity(members: Sequence[AlertRecord]) -> str | None:
    firing = [m for m in members if m.status == "firing"] or list(members)
    return min((m.severity for m in firing), key=severity_rank, default=None)


def is_critical(members: Sequence[AlertRecord]) -> bool:
    return (worst_severity(members) or "").lower() in CRITICAL


def group_key(labels: dict[str, Any], group_by: Sequence[str], fingerprint: str) -> str:
    """The group an alert joins: its values of the group_by labels; an alert with none of
    them (or a team grouping by nothing) is a group of its own."""
    if not group_by or not any(k in labels for k in group_by):
        return "fp:" + fingerprint
    return "g:" + "\x1f".join(f"{k}={labels.get(k, '')}" for k in group_by)


def group_labels(anchor: AlertRecord, group_by: Sequence[str]) -> dict[str, str]:
    return {k: str(anchor.labels[k]) for k in group_by if k in anchor.labels}


def member_name(alert: AlertRecord, group_by: Sequence[str]) -> str:
    """What tells a member from the others: its instance, else its first other label."""
    if "instance" in alert.labels and "instance" not in group_by:
        return str(alert.labels["instance"])
    for k, v in sorted(alert.labels.items()):
        if k not in group_by and k not in ("severity", "job"):
            return f"{k}={v}"
    return alert.fingerprint[:16]


def render_group(
    members: Sequence[AlertRecord],
    *,
    group_by: Sequence[str],
    tz: ZoneInfo,
    acks: Sequence[AckRecord] = (),
    silence: SilenceRecord | None = None,
    approvals: Sequence[LinkedApproval] = (),
) -> str:
    """A group's card; a group of one is the alert's own card."""
    if len(members) == 1:
        return render_card(members[0], tz=tz, acks=acks, silence=silence, approvals=approvals)
    anchor = min(members, key=lambda m: m.id)
    firing = [m for m in members if m.status == "firing"]
    severity = worst_severity(members)
    if firing:
        icon = SEVERITY_ICON.get((severity or "").lower(), "⚪")
        head = f"🔥 <b>FIRING</b> {icon}"
    else:
        start = min(m.starts_at or m.first_seen_at for m in members)
        end = max(m.ends_at or m.resolved_at or m.last_seen_at for m in members)
        head = f"✅ <b>RESOLVED</b> after {fmt_duration((end - start).total_seconds())}"
    if severity:
        head += f" · {fit(severity, 32)}"
    head += f" · {fit(anchor.source, 32)} · {plural(len(members), 'alert')}"
    labels = group_labels(anchor, group_by)
    lines = [head, f"<b>{fit(anchor.title, 300)}</b>"]
    if labels:
        shown = ", ".join(f'{k}="{v}"' for k, v in labels.items())
        lines.append(f"Group: <code>{fit(shown, 300)}</code>")
    lines.append("")
    for m in members[:SHOWN_MEMBERS]:
        mark = "🔥" if m.status == "firing" else "✅"
        lines.append(f"{mark} {fit(member_name(m, group_by), 120)} · {plural(m.hit_count, 'hit')}")
    if len(members) > SHOWN_MEMBERS:
        lines.append(f"<i>+{len(members) - SHOWN_MEMBERS} more</i>")
    lines.append("")
    lines += _summary_lines(members, firing, tz)
    lines += activity_lines(tz, acks, silence, approvals, firing=bool(firing))
    return join_lines(lines, MAX_TEXT - 40)


def render_details(members: Sequence[AlertRecord], *, group_by: Sequence[str], tz: ZoneInfo) -> str:
    """Every member of a group, firing first, for a private chat (cut at Telegram's 4096
    characters with "+N more")."""
    anchor = min(members, key=lambda m: m.id)
    ordered = sorted(members, key=lambda m: (m.status != "firing", m.id))
    labels = ", ".join(f'{k}="{v}"' for k, v in group_labels(anchor, group_by).items())
    head = [f"📋 <b>{fit(anchor.title, 300)}</b> · {plural(len(members), 'alert')}"]
    if labels:
        head.append(f"Group: <code>{fit(labels, 300)}</code>")
    head.append("")
    lines = [
        f"{'🔥' if m.status == 'firing' else '✅'} {fit(member_name(m, group_by), 120)}"
        f" · {plural(m.hit_count, 'hit')} · since {fmt_time(m.first_seen_at, tz)}"
        for m in ordered
    ]
    budget = MAX_TEXT - 40 - sum(len(h) + 1 for h in head)
    shown: list[str] = []
    for i, line in enumerate(lines):
        rest = len(lines) - i
        if budget - len(line) - 1 < (len(f"<i>+{rest} more</i>") if rest > 1 else 0):
            shown.append(f"<i>+{rest} more</i>")
            break
        shown.append(line)
        budget -= len(line) + 1
    return "\n".join(head + shown)


def _summary_lines(
    members: Sequence[AlertRecord], firing: Sequence[AlertRecord], tz: ZoneInfo
) -> list[str]:
    starts = [m.starts_at for m in members if m.starts_at]
    started = f" · started {fmt_time(min(starts), tz)} (source)" if starts else ""
    hits = sum(m.hit_count for m in members)
    return [
        f"Firing <b>{len(firing)}</b> · resolved {len(members) - len(firing)}"
        f" · Hits: <b>{hits}</b>{started}",
        f"First seen here {fmt_time(min(m.first_seen_at for m in members), tz)}"
        f" · last {fmt_time(max(m.last_seen_at for m in members), tz)}",
    ]


def digest_line(members: Sequence[AlertRecord]) -> str:
    """One group in a digest: ✅ when every member is resolved, else its worst severity."""
    anchor = min(members, key=lambda m: m.id)
    firing = sum(1 for m in members if m.status == "firing")
    hits = sum(m.hit_count for m in members)
    if firing:
        mark = SEVERITY_ICON.get((worst_severity(members) or "").lower(), "⚪")
        counts = f"{firing} firing" + (
            f", {len(members) - firing} resolved" if firing < len(members) else ""
        )
    else:
        mark, counts = "✅", f"{len(members)} resolved"
    return f"{mark} <b>{fit(anchor.title, 80)}</b> · {counts} · {plural(hits, 'hit')}"


def render_digest(groups: Sequence[Sequence[AlertRecord]], *, final: bool) -> str:
    """A chat's storm digest: a headline with the counts, then one line per group, worst
    first (firing before resolved)."""
    alerts = [m for g in groups for m in g]
    firing = sum(1 for m in alerts if m.status == "firing")
    if final:
        head = (
            f"🌪 <b>Storm over</b>: {plural(len(alerts), 'alert')}, {len(alerts) - firing} resolved,"
            f" {firing} still firing"
        )
    else:
        live = sum(1 for g in groups if any(m.status == "firing" for m in g))
        head = (
            f"🌪 <b>Storm</b>: {plural(firing, 'alert')} firing in {plural(live, 'group')}"
            f" ({len(groups)} in this digest)"
        )

    def order(g: Sequence[AlertRecord]) -> tuple[int, int, int]:
        live = any(m.status == "firing" for m in g)
        return (0 if live else 1, severity_rank(worst_severity(g)), min(m.id for m in g))

    lines = [head, ""] + [digest_line(g) for g in sorted(groups, key=order)]
    if final and firing:
        lines += ["", "The groups still firing have their own cards below."]
    elif not final:
        lines += ["", "<i>Each group gets its own card once the chat is quiet again.</i>"]
    return join_lines(lines, MAX_TEXT - 40)
