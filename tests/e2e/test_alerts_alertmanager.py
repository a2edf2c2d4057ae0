"""End to end with a real Prometheus Alertmanager (Debian's prometheus-alertmanager)."""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.support import (
    ALICE,
    AM_PATH,
    API_KEY,
    BOB,
    CHAT,
    Harness,
    am_alert,
    am_body,
    cards,
    db_rows,
    free_port,
    in_ci,
    policy_data,
    wait_cards,
    wait_text,
    wait_until,
)

BINARY = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")


@pytest.fixture
def alertmanager_binary() -> str:
    if BINARY is None:
        if in_ci():
            pytest.fail("prometheus-alertmanager is not installed; CI must install it")
        pytest.skip(
            "prometheus-alertmanager not installed (apt-get install prometheus-alertmanager)"
        )
    return BINARY


class Alertmanager:
    def __init__(self, binary: str, workdir: Path, port: int) -> None:
        self.binary = binary
        self.workdir = workdir
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self, webhook_url: str, api_key: str) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = {
            "route": {
                "receiver": "quorum",
                "group_by": ["alertname"],
                "group_wait": "1s",
                "group_interval": "1s",
                "repeat_interval": "1h",
            },
            "receivers": [
                {
                    "name": "quorum",
                    "webhook_configs": [
                        {
                            "url": webhook_url,
                            "send_resolved": True,
                            "http_config": {
                                "authorization": {"type": "Bearer", "credentials": api_key}
                            },
                        }
                    ],
                }
            ],
        }
        path = self.workdir / "alertmanager.yml"
        path.write_text(json.dumps(config))  # JSON is YAML
        log = (self.workdir / "alertmanager.log").open("wb")
        self.proc = await asyncio.create_subprocess_exec(
            self.binary,
            f"--config.file={path}",
            f"--storage.path={self.workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--cluster.listen-address=",
            stdout=log,
            stderr=log,
        )
        log.close()
        proc = self.proc
        async with aiohttp.ClientSession() as http:

            async def ready() -> bool:
                if proc.returncode is not None:
                    raise AssertionError(f"Alertmanager exited with {proc.returncode}")
                try:
                    async with http.get(f"{self.url}/-/ready") as resp:
                        return resp.status == 200
                except aiohttp.ClientError:
                    return False

            try:
                await wait_until(ready, 20, what="Alertmanager's /-/ready", interval=0.1)
            except AssertionError as exc:
                raise AssertionError(self.log_tail(str(exc))) from None

    def log_tail(self, why: str) -> str:
        text = (self.workdir / "alertmanager.log").read_text()[-2000:]
        return f"{why}; Alertmanager did not start:\n{text}"

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.terminate()
            try:
                async with asyncio.timeout(10):
                    await self.proc.wait()
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()

    async def request(self, method: str, path: str, body: Any = None) -> Any:
        async with (
            aiohttp.ClientSession() as http,
            http.request(method, self.url + path, json=body) as resp,
        ):
            assert resp.status < 300, await resp.text()
            return await resp.json(content_type=None)

    async def post_alert(self, labels: dict[str, str], *, resolved: bool = False) -> None:
        now = datetime.now(UTC)
        alert: dict[str, Any] = {
            "labels": labels,
            "annotations": {"summary": "<b>95%</b> used & rising"},
            "generatorURL": "http://prometheus.example:9090/graph",
            "startsAt": (now - timedelta(minutes=2)).isoformat(),
        }
        if resolved:
            alert["endsAt"] = (now - timedelta(seconds=1)).isoformat()
        await self.request("POST", "/api/v2/alerts", [alert])


@pytest.fixture
async def alertmanagers(
    alertmanager_binary: str, tmp_path: Path
) -> AsyncIterator[Callable[[int], Alertmanager]]:
    started: list[Alertmanager] = []

    def make(port: int) -> Alertmanager:
        am = Alertmanager(alertmanager_binary, tmp_path / f"am-{len(started)}", port)
        started.append(am)
        return am

    yield make
    for am in started:
        await am.stop()


LABELS = {"alertname": "DiskFull", "severity": "critical", "instance": "db-1:9100"}


async def test_real_alertmanager_fires_and_resolves(
    quorum: Harness, alertmanagers: Callable[[int], Alertmanager]
) -> None:
    am = alertmanagers(free_port())
    await am.start(quorum.url + "/api/v1/alerts/alertmanager", API_KEY)
    await am.post_alert(LABELS)
    (card,) = await wait_cards(quorum, 1, timeout=20)
    text = str(card["text"])
    assert "FIRING" in text and "DiskFull" in text and "<b>95%</b> used & rising" in text
    await am.post_alert(LABELS, resolved=True)
    card = await wait_text(quorum, "RESOLVED", timeout=20)
    assert not (card.get("reply_markup") or {}).get("inline_keyboard")
    assert len(cards(await quorum.bot_messages())) == 1


