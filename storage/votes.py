"""Votes on approval requests: the vote statement, the ballots of requests, voters' reasons."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, fields
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from storage import audit
from storage.approvals import tapped_card
from storage.db import Raw, raw
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
           , votes_cast = votes_cast + 1
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


@dataclass(frozen=True, slots=True)
class Seat:
    """Where a voter's approval may be counted by the plain vote, as parallel arrays: the
    team, the risk level (one without step-up), the voter's name there and its name key."""

    team_ids: list[int]
    levels: list[str]
    names: list[str]
    keys: list[str]


@dataclass(frozen=True, slots=True)
class PlainRequest:
    """What judging a plain vote's request needs of it (bot.rules.Asked, its team and trust):
    read back from the statement instead of the whole request, whose columns (JSON among
    them) cost more to decode than the rest of the statement's answer."""

    id: uuid.UUID
    team_id: int
    action: str
    target: str
    risk_level: str
    trust_score: int
    required_approvals: int
    reject_threshold: int
    requester_telegram_id: int | None
    requested_by: str
    expires_at: datetime


_PLAIN_COLUMNS = tuple(f.name for f in fields(PlainRequest))
_PLAIN_REQUEST = ", ".join(f"r.{name}" for name in _PLAIN_COLUMNS)


@dataclass(frozen=True, slots=True)
class PlainVote:
    """A vote the plain statement counted: its request as the statement saw it, the
    database's clock, and the request's ballots as (voter, decision), this one last."""

    request: PlainRequest
    db_now: datetime
    ballots: list[tuple[int, str]]


_PLAIN_AUDIT = audit.insert_from(
    """(SELECT 'vote.accepted' AS event, ins.voter_name AS actor,
               ins.voter_telegram_id AS actor_telegram_id, req.team_id, req.id AS approval_id,
               NULL::bigint AS alert_id, $4::bigint AS chat_id,
               jsonb_build_object('decision', ins.decision, 'message_id', $5::bigint) AS detail
          FROM ins JOIN req ON req.id = ins.request_id) AS r"""
)
# The plain vote: an approval that cannot decide its request, counted by one autocommit
# statement, or nothing written at all (the caller then handles the tap as any other, in a
# transaction: its refusal must not find the update already stored). It counts only when:
# the request is pending, live, not an incident's, carded in the chat and the tapped message
# none of anything else's (as _LOCK_FOR_VOTE); the voter sits at its team and risk level
# (Seat: an approver there, no step-up) and is not its requester (by id, or by the name key
# the request was stored with); no one rejected it; and its tally, every vote inserted, is
# at least two below the approvals it was stored with, so that under any current rule
# (bot.votes.tally: at least one fewer than stored, by trust) this vote cannot approve it.
# The row lock (FOR NO KEY UPDATE, re-checked on the newest row version after a wait) orders
# it after any concurrent vote, which bumped the tally; the update row and the vote are
# written together (a repeated delivery finds its vote and writes nothing).
_PLAIN_VOTE = f"""
    WITH req AS (
        SELECT {_PLAIN_REQUEST}, s.name AS seat_name
          FROM approval_requests AS r
          JOIN unnest($8::bigint[], $9::text[], $10::text[], $11::text[]) AS s(team_id, level,
               name, key) ON s.team_id = r.team_id AND s.level = r.risk_level
         WHERE r.id = $3 AND r.status = 'pending' AND r.expires_at > now()
           AND r.incident_id IS NULL AND r.votes_cast + 3 <= r.required_approvals
           AND r.requester_key <> s.key AND r.requester_telegram_id IS DISTINCT FROM $6
           AND NOT EXISTS (SELECT 1 FROM votes AS v
                            WHERE v.request_id = r.id AND v.decision = 'reject')
           AND NOT EXISTS (SELECT 1 FROM inbound_updates AS u WHERE u.update_id = $1)
           AND {tapped_card("$4", "$5")}
           FOR NO KEY UPDATE OF r
    ), ins AS (
        INSERT INTO votes (request_id, voter_telegram_id, voter_name, decision, chat_id, message_id)
        SELECT id, $6, seat_name, 'approve', $4, $5 FROM req
        ON CONFLICT DO NOTHING
        RETURNING id, request_id, voter_telegram_id, voter_name, decision, created_at
    ), stored AS (
        INSERT INTO inbound_updates (update_id, payload, status, processed_at)
        SELECT $1, $2::jsonb, 'done', now() FROM ins
        ON CONFLICT (update_id) DO NOTHING
    ), audited AS (
        {_PLAIN_AUDIT}
    ), counted AS (
        UPDATE approval_requests
           SET votes_cast = votes_cast + 1, cards_due_at = coalesce(cards_due_at,
               greatest(now(), cards_rendered_at + make_interval(secs => $7::float8)))
          FROM ins WHERE approval_requests.id = ins.request_id
    )
    SELECT {_PLAIN_REQUEST}, now() AS db_now, v.voters, v.decisions
      FROM req AS r, ins, LATERAL (
           SELECT array_agg(b.voter_telegram_id ORDER BY b.id) AS voters,
                  array_agg(b.decision ORDER BY b.id) AS decisions
             FROM (SELECT id, voter_telegram_id, decision
                     FROM votes WHERE request_id = ins.request_id
                   UNION ALL
                   SELECT ins.id, ins.voter_telegram_id, ins.decision) AS b) AS v
"""  # noqa: S608 (fixed fragments of our own)


async def count_plain(
    conn: Raw,
    update_id: int,
    body: str,
    *,
    request_id: uuid.UUID,
    chat_id: int,
    message_id: int,
    voter: int,
    seat: Seat,
    refresh_interval: float,
) -> PlainVote | None:
    """The plain vote (_PLAIN_VOTE) on an autocommit connection; None when it wrote nothing."""
    row = await conn.fetchrow(
        _PLAIN_VOTE,
        update_id,
        body,
        request_id,
        chat_id,
        message_id,
        voter,
        refresh_interval,
        seat.team_ids,
        seat.levels,
        seat.names,
        seat.keys,
    )
    if row is None:
        return None
    ballots = list(zip(row["voters"], row["decisions"], strict=True))
    return PlainVote(PlainRequest(*row[: len(_PLAIN_COLUMNS)]), row["db_now"], ballots)


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
