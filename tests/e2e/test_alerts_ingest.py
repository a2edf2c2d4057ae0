"""Alert intake over HTTP: Alertmanager, Grafana and generic bodies become one living card."""

from __future__ import annotations

import asyncio

import asyncpg
from sqlalchemy.engine import make_url

from bot.outbox import Sender
from storage.db import to_sync_dsn
from tests.support import (
    ALICE,
    AM_PATH,
    API_KEY,
    CHAT,
    Harness,
    am_alert,
    am_body,
    cards,
    db_rows,
    wait_cards,
    wait_text,
)


async def test_alertmanager_firing_then_resolved_edits_the_card(quorum: Harness) -> None:
    status, body = await quorum.api("POST", AM_PATH, am_body(am_alert()))
    assert status == 200, body
    assert body["new"] == 1
    (card,) = await wait_cards(quorum, 1)
    text = str(card["text"])
    assert "FIRING" in text and "DiskFull" in text and "Disk almost full" in text
    buttons = [b["text"] for row in card["reply_markup"]["inline_keyboard"] for b in row]
    assert buttons == [
        "👀 Acknowledge",
        "✅ Resolve",
        "🔕 1h",
        "🔕 4h",
        "🔕 24h",
        "🚨 Declare incident",
    ]

    resolved = am_alert(status="resolved", ends_at="2026-01-01T10:05:30Z")
    status, body = await quorum.api("POST", AM_PATH, am_body(resolved))
    assert status == 200 and body["resolved"] == 1
    card = await wait_text(quorum, "RESOLVED")
    assert "after 5m 30s" in str(card["text"])
    assert not (card.get("reply_markup") or {}).get("inline_keyboard")
    assert len(cards(await quorum.bot_messages())) == 1
    events = {r["event"] for r in await db_rows(quorum, "SELECT event FROM audit_log")}
    assert {"alert.received", "alert.sent", "alert.resolved"} <= events


async def test_repeats_make_one_card_and_count(quorum: Harness) -> None:
    for _ in range(5):
        status, _ = await quorum.api("POST", AM_PATH, am_body(am_alert()))
        assert status == 200
    card = await wait_text(quorum, "Hits: 5")
    assert len(cards(await quorum.bot_messages())) == 1
    assert card["edits"] >= 1
    rows = await db_rows(quorum, "SELECT hit_count FROM alerts")
    assert [r["hit_count"] for r in rows] == [5]
    dedup = await db_rows(quorum, "SELECT 1 FROM audit_log WHERE event = 'alert.deduplicated'")
    assert len(dedup) == 4


async def test_two_alertmanager_replicas_make_one_card(quorum: Harness) -> None:
    a = am_alert(starts_at="2026-01-01T10:00:00.000Z")
    b = am_alert(starts_at="2026-01-01T10:00:01.734Z")
    results = await asyncio.gather(
        quorum.api("POST", AM_PATH, am_body(a, external_url="http://am-0:9093")),
        quorum.api("POST", AM_PATH, am_body(b, external_url="http://am-1:9093")),
    )
    assert [s for s, _ in results] == [200, 200]
    await wait_text(quorum, "Hits: 2")
    assert len(cards(await quorum.bot_messages())) == 1


async def test_refire_after_resolve_opens_a_new_occurrence(quorum: Harness) -> None:
    await quorum.api("POST", AM_PATH, am_body(am_alert()))
    await wait_cards(quorum, 1)
    await quorum.api("POST", AM_PATH, am_body(am_alert(status="resolved")))
    await wait_text(quorum, "RESOLVED")
    status, body = await quorum.api("POST", AM_PATH, am_body(am_alert()))
    assert status == 200 and body["new"] == 1
    found = await wait_cards(quorum, 2)
    assert "#2" in str(found[1]["text"]) and "FIRING" in str(found[1]["text"])
    rows = await db_rows(quorum, "SELECT occurrence, status FROM alerts ORDER BY occurrence")
    assert [(r["occurrence"], r["status"]) for r in rows] == [(1, "resolved"), (2, "firing")]


