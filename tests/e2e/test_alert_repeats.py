"""The plain repeat: a body's one firing alert repeating a firing one is counted by one
statement, writing what the upsert writes; new occurrences and open incidents take the
transaction."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any

from storage import alert_firing
from storage.alerts import IncomingAlert
from storage.db import autocommit, transaction
from tests.support import Harness, db_rows, metric, wait_cards, wait_text

GENERIC = "/api/v1/alerts"
# What a repeat may change, and what it must not (the comparison of the two statements).
COLUMNS = (
    "status, occurrence, source, title, severity, labels, annotations, url, incident_id,"
    " starts_at, ends_at, hit_count, silenced, context, card_due_at IS NOT NULL AS due,"
    " last_seen_at > created_at AS seen_again"
)


def body(fingerprint: str = "disk-db-1", **changes: Any) -> dict[str, Any]:
    return {
        "fingerprint": fingerprint,
        "title": "Disk almost full",
        "severity": "warning",
        "labels": {"host": "db-1"},
        "annotations": {"summary": "95%"},
        "source": "cron",
        "url": "https://ci.example/job/1",
        **changes,
    }


def plain_repeats(h: Harness) -> float:
    value = metric(h, "quorum_alerts_plain_total")
    assert value is not None
    return value


async def post(h: Harness, data: dict[str, Any]) -> dict[str, Any]:
    status, answer = await h.api("POST", GENERIC, data)
    assert status == 200, answer
    return dict(answer)


async def test_repeats_are_plain_and_the_card_counts_them(quorum: Harness) -> None:
    h = quorum
    assert (await post(h, body()))["new"] == 1
    await wait_cards(h, 1)
    for _ in range(3):
        answer = await post(h, body())
        assert (answer["new"], answer["repeats"], answer["silenced"]) == (0, 1, 0)
    assert plain_repeats(h) == 3
    await wait_text(h, "Hits: 4")
    rows = await db_rows(h, "SELECT hit_count FROM alerts")
    assert [r["hit_count"] for r in rows] == [4]
    dedup = await db_rows(h, "SELECT 1 FROM audit_log WHERE event = 'alert.deduplicated'")
    assert len(dedup) == 3
    # Resolved, then firing again: a new occurrence with its own card, never a plain repeat.
    assert (await post(h, body(status="resolved")))["resolved"] == 1
    assert (await post(h, body()))["new"] == 1
    assert plain_repeats(h) == 3
    await wait_cards(h, 2)


async def test_concurrent_repeats_count_each_once(quorum: Harness) -> None:
    h = quorum
    await post(h, body())
    answers = await asyncio.gather(*(post(h, body()) for _ in range(40)))
    assert all(a["repeats"] == 1 for a in answers)
    assert plain_repeats(h) == 40
    rows = await db_rows(h, "SELECT hit_count FROM alerts")
    assert [r["hit_count"] for r in rows] == [41]
    dedup = await db_rows(h, "SELECT 1 FROM audit_log WHERE event = 'alert.deduplicated'")
    assert len(dedup) == 40


async def test_an_open_incident_takes_the_transaction(quorum: Harness) -> None:
    h = quorum
    status, inc = await h.api(
        "POST", "/api/v1/incidents", {"title": "DB", "severity": "P2", "services": ["db"]}
    )
    assert status == 201, inc
    labelled = body(labels={"host": "db-1", "service": "db"})
    assert (await post(h, labelled))["new"] == 1
    assert (await post(h, labelled))["repeats"] == 1
    assert plain_repeats(h) == 0
    rows = await db_rows(h, "SELECT incident_id, hit_count FROM alerts")
    assert [(r["incident_id"], r["hit_count"]) for r in rows] == [(inc["id"], 2)]


def incoming(fingerprint: str, **changes: Any) -> IncomingAlert:
    fields: dict[str, Any] = {
        "fingerprint": fingerprint,
        "status": "firing",
        "source": "cron",
        "title": "Disk full now",
        "severity": "critical",
        "labels": {"host": "db-1", "disk": "sda"},
        "annotations": {"summary": "99%"},
        "url": None,  # keeps the stored one
        "ends_at": datetime(2030, 1, 1, tzinfo=UTC),
        "context": {"runbook": "disk"},
        **changes,
    }
    return IncomingAlert(**fields)


async def twins_after(h: Harness, hits: int) -> list[dict[str, Any]]:
    """Alerts a and b, alike, repeated with the same changes: a by the plain repeat, b by the
    transaction's upsert. Their rows, a then b."""
    rt = h.app.runtime
    team_id = rt.team_ids["platform"]
    for fp in ("twin-a", "twin-b"):
        await post(h, body(fp))
    interval = rt.settings.alert_edit_interval_seconds
    async with autocommit(rt.engine) as conn:
        plain = await alert_firing.count_repeat(
            conn, team_id, incoming("twin-a"), hits, edit_interval=interval
        )
    async with transaction(rt.sessions) as session:
        (upserted,) = await alert_firing.upsert_firing(
            session, team_id, [(incoming("twin-b"), hits)], edit_interval=interval
        )
    assert plain is not None and not plain.inserted and not upserted.inserted
    assert plain.silenced == upserted.silenced
    rows = await db_rows(h, f"SELECT fingerprint, {COLUMNS} FROM alerts ORDER BY fingerprint")
    return [{k: v for k, v in dict(r).items() if k != "fingerprint"} for r in rows]


async def test_the_plain_repeat_writes_what_the_upsert_writes(quorum: Harness) -> None:
    a, b = await twins_after(quorum, hits=3)
    assert a == b
    assert (a["title"], a["hit_count"], a["url"], a["due"]) == (
        "Disk full now",
        4,
        "https://ci.example/job/1",
        True,
    )
    audit = await db_rows(
        quorum,
        "SELECT detail FROM audit_log WHERE event = 'alert.deduplicated' ORDER BY id",
    )
    assert [json.loads(r["detail"]) for r in audit] == [
        {"hits": 3, "silenced": False, "fingerprint": fp} for fp in ("twin-a", "twin-b")
    ]


async def test_a_silenced_repeat_is_counted_alike_and_schedules_no_card(quorum: Harness) -> None:
    h = quorum
    team_id = h.app.runtime.team_ids["platform"]
    now = datetime.now(UTC)
    for fp in ("twin-a", "twin-b"):
        await db_rows(
            h,
            "INSERT INTO silences (team_id, fingerprint, created_by_id, created_by_name,"
            " starts_at, ends_at) VALUES ($1, $2, 1, 'test', $3, $4)",
            team_id,
            fp,
            now - timedelta(minutes=1),
            now + timedelta(hours=1),
        )
    a, b = await twins_after(h, hits=1)
    assert a == b
    assert (a["silenced"], a["hit_count"]) == (True, 2)
