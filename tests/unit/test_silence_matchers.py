"""Which silences are mirrored to Alertmanager, and with which matchers."""

from __future__ import annotations

from typing import Any

import pytest

from bot.alerts.actions import silence_matchers
from bot.alerts.card import matcher_text
from bot.alerts.sources import read_alerts
from bot.errors import Invalid


def _names(matchers: list[dict[str, Any]]) -> dict[str, str]:
    return {m["name"]: m["value"] for m in matchers}


@pytest.mark.parametrize(
    ("source", "labels", "mirrored"),
    [
        # The reported case: one tap would mute every critical alert in Alertmanager.
        ("generic", {"severity": "critical"}, {}),
        ("generic", {"alertname": "DiskFull", "instance": "db-1"}, {}),
        ("cron", {"alertname": "X", "job": "backup"}, {}),
        ("alertmanager", {"severity": "critical"}, {}),
        ("alertmanager", {"alertname": "DiskFull"}, {}),
        ("alertmanager", {"alertname": "DiskFull", "instance": ""}, {}),
        ("alertmanager", {"alertname": "", "instance": "db-1"}, {}),
        (
            "alertmanager",
            {"alertname": "DiskFull", "instance": "db-1"},
            {"alertname": "DiskFull", "instance": "db-1"},
        ),
        (
            "grafana",
            {"alertname": "Lat", "service": "api", "empty": ""},
            {"alertname": "Lat", "service": "api"},
        ),
    ],
)
def test_silence_matchers_table(
    source: str, labels: dict[str, str], mirrored: dict[str, str]
) -> None:
    matchers = silence_matchers(source, labels)
    assert _names(matchers) == mirrored
    assert all(m["isEqual"] and not m["isRegex"] for m in matchers)


def test_matcher_text() -> None:
    text = matcher_text(silence_matchers("alertmanager", {"alertname": "A", "instance": "b"}))
    assert text == 'alertname="A", instance="b"'


@pytest.mark.parametrize("source", ["alertmanager", "grafana", "Alertmanager"])
def test_generic_intake_cannot_claim_alertmanager(source: str) -> None:
    from pydantic import ValidationError

    with pytest.raises((ValidationError, Invalid)):
        read_alerts("generic", {"title": "t", "labels": {"alertname": "A"}, "source": source})