async def test_two_alertmanager_replicas_make_one_card(
    quorum: Harness, alertmanagers: Callable[[int], Alertmanager]
) -> None:
    first, second = alertmanagers(free_port()), alertmanagers(free_port())
    await asyncio.gather(
        first.start(quorum.url + "/api/v1/alerts/alertmanager", API_KEY),
        second.start(quorum.url + "/api/v1/alerts/alertmanager", API_KEY),
    )
    await asyncio.gather(first.post_alert(LABELS), second.post_alert(LABELS))

    async def both_delivered() -> bool:
        rows = await db_rows(quorum, "SELECT hit_count FROM alerts WHERE status = 'firing'")
        return bool(rows) and rows[0]["hit_count"] >= 2

    await quorum.wait_for(both_delivered, timeout=20)
    await wait_cards(quorum, 1)
    assert len(cards(await quorum.bot_messages())) == 1
    rows = await db_rows(quorum, "SELECT count(*) AS n FROM alerts")
    assert rows[0]["n"] == 1


async def test_silence_button_creates_and_unsilence_expires_in_alertmanager(
    make_quorum: Any, alertmanagers: Callable[[int], Alertmanager]
) -> None:
    am = alertmanagers(free_port())
    policy = policy_data()
    policy["teams"]["platform"]["alertmanager_url"] = am.url
    h: Harness = await make_quorum(policy)
    await am.start(h.url + "/api/v1/alerts/alertmanager", API_KEY)
    await am.post_alert(LABELS)
    (card,) = await wait_cards(h, 1, timeout=20)
    tap = await h.emu.tap(CHAT, card["message_id"], ALICE, button_text="🔕 1h", wait=5)
    assert tap["answer"] and "Alertmanager" in tap["answer"]["text"]

    async def am_silence() -> Any:
        silences = await am.request("GET", "/api/v2/silences")
        active = [s for s in silences if s["status"]["state"] == "active"]
        return active[0] if active else None

    silence = await h.wait_for(am_silence, timeout=10)
    matchers = {m["name"]: m["value"] for m in silence["matchers"]}
    assert matchers == LABELS
    assert "alice" in silence["createdBy"]

    async def stored() -> Any:
        rows = await db_rows(h, "SELECT id, alertmanager_silence_id FROM silences")
        return rows if rows and rows[0]["alertmanager_silence_id"] else None

    (row,) = await h.wait_for(stored)
    assert row["alertmanager_silence_id"] == silence["id"]
    await wait_text(h, silence["id"])  # the card names the Alertmanager silence

    await h.emu.send_text(CHAT, BOB, f"/unsilence {silence['id']}")

    async def expired() -> bool:
        silences = await am.request("GET", "/api/v2/silences")
        return all(s["status"]["state"] == "expired" for s in silences)

    await h.wait_for(expired, timeout=10)

    async def audited() -> bool:
        rows = await db_rows(h, "SELECT event FROM audit_log ORDER BY id")
        events = {r["event"] for r in rows}
        return {"alertmanager_silence_created", "alertmanager_silence_expired"} <= events

    await h.wait_for(audited)


async def test_alertmanager_unreachable_is_reported(make_quorum: Any) -> None:
    policy = policy_data()
    policy["teams"]["platform"]["alertmanager_url"] = f"http://127.0.0.1:{free_port()}"
    h: Harness = await make_quorum(policy)
    await h.api("POST", AM_PATH, am_body(am_alert()))
    (card,) = await wait_cards(h, 1)
    tap = await h.emu.tap(CHAT, card["message_id"], ALICE, button_text="🔕 1h", wait=5)
    assert tap["answer"] and "Silenced for 1h" in tap["answer"]["text"]

    async def reported() -> Any:
        msgs = await h.bot_messages()
        return [m for m in msgs if "Could not create the Alertmanager silence" in str(m["text"])]

    await h.wait_for(reported)
    rows = await db_rows(h, "SELECT am_status FROM silences")
    assert [r["am_status"] for r in rows] == ["failed"]
    events = [r["event"] for r in await db_rows(h, "SELECT event FROM audit_log")]
    assert "alertmanager_silence_failed" in events
    status = await db_rows(h, "SELECT silenced FROM alerts")
    assert [r["silenced"] for r in status] == [True]  # the local silence still applies
