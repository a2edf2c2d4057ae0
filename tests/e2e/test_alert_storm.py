"""Storm mode through the emulator (Telegram's limits on): a chat whose outbox is over budget
gathers new groups into one digest, approval cards still go first, resolves are never lost,
and the digest is finalised once the chat is quiet (a short calm window here)."""

from __future__ import annotations

from typing import Any

import asyncpg

from tests.e2e import flows
from tests.support import (
    AM_PATH,
    CHAT,
    Harness,
    QuorumFactory,
    am_alert,
    am_body,
    cards,
    db_rows,
    digests,
)

NAMES = [f"Storm{i:02d}" for i in range(12)]


def alert(name: str, status: str = "firing") -> dict[str, Any]:
    labels = {"alertname": name, "severity": "critical", "instance": "db-1:9100"}
    return am_alert(name, status=status, fingerprint=f"{name:0>16}", labels=labels)


async def storm(h: Harness, names: list[str], status: str = "firing") -> None:
    for name in names:  # one Alertmanager group each: one POST each
        code, _ = await h.api("POST", AM_PATH, am_body(alert(name, status)))
        assert code == 200


async def stormy(make_quorum: QuorumFactory, calm: float) -> Harness:
    # Storm mode once more than one message waits (3 s of a group's budget > 2 s).
    return await make_quorum(storm_backlog_seconds=2.0, storm_calm_seconds=calm)


def naming(msgs: list[dict[str, Any]], name: str) -> list[str]:
    return [str(m["text"]) for m in msgs if name in str(m["text"])]


def shown_resolved(text: str, name: str) -> bool:
    if text.startswith("🌪"):
        return all(line.startswith("✅") for line in text.splitlines() if name in line)
    return "RESOLVED" in text.splitlines()[0]


async def test_storm_turns_into_a_digest_and_back(make_quorum: QuorumFactory) -> None:
    h = await stormy(make_quorum, calm=2.0)
    await storm(h, NAMES)

    async def all_visible() -> list[dict[str, Any]] | None:
        msgs = await h.bot_messages()
        return msgs if all(naming(msgs, n) for n in NAMES) else None

    msgs = await h.wait_for(all_visible, timeout=15)
    (digest,) = digests(msgs)
    assert "🌪 <b>Storm</b>" in digest["text"] or digest["text"].startswith("🌪 Storm")
    # Fewer messages than groups: the storm went into the digest.
    assert len(cards(msgs)) + 1 < len(NAMES)

    # Every resolve shows, in a card or the digest; one group stays firing.
    await storm(h, NAMES[:-1], status="resolved")

    async def resolved_shown() -> bool:
        msgs = await h.bot_messages()
        return all(
            all(shown_resolved(t, n) for t in naming(msgs, n)) and naming(msgs, n)
            for n in NAMES[:-1]
        )

    await h.wait_for(resolved_shown, timeout=20)

    # Quiet again: the digest is finalised and the group still firing gets its own card.
    async def over() -> list[dict[str, Any]] | None:
        msgs = await h.bot_messages()
        done = [m for m in digests(msgs) if "Storm over" in str(m["text"])]
        own = [m for m in cards(msgs) if NAMES[-1] in str(m["text"])]
        return done if done and own else None

    (final,) = await h.wait_for(over, timeout=30)
    assert "resolved, 1 still firing" in final["text"]  # the others had cards of their own
    hits = await db_rows(h, "SELECT sum(hit_count) AS n FROM alerts")
    assert hits[0]["n"] == len(NAMES)
    assert (await h.emu.stats())["too_many_requests_total"] == 0


async def test_approval_card_goes_first_mid_storm(make_quorum: QuorumFactory) -> None:
    h = await stormy(make_quorum, calm=60.0)
    await storm(h, NAMES)

    async def backlog() -> bool:
        await storm(h, NAMES)  # repeats keep count refreshes queued
        rows = await db_rows(
            h,
            "SELECT count(*) AS n FROM outbox WHERE status IN ('pending', 'sending')"
            " AND chat_id = $1 AND priority >= 18",
            CHAT,
        )
        return bool(digests(await h.bot_messages())) and rows[0]["n"] >= 2

    await h.wait_for(backlog, timeout=20)
    created = await flows.create(h, risk_level="low")
    await flows.card(h, created["id"])  # shown within its deadline despite the backlog

    async def sent() -> list[asyncpg.Record] | None:
        # The card is in the chat before the sender marks its outbox row done.
        rows = await db_rows(
            h,
            "SELECT o.created_at, o.done_at, o.status, m.approval_id FROM outbox o"
            " JOIN telegram_messages m ON m.id = o.telegram_message_id WHERE o.chat_id = $1",
            CHAT,
        )
        (card,) = [r for r in rows if str(r["approval_id"]) == created["id"]]
        return rows if card["status"] == "done" else None

    rows = await h.wait_for(sent, timeout=10)
    (mine,) = [r for r in rows if str(r["approval_id"]) == created["id"]]
    overtaken = [
        r
        for r in rows
        if r["approval_id"] is None
        and r["created_at"] < mine["created_at"]
        and (r["status"] != "done" or r["done_at"] > mine["done_at"])
    ]
    assert mine["status"] == "done" and overtaken
