"""Who may vote, end to end through emulator taps: the requester named only by
`requested_by`, and buttons of cards posted before the token secret was rotated."""

from __future__ import annotations

from tests.e2e.flows import card, create, sql, tap
from tests.support import ALICE, BOB, TOKEN_SECRET, QuorumFactory

NEW_SECRET = "rotated-token-secret-0123456789abcdef-xyz"


async def test_requested_by_an_approvers_name_makes_her_the_requester(
    make_quorum: QuorumFactory,
) -> None:
    h = await make_quorum()
    req = await create(h, requested_by="Alice")  # the policy names her "alice"; no Telegram id
    msg = await card(h, req["id"])
    answer = await tap(h, msg, ALICE)
    assert "cannot vote on their own request" in answer["text"] and answer["show_alert"], answer
    _status, got = await h.api("GET", f"/api/v1/approvals/{req['id']}")
    assert got["status"] == "pending" and got["votes"] == [], got
    rows = await sql(
        h,
        "SELECT detail->>'reason' AS reason, actor_telegram_id FROM audit_log"
        " WHERE event = 'vote.refused' AND approval_id = $1",
        req["id"],
    )
    assert [(r["reason"], r["actor_telegram_id"]) for r in rows] == [("requester", ALICE)]
    # Anyone else's approval still decides it.
    answer = await tap(h, msg, BOB)
    assert "Approved" in answer["text"], answer


async def test_a_card_from_before_the_secret_rotation_still_takes_votes(
    make_quorum: QuorumFactory,
) -> None:
    old = await make_quorum()  # signs buttons with TOKEN_SECRET
    req = await create(old)
    msg = await card(old, req["id"])
    await old.app.stop()
    new = await make_quorum(token_secret=NEW_SECRET, token_previous_secrets=[TOKEN_SECRET])
    answer = await tap(new, msg, ALICE)  # the old card's buttons, tagged with the old secret
    assert "Approved" in answer["text"], answer
    _status, got = await new.api("GET", f"/api/v1/approvals/{req['id']}")
    assert got["status"] == "approved", got
    forged = await sql(new, "SELECT 1 FROM audit_log WHERE event = 'security.forged_button'")
    assert forged == []
    # The token is signed with the new secret and redeems.
    status, data = await new.api("POST", "/api/v1/tokens/redeem", {"token": got["approval_token"]})
    assert status == 200, data
