"""Votes on approval requests: the vote statement, the ballots of requests, voters' reasons."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from storage import audit
from storage.db import raw
from storage.models import Vote


@dataclass(frozen=True, slots=True)
class VoteRecord:
    id: int
    voter_telegram_id: int
    voter_name: str
    decision: str
    created_at: datetime
    confirmed_at: datetime | None = None  # a step-up approval's confirmation
    # Given after the tap by a ForceReply answer; the vote statement itself never reads it.
    reason: str | None = None


# The vote, its audit row and the request's card refresh are one statement: written only when
# the vote was (a repeated tap writes nothing), never one without the others. The cards are not
# rendered per vote: the refresh is due at once, or one interval after the last render (a storm
# of taps on a card costs one render per interval, and Telegram allows an edit about every 3 s
# per group anyway). Each round trip saved costs the bot ~0.1 ms of CPU and PostgreSQL as much.
# The audit row is written by storage.audit's one INSERT, embedded here.
_VOTE_AUDIT = audit.insert_from(
    """(SELECT 'vote.accepted' AS event, ins.voter_name AS actor,
               ins.voter_telegram_id AS actor_telegram_id, $7::int AS team_id,
               $1::uuid AS approval_id, NULL::bigint AS alert_id, $5::bigint AS chat_id,
               jsonb_build_object('decision', ins.decision, 'message_id', $6::bigint) AS detail
          FROM ins) AS r"""
)
_ADD_VOTE = f"""
    WITH ins AS (
        INSERT INTO votes (request_id, voter_telegram_id, voter_name, decision, chat_id, message_id)
        VALUES ($1, $2, $3, $4, $5, $6)
        ON CONFLICT DO NOTHING
        RETURNING id, voter_telegram_id, voter_name, decision, created_at
    ), audited AS (
        {_VOTE_AUDIT}
    ), scheduled AS (
        UPDATE approval_requests
           SET cards_due_at = coalesce(cards_due_at, greatest(now(),
                   cards_rendered_at + make_interval(secs => $8::float8)))
         WHERE id = $1 AND EXISTS (SELECT 1 FROM ins)
    )
    SELECT id, voter_telegram_id, voter_name, decision, created_at, false AS mine
      FROM votes WHERE request_id = $1
    UNION ALL
    SELECT id, voter_telegram_id, voter_name, decision, created_at, true FROM ins
    ORDER BY id
"""  # noqa: S608 (fixed fragments of our own)


async def add_vote(
    session: AsyncSession,
    request_id: uuid.UUID,
    *,
    team_id: int,
    voter: int,
    name: str,
    decision: str,
    chat_id: int | None,
    message_id: int | None,
    refresh_interval: float,
) -> tuple[bool, list[VoteRecord]]:
    """Insert one vote with its `vote.accepted` audit row and card refresh (a second vote by the
    same voter is a no-op) and read all votes of the request, in one round trip."""
    rows = await (await raw(session)).fetch(
        _ADD_VOTE,
        request_id,
        voter,
        name,
        decision,
        chat_id,
        message_id,
        team_id,
        refresh_interval,
    )
    inserted = False
    votes = []
    for r in rows:
        inserted = inserted or bool(r[5])
        votes.append(VoteRecord(r[0], r[1], r[2], r[3], r[4]))
    return inserted, votes


async def votes_for(
    session: AsyncSession, request_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, list[VoteRecord]]:
    out: dict[uuid.UUID, list[VoteRecord]] = {rid: [] for rid in request_ids}
    if not request_ids:
        return out
    rows = await session.execute(
        select(
            Vote.request_id,
            Vote.id,
            Vote.voter_telegram_id,
            Vote.voter_name,
            Vote.decision,
            Vote.created_at,
            Vote.confirmed_at,
            Vote.reason,
        )
        .where(Vote.request_id.in_(request_ids))
        .order_by(Vote.id)
    )
    for r in rows:
        out[r.request_id].append(
            VoteRecord(
                r.id,
                r.voter_telegram_id,
                r.voter_name,
                r.decision,
                r.created_at,
                r.confirmed_at,
                r.reason,
            )
        )
    return out


async def set_vote_reason(session: AsyncSession, vote_id: int, reason: str) -> bool:
    """Store a voter's reason once, in its own statement after the vote (never part of it)."""
    result = await session.execute(
        update(Vote)
        .where(Vote.id == vote_id, Vote.reason.is_(None))
        .values(reason=reason)
        .returning(Vote.id)
    )
    return result.first() is not None