async def test_grafana_body(quorum: Harness) -> None:
    body = {
        "receiver": "quorum",
        "status": "firing",
        "orgId": 1,
        "alerts": [
            {
                "status": "firing",
                "labels": {
                    "alertname": "HighLatency",
                    "grafana_folder": "api",
                    "severity": "warning",
                },
                "annotations": {"summary": "p99 latency above 2s"},
                "startsAt": "2026-01-01T10:00:00Z",
                "endsAt": "0001-01-01T00:00:00Z",
                "generatorURL": "https://grafana.example/alerting/grafana/abc/view",
                "fingerprint": "9f8e7d6c5b4a3921",
                "silenceURL": "https://grafana.example/alerting/silence/new",
                "dashboardURL": "https://grafana.example/d/abc",
                "panelURL": "https://grafana.example/d/abc?viewPanel=2",
                "values": {"B": 2.7, "C": 1},
                "valueString": "[ var='B' labels={} value=2.7 ]",
            }
        ],
        "groupLabels": {"alertname": "HighLatency"},
        "commonLabels": {"alertname": "HighLatency"},
        "commonAnnotations": {},
        "externalURL": "https://grafana.example/",
        "version": "1",
        "groupKey": '{}/{}:{alertname="HighLatency"}',
        "truncatedAlerts": 0,
        "title": "[FIRING:1] HighLatency (api)",
        "state": "alerting",
        "message": "**Firing**\n\nValue: B=2.7",
    }
    status, result = await quorum.api("POST", "/api/v1/alerts/grafana", body)
    assert status == 200, result
    (card,) = await wait_cards(quorum, 1)
    text = str(card["text"])
    assert "HighLatency" in text and "grafana" in text and "value=2.7" in text
    links = [e.get("url") for e in card.get("entities") or [] if e.get("type") == "text_link"]
    assert links == ["https://grafana.example/d/abc?viewPanel=2"]


async def test_generic_single_and_list(quorum: Harness) -> None:
    one = {
        "title": "Backup failed",
        "severity": "warning",
        "labels": {"job": "backup", "host": "db-1"},
        "annotations": {"summary": "nightly backup exited 1"},
        "source": "cron",
        "url": "https://ci.example/job/1",
    }
    status, body = await quorum.api("POST", "/api/v1/alerts", one)
    assert status == 200 and body["new"] == 1, body
    status, body = await quorum.api(
        "POST",
        "/api/v1/alerts",
        [
            {**one, "labels": {"host": "db-1", "job": "backup"}},  # same labels: same alert
            {"title": "Cert expires soon", "fingerprint": "cert-api", "labels": {}},
        ],
    )
    assert status == 200 and (body["new"], body["repeats"]) == (1, 1), body
    await wait_cards(quorum, 2)
    await wait_text(quorum, "Hits: 2")
    status, body = await quorum.api(
        "POST", "/api/v1/alerts", {"fingerprint": "cert-api", "status": "resolved"}
    )
    assert status == 422  # a title (or alertname label) is required
    status, body = await quorum.api(
        "POST",
        "/api/v1/alerts",
        {"fingerprint": "cert-api", "status": "resolved", "title": "Cert expires soon"},
    )
    assert status == 200 and body["resolved"] == 1
    await wait_text(quorum, "RESOLVED")


