"""The executor's side: redeem with the action about to run; the README's snippets work."""

from __future__ import annotations

import asyncio
import re
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.flows import audit_events, card, create, sql, tap
from tests.support import ALICE, API_KEY, Harness

ROOT = Path(__file__).resolve().parents[2]
ACTION, TARGET = "restart deployment", "prod/api"  # what the README's snippets redeem for


async def approved_token(h: Harness, **over: Any) -> tuple[str, str]:
    req = await create(h, **over)
    await tap(h, await card(h, req["id"]), ALICE)
    _status, got = await h.api("GET", f"/api/v1/approvals/{req['id']}")
    assert got["status"] == "approved", got
    return req["id"], got["approval_token"]


async def redeem(h: Harness, token: str, **fields: str) -> tuple[int, Any]:
    return await h.api("POST", "/api/v1/tokens/redeem", {"token": token, **fields})


@pytest.mark.parametrize(
    "wrong",
    [{"action": "drop table"}, {"target": "prod/db"}, {"action": ACTION, "target": "prod/db"}],
    ids=["action", "target", "target-only-wrong"],
)
async def test_mismatch_is_409_audited_and_leaves_the_token_usable(
    quorum: Harness, wrong: dict[str, str]
) -> None:
    rid, token = await approved_token(quorum)
    status, data = await redeem(quorum, token, **wrong)
    assert status == 409 and data["error"]["code"] == "action_mismatch", data
    assert (
        "restart deployment" in data["error"]["message"] or "prod/api" in data["error"]["message"]
    )
    assert "token.action_mismatch" in await audit_events(quorum, rid)
    rows = await sql(
        quorum,
        "SELECT detail FROM audit_log WHERE event = 'token.action_mismatch' AND approval_id = $1",
        rid,
    )
    assert len(rows) == 1 and token not in str(rows[0]["detail"])
    assert (await sql(quorum, "SELECT count(*) AS n FROM token_redemptions"))[0]["n"] == 0
    # The right executor still redeems it, once.
    status, data = await redeem(quorum, token, action=ACTION, target=TARGET)
    assert status == 200 and data["id"] == rid, data
    status, data = await redeem(quorum, token, action=ACTION, target=TARGET)
    assert status == 409 and data["error"]["code"] == "token_replayed"


async def test_action_and_target_stay_optional(quorum: Harness) -> None:
    _rid, token = await approved_token(quorum)
    assert (await redeem(quorum, token, action=ACTION))[0] == 200
    _rid, token = await approved_token(quorum, target="prod/other")
    assert (await redeem(quorum, token))[0] == 200
    status, data = await redeem(quorum, "x", action="")
    assert status == 422 and data["error"]["field"] == "action"


def readme_block(marker: str) -> str:
    text = (ROOT / "README.md").read_text()
    found = re.search(rf"<!-- executor:{marker} -->\n```\w+\n(.*?)\n```", text, re.DOTALL)
    assert found, f"README.md has no executor:{marker} block"
    return found.group(1)


async def run(h: Harness, token: str, *command: str) -> tuple[int, str, str]:
    """A snippet as the executor runs it: another process, over HTTP (never blocking the loop
    Quorum serves on)."""
    env = {
        "QUORUM_URL": h.url,
        "QUORUM_API_KEY": API_KEY,
        "APPROVAL_TOKEN": token,
        "PATH": "/usr/bin:/bin",
    }
    proc = await asyncio.create_subprocess_exec(
        *command,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(30):
        out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


@pytest.mark.parametrize("snippet", ["curl", "python"])
async def test_readme_executor_snippets(quorum: Harness, snippet: str) -> None:
    block = readme_block(snippet)
    command = ["bash", "-ec", block] if snippet == "curl" else [sys.executable, "-c", block]
    rid, token = await approved_token(quorum, action=ACTION, target=TARGET)
    code, out, err = await run(quorum, token, *command)
    assert code == 0, (out, err)
    assert rid in out if snippet == "curl" else f"approved by [{ALICE}]" in out
    assert "token.redeemed" in await audit_events(quorum, rid)
    # The same snippet holding another request's token refuses to run it, and uses nothing up.
    other, token = await approved_token(quorum, action="drop table", target=TARGET)
    code, out, err = await run(quorum, token, *command)
    # curl prints the JSON error; urllib raises HTTPError (the snippet stops before running).
    refusal = "action_mismatch" if snippet == "curl" else "HTTP Error 409"
    assert code != 0 and refusal in out + err, (out, err)
    assert "token.redeemed" not in await audit_events(quorum, other)
    assert (await redeem(quorum, token, action="drop table"))[0] == 200
