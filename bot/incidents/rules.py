"""Pure incident rules: status moves, severity steps, alert grouping, command parsing."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from storage.alerts import IncomingAlert

SEVERITIES = ("P0", "P1", "P2", "P3")  # P0 is the worst
STATUSES = ("investigating", "mitigating", "resolved", "closed")
ESCALATED = "escalated"  # a flag with a time, not a status of its own
OPEN_STATUSES = ("investigating", "mitigating")
ID_PATTERN = re.compile(r"INC-\d{8}-[A-Z0-9]{6}")

# Where each status may go next: forward through the life of an incident, back to
# investigating when a fix did not hold; closed is the end.
MOVES: dict[str, frozenset[str]] = {
    "investigating": frozenset({"mitigating", "resolved"}),
    "mitigating": frozenset({"investigating", "resolved"}),
    "resolved": frozenset({"investigating", "closed"}),
    "closed": frozenset(),
}


def move_problem(current: str, target: str) -> str | None:
    """Why an incident in `current` cannot move to `target`, if it cannot."""
    if target not in MOVES:
        return f"unknown status {target!r}"
    if target == current:
        return f"the incident is already {current}"
    if target not in MOVES[current]:
        return f"an incident cannot go from {current} to {target}"
    return None


def step_severity(severity: str, direction: int) -> str | None:
    """One step worse (direction -1, towards P0) or milder (+1); None past either end."""
    i = SEVERITIES.index(severity) + direction
    return SEVERITIES[i] if 0 <= i < len(SEVERITIES) else None


def group_labels(
    group_by: Sequence[str], labels: Mapping[str, str], services: Sequence[str] = ()
) -> dict[str, list[str]]:
    """The grouping labels of a new incident: from the alert it was declared from, else the
    services it names (as values of a `service` grouping label). Empty: groups nothing."""
    out: dict[str, list[str]] = {}
    for name in group_by:
        if name in labels:
            out[name] = [labels[name]]
        elif name == "service" and services:
            out[name] = sorted(set(services))
    return out


def matching_incident(
    labels: Mapping[str, str], groups: Sequence[tuple[str, Mapping[str, Sequence[str]]]]
) -> str | None:
    """The first (oldest) open incident whose every grouping label the alert's labels match."""
    for incident_id, wanted in groups:
        if wanted and all(labels.get(k) in values for k, values in wanted.items()):
            return incident_id
    return None


@dataclass(frozen=True, slots=True)
class Declared:
    severity: str
    title: str


def parse_declaration(args: str) -> Declared | str:
    """`P1 title…` from /incident; a usage message when it is not that."""
    severity, _, title = args.strip().partition(" ")
    severity = severity.upper()
    title = " ".join(title.split())
    if severity not in SEVERITIES or not title:
        return "Usage: /incident P0|P1|P2|P3 title"
    if len(title) > 200:
        return "The title is at most 200 characters."
    return Declared(severity, title)


def parse_note(args: str) -> tuple[str | None, str]:
    """`/note [INC-…] text` as (incident id or None, text)."""
    first, _, rest = args.strip().partition(" ")
    if ID_PATTERN.fullmatch(first.upper()):
        return first.upper(), rest.strip()
    return None, args.strip()


def group_alerts(
    alerts: Sequence[tuple[IncomingAlert, int]],
    groups: Sequence[tuple[str, Mapping[str, Sequence[str]]]],
) -> list[tuple[IncomingAlert, int]]:
    """Alerts (with their hit counts) given the id of the open incident their labels match,
    unless they name one already."""
    out = []
    for alert, hits in alerts:
        found = None if alert.incident_id else matching_incident(alert.labels, groups)
        out.append((replace(alert, incident_id=found) if found else alert, hits))
    return out


# An alert's own severity word, as the severity of an incident declared from it.
ALERT_SEVERITY = {
    "critical": "P1",
    "page": "P1",
    "high": "P1",
    "error": "P2",
    "warning": "P2",
    "warn": "P2",
    "medium": "P2",
    "info": "P3",
    "low": "P3",
}


def severity_for_alert(severity: str | None) -> str:
    return ALERT_SEVERITY.get((severity or "").lower(), "P2")
