"""The plain vote: approvals that cannot decide counted by one statement, every other tap in
its transaction (a refusal audited once, the deciding vote deciding once)."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

from tests.e2e.flows import APPROVE, REJECT, card, create, sql, tap
from tests.support import (
    CHAT,
    Harness,
    QuorumFactory,
    button_data,
    metric,
    policy_data,
    post_update,
    tap_update,
)

BASE = 600_000


def team_policy(names: list[str], required: int) -> tuple[dict[str, Any], list[int]]:
    """The test policy whose platform team has these approvers and `required` approvals for
    critical requests (reject threshold as high)."""
    data = policy_data()
    ids = [BASE + i for i in range(len(names))]
    data["teams"]["platform"]["approvers"] = [
        {"telegram_id": uid, "name": name} for uid, name in zip(ids, names, strict=True)
    ]
    data["teams"]["platform"]["policy"] = {
        "critical": {"required_approvals": required, "reject_threshold": required}
    }
    return data, ids


async def started(
    make_quorum: QuorumFactory, names: list[str], required: int
) -> tuple[Harness, list[int]]:
    data, ids = team_policy(names, required)
    h = await make_quorum(policy=data)
    await h.emu.add_chat(CHAT, "supergroup", title="platform", members=ids)
    return h, ids


def plain_votes(h: Harness) -> float:
    value = metric(h, "quorum_votes_plain_total")
    assert value is not None
    return value


async def tally(h: Harness, request_id: str) -> dict[str, Any]:
    rows = await sql(
        h,
        "SELECT r.status, r.votes_cast,"
        " (SELECT count(*) FROM votes v WHERE v.request_id = r.id) AS votes,"
        " (SELECT count(*) FROM audit_log a WHERE a.approval_id = r.id"
        "   AND a.event = 'vote.accepted') AS accepted,"
        " (SELECT count(*) FROM audit_log a WHERE a.approval_id = r.id"
        "   AND a.event = 'approval.approved') AS decisions,"
        " (SELECT count(*) FROM approval_tokens t WHERE t.request_id = r.id) AS tokens,"
        " (SELECT count(*) FROM inbound_updates u"
        "   WHERE u.payload ? 'callback_query') AS taps_stored"
        " FROM approval_requests r WHERE r.id = $1",
        uuid.UUID(request_id),
    )
    return dict(rows[0])


async def test_approvals_that_cannot_decide_are_plain_and_the_deciding_one_decides(
    make_quorum: QuorumFactory,
) -> None:
    h, ids = await started(make_quorum, [f"approver{i}" for i in range(5)], required=5)
    req = await create(h, risk_level="critical")
    msg = await card(h, req["id"])
    before = plain_votes(h)
    toasts = [(await tap(h, msg, uid))["text"] for uid in ids[:3]]
    # Three below the stored five can never approve it, whatever the rule: counted plainly.
    assert toasts == [f"✅ Approval recorded ({n}/5 approvals)." for n in (1, 2, 3)]
    assert plain_votes(h) == before + 3
    assert (await tally(h, req["id"]))["votes_cast"] == 3
    fourth = await tap(h, msg, ids[3])
    assert fourth["text"] == "✅ Approval recorded (4/5 approvals)."
    fifth = await tap(h, msg, ids[4])
    assert "Approved" in fifth["text"]
    assert plain_votes(h) == before + 3
    assert await tally(h, req["id"]) == {
        "status": "approved",
        "votes_cast": 5,
        "votes": 5,
        "accepted": 5,
        "decisions": 1,
        "tokens": 1,
        "taps_stored": 5,
    }


async def test_concurrent_taps_count_each_approver_once_and_decide_once(
    make_quorum: QuorumFactory,
) -> None:
    h, ids = await started(make_quorum, [f"approver{i}" for i in range(30)], required=30)
    req = await create(h, risk_level="critical")
    msg = await card(h, req["id"])
    before = plain_votes(h)

    async def one(uid: int) -> str:
        res = await h.emu.tap(CHAT, msg["message_id"], uid, button_text=APPROVE, wait=30)
        answer: dict[str, Any] = res.get("answer") or {}
        return str(answer.get("text") or "")

    # Every approver taps twice at once: each counts once, the 30th vote decides.
    texts = await asyncio.gather(*(one(uid) for uid in ids + ids))
    assert sum("recorded" in t for t in texts) == 29, texts
    assert sum("Approved:" in t for t in texts) == 1, texts
    refused = [t for t in texts if "recorded" not in t and "Approved:" not in t]
    assert len(refused) == 30 and all("already" in t for t in refused), refused
    # The row lock orders the plain votes: the first 28 (two below the 30 required).
    assert plain_votes(h) == before + 28
    assert await tally(h, req["id"]) == {
        "status": "approved",
        "votes_cast": 30,
        "votes": 30,
        "accepted": 30,
        "decisions": 1,
        "tokens": 1,
        "taps_stored": 60,
    }


@pytest.mark.parametrize(
    ("case", "audit"),
    [
        ("not_approver", "vote.refused"),
        ("requester_by_id", "vote.refused"),
        ("requester_by_name", "vote.refused"),
        ("already_voted", "vote.refused"),
        ("forged", "security.forged_button"),
    ],
)
async def test_a_refused_tap_writes_nothing_plainly_and_is_refused_once(
    make_quorum: QuorumFactory, case: str, audit: str
) -> None:
    # "Straße" and " STRASSE " are one name to Python's casefold, not to SQL's lower().
    names = ["Straße", "bob", "carol", "dave", "erin", "frank"]
    h, ids = await started(make_quorum, names, required=5)
    requester: dict[str, Any] = {}
    if case == "requester_by_id":
        requester = {"requested_by": "someone", "requested_by_telegram_id": ids[0]}
    elif case == "requester_by_name":
        requester = {"requested_by": " STRASSE "}
    req = await create(h, risk_level="critical", **requester)
    msg = await card(h, req["id"])
    voter, data = ids[0], button_data(msg, APPROVE)
    if case == "not_approver":
        voter = BASE + 99
    elif case == "already_voted":
        await tap(h, msg, voter)
    elif case == "forged":
        data = data[:-1] + ("A" if data[-1] != "A" else "B")
    counted = await tally(h, req["id"])
    before = plain_votes(h)
    status, answer = await post_update(h, tap_update(88_000_001, msg, voter, data))
    assert status == 200 and answer["show_alert"] is True, answer
    assert plain_votes(h) == before
    after = await tally(h, req["id"])
    assert after == {**counted, "taps_stored": counted["taps_stored"] + 1}
    rows = await sql(
        h,
        "SELECT count(*) AS n FROM audit_log WHERE event = $1 AND actor_telegram_id = $2",
        audit,
        voter,
    )
    assert rows[0]["n"] == 1


async def test_a_redelivered_plain_vote_counts_once(make_quorum: QuorumFactory) -> None:
    h, ids = await started(make_quorum, [f"approver{i}" for i in range(5)], required=5)
    req = await create(h, risk_level="critical")
    msg = await card(h, req["id"])
    update = tap_update(77_000_001, msg, ids[0], button_data(msg, APPROVE))
    before = plain_votes(h)
    first, second = await post_update(h, update), await post_update(h, update)
    assert first[0] == 200 and first[1]["method"] == "answerCallbackQuery", first
    assert "recorded (1/5" in first[1]["text"]
    assert second == (200, {"ok": True})  # a duplicate: nothing to answer
    assert plain_votes(h) == before + 1
    assert (await tally(h, req["id"]))["votes"] == 1


@pytest.mark.parametrize("case", ["rejection", "incident", "older_request"])
async def test_other_votes_take_the_transaction(make_quorum: QuorumFactory, case: str) -> None:
    h, ids = await started(make_quorum, [f"approver{i}" for i in range(5)], required=5)
    extra = {"incident_id": "INC-1"} if case == "incident" else {}
    req = await create(h, risk_level="critical", **extra)
    msg = await card(h, req["id"])
    if case == "older_request":
        # A request from before migration 0012 has no requester key.
        await sql(
            h,
            "UPDATE approval_requests SET requester_key = NULL WHERE id = $1",
            uuid.UUID(req["id"]),
        )
    if case == "rejection":
        await tap(h, msg, ids[1], REJECT)
    before = plain_votes(h)
    answer = await tap(h, msg, ids[0])
    assert "Approval recorded" in answer["text"], answer
    assert plain_votes(h) == before
    counted = await tally(h, req["id"])
    assert counted["votes"] == counted["votes_cast"] == (2 if case == "rejection" else 1)
