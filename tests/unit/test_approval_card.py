"""The approval card read at 3 a.m.: ids to copy, times, who is left to vote, readable detail."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from bot.approvals import render_card
from bot.policy import Approver, Rule
from bot.rendering import MAX_TEXT, visible_length
from bot.votes import Ballot, Outcome, tally
from storage.approvals import RequestRecord
from storage.votes import VoteRecord

UTCZ = ZoneInfo("UTC")
CREATED = datetime(2026, 1, 1, 9, 12, tzinfo=UTC)
RID = uuid.UUID("0b5f1c2e-3d4a-4b6c-8d9e-0f1a2b3c4d5e")
ALICE, BOB, DAVE, REQUESTER = 1, 2, 4, 9
APPROVERS = {
    ALICE: Approver(ALICE, "alice", frozenset({"sre"})),
    BOB: Approver(BOB, "bob", frozenset({"lead"})),
    DAVE: Approver(DAVE, "dave", frozenset()),
    REQUESTER: Approver(REQUESTER, "rita", frozenset()),
}


def request(**over: Any) -> RequestRecord:
    base = RequestRecord(
        id=RID,
        team_id=1,
        action="restart deployment",
        target="prod/api",
        description=None,
        risk_level="high",
        approval_level="critical",
        required_approvals=2,
        reject_threshold=1,
        status="pending",
        requested_by="rita",
        requester_telegram_id=REQUESTER,
        fingerprint=None,
        hit_count=1,
        last_seen_at=CREATED,
        incident_id=None,
        blast_radius=None,
        dry_run_checks=None,
        metadata=None,
        idempotency_key=None,
        body_sha256=None,
        callback_url=None,
        decided_by=None,
        escalated_at=None,
        result_success=None,
        result_detail=None,
        result_at=None,
        created_at=CREATED,
        updated_at=CREATED,
        expires_at=CREATED + timedelta(hours=1),
        decided_at=None,
    )
    return dataclasses.replace(base, **over)


def vote(who: int, name: str, decision: str = "approve") -> VoteRecord:
    return VoteRecord(who, who, name, decision, CREATED + timedelta(minutes=3))


def outcome_for(req: RequestRecord, votes: list[VoteRecord], rule: Rule | None = None) -> Outcome:
    rule = rule or Rule(2, 1, 3600, None)
    ballots = [Ballot(v.voter_telegram_id, v.decision) for v in votes]
    return tally(req, rule, APPROVERS, ballots, CREATED + timedelta(minutes=5))


def card(req: RequestRecord, votes: Sequence[VoteRecord] = (), **kw: Any) -> str:
    return render_card(req, votes, outcome_for(req, list(votes)), UTCZ, **kw)


def test_the_id_is_code_to_tap_and_copy() -> None:
    html = card(request())
    assert f"<code>{RID}</code>" in html
    assert "<i>id" not in html


def test_created_and_expiry_times_without_a_stale_countdown() -> None:
    html = card(request())
    assert (
        "<b>Created</b> 2026-01-01 09:12 UTC · <b>expires</b> 2026-01-01 10:12 UTC"
        " (1h 0m after creation)"
    ) in html
    closed = card(request(status="expired"))
    assert "<b>Created</b> 2026-01-01 09:12 UTC" in closed and "expires" not in closed


def test_waiting_for_names_eligible_approvers_who_have_not_voted() -> None:
    req = request()
    votes = [vote(ALICE, "alice"), vote(REQUESTER, "rita")]
    out = outcome_for(req, votes)
    assert out.waiting == (BOB, DAVE)  # the requester is never waited for
    html = render_card(req, votes, out, UTCZ, waiting=["bob", "dave"])
    assert "<b>Waiting for:</b> bob, dave" in html
    # A closed card waits for nobody.
    done = render_card(request(status="approved"), votes, out, UTCZ, waiting=["bob"])
    assert "Waiting for" not in done


def test_waiting_for_narrows_to_the_missing_role() -> None:
    req = request()
    rule = Rule(2, 1, 3600, None, frozenset({"lead"}))
    out = outcome_for(req, [vote(ALICE, "alice"), vote(DAVE, "dave")], rule)
    assert out.missing_role and out.waiting == (BOB,)
    before = outcome_for(req, [vote(ALICE, "alice")], rule)
    assert not before.missing_role and before.waiting == (BOB, DAVE)


def test_waiting_names_are_escaped_and_capped() -> None:
    names = [f"<b>n{i}</b>" for i in range(13)]
    html = render_card(request(), [], outcome_for(request(), []), UTCZ, waiting=names)
    assert "&lt;b&gt;n0&lt;/b&gt;" in html and "<b>n0</b>" not in html
    assert "n9" in html and "n10" not in html and "+3 more" in html


def test_blast_radius_and_metadata_as_key_value_lines() -> None:
    req = request(
        blast_radius={"pods": 12, "regions": ["eu", "us"], "note": "<script>"},
        metadata={f"k{i}": i for i in range(12)} | {"ticket": "OPS-1234"},
    )
    html = card(req)
    lines = html.split("\n")
    assert "<b>Blast radius:</b>" in lines
    assert "  pods: 12" in lines
    assert '  regions: ["eu", "us"]' in lines
    assert "  note: &lt;script&gt;" in lines
    assert "<b>Metadata:</b>" in lines
    assert "  k0: 0" in lines and "  k9: 9" in lines and "  k10: 10" not in lines
    assert "  … +3 more" in lines  # k10, k11 and the ticket


def test_metadata_ticket_shown() -> None:
    assert "  ticket: OPS-1234" in card(request(metadata={"ticket": "OPS-1234"})).split("\n")


def test_dry_run_checks_with_a_verdict_get_a_tick_or_a_cross() -> None:
    checks: list[Any] = [
        {"name": "kubectl diff", "ok": True},
        {"name": "canary <eu>", "passed": False, "detail": "p99 up 40%"},
        "terraform plan: 0 to destroy",
        {"replicas": 3},
        42,
    ]
    lines = card(request(dry_run_checks=checks)).split("\n")
    i = lines.index("<b>Dry run:</b>")
    assert lines[i + 1 : i + 6] == [
        "  ✓ kubectl diff",
        "  ✗ canary &lt;eu&gt;: p99 up 40%",
        "  terraform plan: 0 to destroy",
        "  replicas: 3",
        "  42",
    ]


def test_huge_detail_keeps_the_card_within_telegram_limits() -> None:
    big = "<b>x</b> & " * 1000
    req = request(
        action=big,
        target=big,
        description=big,
        requested_by=big,
        blast_radius={f"{big}{i}": big for i in range(20)},
        metadata={f"m{i}": {"nested": big} for i in range(20)},
        dry_run_checks=[{"name": big, "ok": True, "detail": big}] * 20,
    )
    votes = [vote(100 + i, big) for i in range(30)]
    html = render_card(req, votes, outcome_for(req, votes), UTCZ, waiting=[big] * 30)
    assert visible_length(html) <= MAX_TEXT
    assert "<b>x</b>" not in html  # escaped everywhere
    assert f"<code>{RID}</code>" in html


def test_cancelled_by_an_api_key_names_the_key() -> None:
    req = request(status="cancelled")
    assert "🚫 <b>CANCELLED</b> by ci (API key)" in card(req, closed_by="api:ci")
    assert "CANCELLED</b> by the requester" in card(req, closed_by="rita")
    assert "🚫 <b>CANCELLED</b> · " in card(req)  # no actor known: no claim about who
    assert "by &lt;b&gt;" in card(req, closed_by="api:<b>")


def test_vote_overflow_is_pluralised() -> None:
    votes = [vote(100 + i, f"v{i}") for i in range(16)]
    html = card(request(), votes)
    assert "… +1 more vote" in html and "more votes" not in html
    votes.append(vote(200, "w"))
    assert "… +2 more votes" in card(request(), votes)


def test_reasons_are_on_the_card_escaped() -> None:
    req = request(reason="OPS-7 <db> & co", status="rejected")
    bob = dataclasses.replace(vote(BOB, "bob", "reject"), reason="wrong <cluster>")
    html = card(req, [bob, vote(DAVE, "dave", "reject")], awaiting_reason={DAVE})
    assert "<b>Reason:</b> OPS-7 &lt;db&gt; &amp; co" in html
    assert "❌ bob: wrong &lt;cluster&gt; · " in html
    assert "❌ dave (reason pending) · " in html
