"""The alert card's times say whose they are, and a runbook is a link."""

from __future__ import annotations

from zoneinfo import ZoneInfo

from bot.alerts.card import render_card
from storage.alerts import AlertRecord
from tests.support import alert_record as alert


def card(a: AlertRecord) -> str:
    return render_card(a, tz=ZoneInfo("UTC"))


def test_started_and_first_seen_are_labelled_apart() -> None:
    html = card(alert())
    assert (
        "Hits: <b>1</b> · started 2026-01-01 09:15 UTC (source)"
        " · first seen here 2026-01-01 09:21 UTC · last 2026-01-01 09:40 UTC"
    ) in html
    assert "started" not in card(alert(starts_at=None))


def test_truncated_alerts_are_pluralised() -> None:
    assert "truncated 1 more alert of" in card(alert(context={"truncated_alerts": 1}))
    assert "truncated 2 more alerts of" in card(alert(context={"truncated_alerts": 2}))
    assert "(s)" not in card(alert(context={"truncated_alerts": 2}))


def test_runbook_url_annotation_is_a_link() -> None:
    url = 'https://wiki.example/run?a=1&b="2"'
    html = card(alert(annotations={"summary": "s", "runbook_url": url}))
    assert '<a href="https://wiki.example/run?a=1&amp;b=&quot;2&quot;">runbook</a>' in html
    assert "runbook_url" not in html  # not repeated as a raw key


def test_runbook_url_label_is_a_link() -> None:
    html = card(alert(labels={"alertname": "x", "runbook_url": "http://rb.example/x"}))
    assert '<a href="http://rb.example/x">runbook</a>' in html


def test_a_runbook_that_is_not_http_stays_text() -> None:
    html = card(alert(annotations={"runbook_url": "javascript:alert(1)"}))
    assert ">runbook</a>" not in html and 'href="javascript' not in html
    assert "<i>runbook_url</i>: javascript:alert(1)" in html
