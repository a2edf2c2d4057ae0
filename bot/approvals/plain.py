"""The plain vote: an approval that cannot decide its request, counted by one statement."""

from __future__ import annotations

import logging

from bot.approvals.outcome import judge
from bot.approvals.voting import (
    CARD_REFRESH_SECONDS,
    VOTE_CODES,
    Tap,
    VoteResult,
    recorded_toast,
    ref_or_none,
)
from bot.outages import storage_outage
from bot.runtime import Runtime
from bot.votes import APPROVE, Ballot, Decision
from storage import votes as vote_repo
from storage.db import autocommit

log = logging.getLogger(__name__)


async def count_plainly(rt: Runtime, update_id: int, body: str, tap: Tap) -> VoteResult | None:
    """Count an approval tap as one autocommit statement (storage.votes.count_plain) with the
    update row, the vote, its audit row and the card refresh, or write nothing and return
    None: the tap is then handled as any other, in a transaction, where its refusal or its
    decision is made. Saves the transaction's round trips and the session on most taps (every
    vote of an N-of-M request but the last two, bench.votes)."""
    seat = rt.seat(tap.user_id)
    request_id = ref_or_none(tap.ref)
    if VOTE_CODES.get(tap.vote) != APPROVE or seat is None or request_id is None:
        return None
    if not rt.signer.check("ap", tap.ref, tap.vote, tap.chat_id, tap.tag):
        return None
    try:
        async with autocommit(rt.engine) as conn:
            counted = await vote_repo.count_plain(
                conn,
                update_id,
                body,
                request_id=request_id,
                chat_id=tap.chat_id,
                message_id=tap.message_id,
                voter=tap.user_id,
                seat=seat,
                refresh_interval=CARD_REFRESH_SECONDS,
            )
    except Exception as exc:
        if storage_outage(exc):
            raise
        # Whatever the statement could not do (an update jsonb refuses), the transaction
        # handles, stores as failed, or refuses.
        log.exception("plain vote failed; handled in a transaction", extra={"update_id": update_id})
        return None
    if counted is None:
        return None
    rt.metrics.votes.labels(APPROVE).inc()
    rt.metrics.votes_plain.inc()
    ballots = [Ballot(voter, decision) for voter, decision in counted.ballots]
    # No step-up at a level the plain vote counts at: nobody's approval awaits confirmation.
    outcome = judge(rt, counted.request, ballots, frozenset(), counted.db_now)
    if outcome.decision is not Decision.PENDING:
        # The statement's conditions should make this impossible; the next vote in a
        # transaction (or expiry) decides it.
        log.error("plain vote left a decided request pending: %s", counted.request.id)
    return VoteResult(counted.request.id, Decision.PENDING, recorded_toast(APPROVE, outcome))
