"""QUORUM_METRICS_PORT: /metrics and /readyz on a listener of their own, off the public one."""

from __future__ import annotations

from tests.support import Harness, QuorumFactory


async def status(h: Harness, url: str) -> tuple[int, str]:
    async with h.http.get(url) as resp:
        return resp.status, await resp.text()


async def test_metrics_and_readiness_move_to_their_own_listener(
    make_quorum: QuorumFactory,
) -> None:
    h = await make_quorum(metrics_port=0)
    ops = f"http://127.0.0.1:{h.app.metrics_port}"
    assert ops != h.url
    code, text = await status(h, f"{ops}/metrics")
    assert code == 200 and "quorum_updates_received_total" in text
    code, text = await status(h, f"{ops}/readyz")
    assert code == 200, text
    for path in ("/metrics", "/readyz"):
        code, text = await status(h, h.url + path)
        assert code == 404, (path, text)
    assert (await status(h, h.url + "/healthz"))[0] == 200
    # The public API is unchanged.
    code, _ = await h.api("GET", "/api/v1/approvals")
    assert code == 200


async def test_without_the_setting_the_public_listener_serves_them(quorum: Harness) -> None:
    code, text = await status(quorum, quorum.url + "/metrics")
    assert code == 200 and "quorum_updates_received_total" in text
    assert (await status(quorum, quorum.url + "/readyz"))[0] == 200
    assert quorum.settings.metrics_port is None
