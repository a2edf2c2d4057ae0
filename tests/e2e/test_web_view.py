"""The read-only web view in a real browser (Debian's chromium driven by Playwright): sign-in
by a /web link, each page, a link's second use refused, another team's request a 404."""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, async_playwright

from bot.audit import chain
from bot.audit.sealer import make_checkpoint
from tests.e2e.flows import all_sealed, approved, create, sql
from tests.support import (
    ALICE,
    BOT_ID,
    CAROL,
    CHAT,
    OTHER_API_KEY,
    Harness,
    QuorumFactory,
    in_ci,
)

# Set to a directory (docs/) to keep the screenshots the README shows.
SHOTS = os.environ.get("QUORUM_SCREENSHOTS_DIR")
CHROMIUM = shutil.which("chromium")


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    if CHROMIUM is None:
        if in_ci():
            pytest.fail("chromium is not installed; CI must install it (apt-get install chromium)")
        pytest.skip("chromium not installed (apt-get install chromium)")
    async with async_playwright() as pw:
        launched = await pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield launched
        await launched.close()


async def web_link(h: Harness, user: int) -> str:
    """What the bot answers to /web in `user`'s private chat: the link's URL."""
    await h.emu.send_text(user, user, "/web")

    async def answered() -> str | None:
        for m in await h.emu.messages(user):
            if m["from_id"] == BOT_ID:
                links = [e["url"] for e in m.get("entities") or [] if e["type"] == "text_link"]
                return links[0] if links else str(m["text"])
        return None

    found: str = await h.wait_for(answered)
    return found


async def shot(page: Any, tmp_path: Path, name: str) -> None:
    await page.set_viewport_size({"width": 1000, "height": 700})
    await page.screenshot(path=str(tmp_path / name), full_page=False)
    if SHOTS:
        shutil.copy(tmp_path / name, Path(SHOTS) / name)


async def test_sign_in_pages_and_refusals(
    make_quorum: QuorumFactory, browser: Browser, tmp_path: Path
) -> None:
    h = await make_quorum(audit_signing_key=chain.new_private_key())
    request_id, _ = await approved(h)
    await create(h, action="drop table", target="prod/db/sessions", risk_level="critical")
    status, other = await h.api(
        "POST",
        "/api/v1/approvals",
        {"action": "x", "target": "y", "risk_level": "low", "requested_by": "ci"},
        key=OTHER_API_KEY,
    )
    assert status == 201, other
    await all_sealed(h)
    await make_checkpoint(h.app.runtime.sessions, h.settings, force=True)

    link = await web_link(h, ALICE)
    assert link.startswith(f"{h.url}/ui/login?t="), link
    context = await browser.new_context()
    page = await context.new_page()
    await page.goto(link)
    async with page.expect_navigation():
        await page.click("#sign-in")
    assert page.url == f"{h.url}/ui/"
    text = await page.inner_text("main")
    assert "platform" in text and "drop table" in text and "restart deployment" in text
    assert "data" not in text.split()  # erin's team is not alice's
    cookie = next(c for c in await context.cookies() if c["name"] == "quorum_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    await shot(page, tmp_path, "web-requests.png")

    answer = await page.goto(f"{h.url}/ui/approvals/{request_id}")
    assert answer is not None and answer.status == 200
    assert "default-src 'none'" in answer.headers["content-security-policy"]
    text = await page.inner_text("main")
    assert "alice: approve" in text and "Not redeemed" in text and "vote.accepted" in text
    viewed = await sql(
        h,
        "SELECT actor FROM audit_log WHERE event = 'web.viewed' AND approval_id = $1::uuid",
        request_id,
    )
    assert [r["actor"] for r in viewed] == ["alice"]

    answer = await page.goto(f"{h.url}/ui/approvals/{other['id']}")
    assert answer is not None and answer.status == 404
    answer = await page.goto(f"{h.url}/ui/approvals/not-a-uuid")
    assert answer is not None and answer.status == 404

    answer = await page.goto(f"{h.url}/ui/audit?event=approval.created")
    assert answer is not None and answer.status == 200
    text = await page.inner_text("main")
    assert "rows sealed" in text and "Last checkpoint: seq" in text
    assert text.count("approval.created") >= 2
    await shot(page, tmp_path, "web-audit.png")
    answer = await page.goto(f"{h.url}/ui/audit?since=yesterday")
    assert answer is not None and answer.status == 422
    assert "since" in await page.inner_text("main")

    # The same link a second time, in a fresh browser: refused.
    again = await (await browser.new_context()).new_page()
    await again.goto(link)
    async with again.expect_navigation():
        await again.click("#sign-in")
    assert "used already" in await again.inner_text("main")
    answer = await again.goto(f"{h.url}/ui/")
    assert answer is not None and answer.status == 401

    # Signing out ends the session.
    async with page.expect_navigation():
        await page.click("header button")
    answer = await page.goto(f"{h.url}/ui/")
    assert answer is not None and answer.status == 401


async def test_web_link_only_in_private_and_only_for_approvers(make_quorum: QuorumFactory) -> None:
    h = await make_quorum()
    assert "not an approver" in await web_link(h, CAROL)
    await h.emu.send_text(CHAT, ALICE, "/web")

    async def told_to_go_private() -> bool:
        return any("private chat" in str(m["text"]) for m in await h.bot_messages(CHAT))

    await h.wait_for(told_to_go_private)
    assert not [m for m in await h.emu.messages(CHAT) if "/ui/login" in str(m)]
    link = await web_link(h, ALICE)
    token = link.split("t=", 1)[1]
    payload, mac = token.split(".")
    forged = f"{payload[:-2]}{'A' if payload[-2] != 'A' else 'B'}{payload[-1]}.{mac}"
    for bad in (forged, "", "x" * 600):
        async with h.http.post(f"{h.url}/ui/login", data={"t": bad}) as resp:
            assert resp.status == 401
            assert "not valid" in await resp.text()
    assert not (await sql(h, "SELECT 1 FROM audit_log WHERE event = 'web.signed_in'"))
