"""The incident rules as tables: status moves, severity steps, grouping, command parsing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.alerts.maintenance import Window, parse_command, window_problem
from bot.incidents.postmortem import md
from bot.incidents.rules import (
    MOVES,
    SEVERITIES,
    Declared,
    group_alerts,
    group_labels,
    matching_incident,
    move_problem,
    parse_declaration,
    parse_note,
    severity_for_alert,
    step_severity,
)
from storage.alerts import IncomingAlert

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("current", "target", "allowed"),
    [
        ("investigating", "mitigating", True),
        ("investigating", "resolved", True),
        ("investigating", "closed", False),
        ("mitigating", "investigating", True),
        ("mitigating", "resolved", True),
        ("resolved", "closed", True),
        ("resolved", "investigating", True),
        ("resolved", "mitigating", False),
        ("closed", "investigating", False),
        ("closed", "closed", False),
        ("mitigating", "mitigating", False),
        ("investigating", "paused", False),
    ],
)
def test_status_moves(current: str, target: str, allowed: bool) -> None:
    assert (move_problem(current, target) is None) is allowed


def test_closed_is_the_end() -> None:
    assert MOVES["closed"] == frozenset()


@pytest.mark.parametrize(
    ("severity", "direction", "expected"),
    [("P1", -1, "P0"), ("P0", -1, None), ("P3", 1, None), ("P2", 1, "P3"), ("P0", 1, "P1")],
)
def test_severity_steps(severity: str, direction: int, expected: str | None) -> None:
    assert step_severity(severity, direction) == expected


@pytest.mark.parametrize(
    ("group_by", "labels", "services", "expected"),
    [
        (("service",), {"service": "pay", "x": "1"}, (), {"service": ["pay"]}),
        (("service",), {}, ("b", "a", "a"), {"service": ["a", "b"]}),
        (("service",), {}, (), {}),
        (("service", "env"), {"env": "prod"}, ("pay",), {"service": ["pay"], "env": ["prod"]}),
        (("env",), {}, ("pay",), {}),
    ],
)
def test_group_labels(
    group_by: tuple[str, ...],
    labels: dict[str, str],
    services: tuple[str, ...],
    expected: dict[str, list[str]],
) -> None:
    assert group_labels(group_by, labels, services) == expected


GROUPS = [
    ("INC-1", {"service": ["pay", "checkout"]}),
    ("INC-2", {"service": ["pay"], "env": ["prod"]}),
    ("INC-3", {}),
]


@pytest.mark.parametrize(
    ("labels", "expected"),
    [
        ({"service": "pay"}, "INC-1"),
        ({"service": "checkout", "env": "prod"}, "INC-1"),
        ({"service": "search"}, None),
        ({}, None),
    ],
)
def test_the_oldest_matching_incident_wins(labels: dict[str, str], expected: str | None) -> None:
    assert matching_incident(labels, GROUPS) == expected


def test_grouping_keeps_an_alerts_own_incident() -> None:
    own = IncomingAlert("a", "firing", "am", "t", labels={"service": "pay"}, incident_id="X")
    other = IncomingAlert("b", "firing", "am", "t", labels={"service": "pay"})
    stray = IncomingAlert("c", "firing", "am", "t", labels={"service": "search"})
    out = group_alerts([(own, 1), (other, 2), (stray, 3)], GROUPS)
    assert [(a.incident_id, n) for a, n in out] == [("X", 1), ("INC-1", 2), (None, 3)]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ("P1 Payments down", Declared("P1", "Payments down")),
        ("p0   db   gone ", Declared("P0", "db gone")),
        ("P4 nope", None),
        ("P1", None),
        ("", None),
        ("P2 " + "x" * 201, None),
    ],
)
def test_parse_declaration(args: str, expected: Declared | None) -> None:
    got = parse_declaration(args)
    assert got == expected if expected else isinstance(got, str)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ("INC-20261127-ABCDEF rolled back", ("INC-20261127-ABCDEF", "rolled back")),
        ("inc-20261127-abcdef x", ("INC-20261127-ABCDEF", "x")),
        ("rolled back", (None, "rolled back")),
        ("", (None, "")),
    ],
)
def test_parse_note(args: str, expected: tuple[str | None, str]) -> None:
    assert parse_note(args) == expected


@pytest.mark.parametrize(
    ("word", "severity"),
    [("critical", "P1"), ("Warning", "P2"), ("info", "P3"), (None, "P2"), ("weird", "P2")],
)
def test_severity_for_alert(word: str | None, severity: str) -> None:
    assert severity_for_alert(word) == severity


@pytest.mark.parametrize(
    ("args", "labels", "seconds"),
    [
        ("2h service=payments db upgrade", {"service": "payments"}, 7200),
        ("30m service=a env=prod", {"service": "a", "env": "prod"}, 1800),
        ("1d job=x", {"job": "x"}, 86400),
        ("2h", None, 0),
        ("soon service=a", None, 0),
        ("2h no labels here", None, 0),
    ],
)
def test_parse_maintenance(args: str, labels: dict[str, str] | None, seconds: int) -> None:
    got = parse_command(args, NOW)
    if labels is None:
        assert isinstance(got, str) and got.startswith("Usage")
    else:
        assert isinstance(got, Window) and got.labels == labels
        assert got.ends_at - got.starts_at == timedelta(seconds=seconds)


@pytest.mark.parametrize(
    ("labels", "start", "end", "field"),
    [
        ({"service": "a"}, 0, 60, None),
        ({}, 0, 60, "matchers"),
        ({"1x": "a"}, 0, 60, "matchers"),
        ({"service": ""}, 0, 60, "matchers"),
        ({"service": "a"}, 60, 30, "ends_at"),
        ({"service": "a"}, -120, -60, "ends_at"),
        ({"service": "a"}, 0, 31 * 86400, "ends_at"),
    ],
)
def test_window_problems(labels: dict[str, str], start: int, end: int, field: str | None) -> None:
    w = Window(labels, NOW + timedelta(seconds=start), NOW + timedelta(seconds=end), "")
    problem = window_problem(w, NOW)
    assert (problem[0] if problem else None) == field


@given(st.text(max_size=200))
def test_markdown_text_stays_inert_on_one_line(text: str) -> None:
    out = md(text)
    assert "\n" not in out and "\r" not in out
    for special in "*_[]<>#|`~":
        # Every special is escaped: each occurrence is preceded by a backslash.
        i = out.find(special)
        while i != -1:
            assert i > 0 and out[i - 1] == "\\", (text, out)
            i = out.find(special, i + 1)


def test_severities_are_ordered_worst_first() -> None:
    assert SEVERITIES == ("P0", "P1", "P2", "P3")