async def test_bad_bodies_are_refused_with_reasons(quorum: Harness) -> None:
    url = quorum.url + AM_PATH
    auth = {"Authorization": f"Bearer {API_KEY}"}
    async with quorum.http.post(
        url, data=b'{"alerts": [', headers={**auth, "Content-Type": "application/json"}
    ) as resp:
        assert resp.status == 400
        assert (await resp.json())["error"]["code"] == "invalid_json"
    async with quorum.http.post(
        url, data=b"alerts=1", headers={**auth, "Content-Type": "text/plain"}
    ) as resp:
        assert resp.status in (400, 415)
    big = b'{"alerts": [], "pad": "' + b"x" * (1024 * 1024 + 10) + b'"}'
    async with quorum.http.post(
        url, data=big, headers={**auth, "Content-Type": "application/json"}
    ) as resp:
        assert resp.status == 413
        assert (await resp.json())["error"]["code"] == "payload_too_large"
    status, body = await quorum.api("POST", AM_PATH, {"version": "4"})
    assert status == 422 and body["error"]["message"].startswith("alerts:")
    bad = am_body(am_alert())
    bad["alerts"][0]["status"] = "exploded"
    status, body = await quorum.api("POST", AM_PATH, bad)
    assert status == 422 and body["error"]["message"].startswith("alerts.0.status")
    status, _ = await quorum.api("POST", AM_PATH, am_body(am_alert()), key="wrong")
    assert status == 401
    status, _ = await quorum.api("POST", AM_PATH, am_body(am_alert()), key=None)
    assert status == 401
    assert await db_rows(quorum, "SELECT 1 FROM alerts") == []


async def test_markup_and_huge_values_stay_literal_and_short(quorum: Harness) -> None:
    labels = {f"label_{i:02d}": f"<b>v{i}</b> & more" for i in range(40)}
    labels["alertname"] = "Weird</code><b>"
    labels["huge"] = "x" * 10_000
    annotations = {
        "summary": "<b>95%</b> used & rising",
        "description": '</code> <a href="tg://user?id=1">click</a> ' + "y&" * 5_000,
        "runbook": "z" * 10_000,
    }
    alert = am_alert(labels=labels, annotations=annotations, fingerprint=None)
    status, body = await quorum.api("POST", AM_PATH, am_body(alert, truncated=17))
    assert status == 200, body
    (card,) = await wait_cards(quorum, 1)
    text = str(card["text"])  # the emulator parsed the HTML: markup came through as text
    assert len(text) <= 4096
    assert "<b>95%</b> used & rising" in text
    assert "Weird</code><b>" in text
    assert '<a href="tg://user?id=1">click</a>' in text  # shown, not a link
    assert "more" in text  # 42 labels do not all fit
    assert "truncated 17" in text
    links = [e["url"] for e in card.get("entities") or [] if e.get("type") == "text_link"]
    assert links == ["http://prometheus:9090/graph?g0.expr=up"]


async def test_silenced_fingerprint_is_counted_not_sent(quorum: Harness) -> None:
    await quorum.api("POST", AM_PATH, am_body(am_alert()))
    (card,) = await wait_cards(quorum, 1)
    tap = await quorum.emu.tap(CHAT, card["message_id"], ALICE, button_text="🔕 1h", wait=5)
    assert "Silenced for 1h" in str(tap["answer"])
    await wait_text(quorum, "Silenced until")
    await quorum.api("POST", AM_PATH, am_body(am_alert(status="resolved")))
    await wait_text(quorum, "RESOLVED")
    status, body = await quorum.api("POST", AM_PATH, am_body(am_alert()))
    assert status == 200 and body["silenced"] == 1
    await quorum.api("POST", AM_PATH, am_body(am_alert()))
    # Everything due is sent once the outbox drains: a card for a silenced alert would be too.
    async with asyncio.timeout(15):
        await Sender(quorum.app.runtime).drain()
    assert len(cards(await quorum.bot_messages())) == 1
    rows = await db_rows(quorum, "SELECT hit_count, silenced FROM alerts WHERE status='firing'")
    assert [(r["hit_count"], r["silenced"]) for r in rows] == [(2, True)]


async def test_storage_down_answers_503(quorum: Harness) -> None:
    name = make_url(quorum.settings.database_url).database
    server = make_url(quorum.settings.database_url).set(database="postgres")
    admin = await asyncpg.connect(to_sync_dsn(server.render_as_string(hide_password=False)))
    try:
        await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = $1 AND pid <> pg_backend_pid()",
            name,
        )
        status, body = await quorum.api("POST", AM_PATH, am_body(am_alert()))
    finally:
        await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        await admin.close()
    assert status == 503, body
    assert body["error"]["code"] == "unavailable"
    status, body = await quorum.api("POST", AM_PATH, am_body(am_alert()))
    assert status == 200, body  # the sender's retry succeeds once storage is back
