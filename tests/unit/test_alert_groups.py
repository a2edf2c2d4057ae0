"""Group keys, group cards and storm digests: pure decisions and rendering, table-tested."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.alerts.card import render_card
from bot.alerts.group_card import (
    SHOWN_MEMBERS,
    group_key,
    is_critical,
    render_digest,
    render_group,
    worst_severity,
)
from bot.rendering import MAX_TEXT
from storage.alerts import AlertRecord
from tests.support import alert_record as alert

UTC_ZONE = ZoneInfo("UTC")
AT = datetime(2026, 1, 1, 9, 0, tzinfo=UTC)


def member(i: int, **over: Any) -> AlertRecord:
    labels = {"alertname": "DiskFull", "instance": f"web-{i}:9100", "severity": "warning"}
    base = alert(id=100 + i, fingerprint=f"fp{i}", labels=labels, severity="warning")
    return dataclasses.replace(base, group_id=100, **over)


@pytest.mark.parametrize(
    ("labels", "group_by", "key"),
    [
        ({"alertname": "A", "instance": "x"}, ("alertname",), "g:alertname=A"),
        ({"alertname": "A", "job": "j"}, ("alertname", "job"), "g:alertname=A\x1fjob=j"),
        ({"alertname": "A"}, ("alertname", "job"), "g:alertname=A\x1fjob="),
        ({"alertname": "A"}, (), "fp:fp9"),  # grouping by nothing: one card per fingerprint
        ({"severity": "critical"}, ("alertname",), "fp:fp9"),  # none of the labels: alone
    ],
)
def test_group_key(labels: dict[str, str], group_by: tuple[str, ...], key: str) -> None:
    assert group_key(labels, group_by, "fp9") == key


@given(st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=4))
def test_group_key_of_same_group_labels_agree(extra: dict[str, str]) -> None:
    a = group_key({**extra, "alertname": "A"}, ("alertname",), "fp1")
    b = group_key({"alertname": "A"}, ("alertname",), "fp2")
    assert a == b


@pytest.mark.parametrize(
    ("severities", "worst", "critical"),
    [
        (["warning", "critical"], "critical", True),
        (["info", "warning"], "warning", False),
        (["page"], "page", True),
        ([None, "low"], "low", False),
    ],
)
def test_worst_severity(severities: list[str | None], worst: str, critical: bool) -> None:
    group = [member(i, severity=s) for i, s in enumerate(severities)]
    assert worst_severity(group) == worst
    assert is_critical(group) is critical


def test_a_group_of_one_is_the_alerts_own_card() -> None:
    one = member(0)
    assert render_group([one], group_by=("alertname",), tz=UTC_ZONE) == render_card(
        one, tz=UTC_ZONE
    )


def test_group_card_counts_lists_and_shows_more() -> None:
    group = [member(i, hit_count=2) for i in range(SHOWN_MEMBERS + 3)]
    group[1] = dataclasses.replace(group[1], status="resolved", resolved_at=AT, ends_at=AT)
    html = render_group(group, group_by=("alertname",), tz=UTC_ZONE)
    head = html.splitlines()[0]
    assert head.startswith("🔥 <b>FIRING</b>") and f"{len(group)} alerts" in head
    assert 'Group: <code>alertname="DiskFull"</code>' in html
    assert "✅ web-1:9100 · 2 hits" in html and "🔥 web-0:9100" in html
    assert "<i>+3 more</i>" in html
    assert f"Firing <b>{len(group) - 1}</b> · resolved 1 · Hits: <b>{2 * len(group)}</b>" in html


def test_group_card_resolved_when_every_member_is() -> None:
    group = [member(i, status="resolved", resolved_at=AT, ends_at=AT) for i in range(3)]
    html = render_group(group, group_by=("alertname",), tz=UTC_ZONE)
    assert html.splitlines()[0].startswith("✅ <b>RESOLVED</b>")


def test_group_card_escapes_and_fits() -> None:
    evil = "<b>" + "x" * 5000
    group = [
        dataclasses.replace(member(i), title=evil, labels={"alertname": evil, "instance": evil})
        for i in range(SHOWN_MEMBERS)
    ]
    html = render_group(group, group_by=("alertname",), tz=UTC_ZONE)
    assert "<b>x" not in html and len(html) <= MAX_TEXT


def test_digest_worst_first_and_resolved_marked() -> None:
    warn = [member(0)]
    crit = [dataclasses.replace(member(1, severity="critical", title="Crit"), group_id=101)]
    gone = [
        dataclasses.replace(
            member(2, status="resolved", title="Gone", resolved_at=AT, ends_at=AT), group_id=102
        )
    ]
    lines = render_digest([warn, gone, crit], final=False).splitlines()
    assert lines[0] == "🌪 <b>Storm</b>: 2 alerts firing in 2 groups (3 in this digest)"
    assert lines[2].startswith("🔴 <b>Crit</b> · 1 firing")
    assert lines[3].startswith("🟠 <b>DiskFull</b>")
    assert lines[4].startswith("✅ <b>Gone</b> · 1 resolved")
    final = render_digest([warn, gone, crit], final=True)
    assert final.startswith("🌪 <b>Storm over</b>: 3 alerts, 1 resolved, 2 still firing")


def test_digest_fits_telegram_with_many_groups() -> None:
    groups = [[dataclasses.replace(member(i), group_id=100 + i)] for i in range(400)]
    assert len(render_digest(groups, final=False)) <= MAX_TEXT
