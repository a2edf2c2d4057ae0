"""The floor of bench.votes: the SQL of a counted vote run straight on asyncpg, no Quorum."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Sequence

import asyncpg

from bot.approvals import CARD_REFRESH_SECONDS
from storage import approvals as approvals_sql
from storage import updates as updates_sql
from storage import votes as votes_sql
from storage.db import to_sync_dsn

# The statements one counted vote makes, taken from the modules that run them: the update row
# (dedupe and durable record), the request's lock, and the vote with its audit row and the
# request's card refresh (the card worker renders cards apart from the taps, at most once a
# second per card, so a render is not part of a vote).
FLOOR_SQL = {
    "inbound": updates_sql._STORE_DONE,
    "lock": approvals_sql._LOCK_FOR_VOTE,
    "vote": votes_sql._ADD_VOTE,
}


# The lower floor: the best single autocommit statement a counted vote could be. It stores the
# update, checks the request (pending, live, carded in the chat, the tapped message none of
# anything else's), inserts the vote and its audit row, schedules the card refresh and returns
# the request's tally, in one round trip and no explicit transaction. Its tally counts the
# votes of its snapshot (+ this one); a product version would keep the tally on the request
# row, updated with UPDATE ... RETURNING so that concurrent votes serialise on the row.
FLOOR_ONE_SQL = f"""
    WITH upd AS (
        {updates_sql._STORE_DONE.replace("$1", "$1::bigint")}
    ), req AS (
        SELECT r.id, r.team_id FROM approval_requests r
         WHERE r.id = $3 AND r.status = 'pending' AND r.expires_at > now()
           AND EXISTS (SELECT 1 FROM upd)
           AND EXISTS (SELECT 1 FROM telegram_messages tm
                        WHERE tm.approval_id = r.id AND tm.chat_id = $4)
           AND NOT EXISTS (SELECT 1 FROM telegram_messages tm
                            WHERE tm.chat_id = $4 AND tm.message_id = $5
                              AND tm.approval_id IS DISTINCT FROM r.id)
    ), ins AS (
        INSERT INTO votes (request_id, voter_telegram_id, voter_name, decision, chat_id,
                           message_id)
        SELECT id, $6, $7, 'approve', $4, $5 FROM req
        ON CONFLICT DO NOTHING
        RETURNING request_id, voter_telegram_id, voter_name, decision
    ), audited AS (
        INSERT INTO audit_log (event, actor, actor_telegram_id, team_id, approval_id, chat_id,
                               detail)
        SELECT 'vote.accepted', ins.voter_name, ins.voter_telegram_id, req.team_id, req.id,
               $4::bigint, jsonb_build_object('decision', ins.decision, 'message_id', $5::bigint)
          FROM ins JOIN req ON req.id = ins.request_id
    )
    UPDATE approval_requests r
       SET cards_due_at = coalesce(r.cards_due_at, greatest(now(),
               r.cards_rendered_at + make_interval(secs => $8::float8)))
      FROM ins WHERE r.id = ins.request_id
    RETURNING r.required_approvals,
              (SELECT count(*) FROM votes v WHERE v.request_id = r.id) + 1 AS approvals
"""  # noqa: S608 (fixed fragments of our own)


class Floor:
    """The statements of one counted vote, run straight on asyncpg (a tap makes no Redis call)."""

    def __init__(self, db_url: str, pool_size: int) -> None:
        self.db_url, self.pool_size = db_url, pool_size
        self.requests: dict[int, uuid.UUID] = {}  # card message id -> request (seed_floor)
        self.update_ids = iter(range(10_000_000, 20_000_000))
        self.payload = json.dumps({"callback_query": {"id": "x", "data": "ap:" + "x" * 40}})

    async def __aenter__(self) -> Floor:
        pool = await asyncpg.create_pool(
            to_sync_dsn(self.db_url), min_size=self.pool_size, max_size=self.pool_size
        )
        assert pool is not None
        self.pool = pool
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.pool.close()

    async def vote(self, job: tuple[int, int, int], latencies: list[float]) -> None:
        chat, message_id, user = job
        t0 = time.perf_counter()
        uid = next(self.update_ids)
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.fetchrow(FLOOR_SQL["inbound"], uid, self.payload)
            row = await conn.fetchrow(
                FLOOR_SQL["lock"], self.requests[message_id], chat, message_id
            )
            assert row is not None
            await conn.fetch(
                FLOOR_SQL["vote"],
                row["id"],
                user,
                f"user{user}",
                "approve",
                chat,
                message_id,
                row["team_id"],
                CARD_REFRESH_SECONDS,
            )
        latencies.append((time.perf_counter() - t0) * 1000)

    async def vote_one(self, job: tuple[int, int, int], latencies: list[float]) -> None:
        """The same vote as one statement (FLOOR_ONE_SQL)."""
        chat, message_id, user = job
        t0 = time.perf_counter()
        uid = next(self.update_ids)
        async with self.pool.acquire() as conn:
            row = await conn.fetchrow(
                FLOOR_ONE_SQL,
                uid,
                self.payload,
                self.requests[message_id],
                chat,
                message_id,
                user,
                f"user{user}",
                CARD_REFRESH_SECONDS,
            )
        assert row is not None
        latencies.append((time.perf_counter() - t0) * 1000)

    async def closed(
        self, jobs: list[tuple[int, int, int]], concurrency: int, *, one: bool = False
    ) -> tuple[float, list[float]]:
        pending = iter(jobs)
        latencies: list[float] = []
        vote = self.vote_one if one else self.vote

        async def worker() -> None:
            for job in pending:
                await vote(job, latencies)

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return time.perf_counter() - start, latencies

    async def open(self, jobs: list[tuple[int, int, int]], rate: float) -> list[float]:
        latencies: list[float] = []
        tasks = []
        start = time.perf_counter()
        for i, job in enumerate(jobs):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(self.vote(job, latencies)))
        await asyncio.gather(*tasks)
        return latencies


async def seed_floor(
    db_url: str, chats: Sequence[int], approvers: int, rounds: int, requests: dict[int, uuid.UUID]
) -> list[list[int]]:
    """Copies of the tap requests with cards at known message ids (no Telegram involved):
    `rounds` cards per team (team i's chat is chats[i]), as message ids per round; `requests`
    maps each to its request."""
    conn = await asyncpg.connect(to_sync_dsn(db_url))
    out: list[list[int]] = []
    try:
        for r in range(rounds):
            ids = []
            for i, chat in enumerate(chats):
                rid = uuid.uuid4()
                team_id = await conn.fetchval("SELECT id FROM teams WHERE name = $1", f"team{i}")
                await conn.execute(
                    "INSERT INTO approval_requests (id, team_id, action, target, risk_level,"
                    " approval_level, required_approvals, reject_threshold, requested_by,"
                    " expires_at) VALUES ($1, $2, 'floor', 'svc', 'critical', 'critical', $3, 50,"
                    " 'bench', now() + interval '1 hour')",
                    rid,
                    team_id,
                    min(approvers, 50),
                )
                message_id = 900_000 + r * 1000 + i
                await conn.execute(
                    "INSERT INTO telegram_messages (chat_id, message_id, purpose, approval_id,"
                    " text) VALUES ($1, $2, 'approval_card', $3, 'x')",
                    chat,
                    message_id,
                    rid,
                )
                ids.append(message_id)
                requests[message_id] = rid
            out.append(ids)
    finally:
        await conn.close()
    return out
