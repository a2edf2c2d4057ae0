"""A real Prometheus Alertmanager (Debian's prometheus-alertmanager) run by a test."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp

from tests.support import wait_until


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
