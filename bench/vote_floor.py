"""The floor of bench.votes: the SQL of a counted vote run straight on asyncpg, no Quorum."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Sequence

import asyncpg

from bench import floor_pool
from bot.approvals import CARD_REFRESH_SECONDS
from storage import approvals as approvals_sql
from storage import updates as updates_sql
from storage import votes as votes_sql
from storage.db import to_sync_dsn

# The statements one counted vote makes, taken from the modules that run them. Quorum first
# tries the plain vote (one autocommit statement: update row, vote, audit row, card refresh);
# when it writes nothing (the last two votes a request needs, refusals) the vote takes a
# transaction: the update row (dedupe and durable record), the request's lock, and the vote
# with its audit row and card refresh. The card worker renders cards apart from the taps, at
# most once per interval per card, so a render is not part of a vote.
FLOOR_SQL = {
    "plain": votes_sql._PLAIN_VOTE,
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
           AND {approvals_sql.tapped_card("$4", "$5")}
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
        # card message id -> (request, team id), filled by seed_floor
        self.requests: dict[int, tuple[uuid.UUID, int]] = {}
        self.update_ids = iter(range(10_000_000, 20_000_000))
        self.payload = json.dumps({"callback_query": {"id": "x", "data": "ap:" + "x" * 40}})

    async def __aenter__(self) -> Floor:
        self.pool = await floor_pool(self.db_url, self.pool_size)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.pool.close()

    async def vote(self, job: tuple[int, int, int], latencies: list[float]) -> None:
        """Quorum's statements: the plain vote, and the transaction when it wrote nothing."""
        chat, message_id, user = job
        t0 = time.perf_counter()
        uid = next(self.update_ids)
        request_id, team_id = self.requests[message_id]
        async with self.pool.acquire() as conn:
            name = f"user{user}"
            seat = ([team_id], ["critical"], [name], [name])
            plain = await conn.fetchrow(
                FLOOR_SQL["plain"],
                uid,
                self.payload,
                request_id,
                chat,
                message_id,
                user,
                CARD_REFRESH_SECONDS,
                *seat,
            )
            if plain is None:
                await self._transaction(conn, uid, job)
        latencies.append((time.perf_counter() - t0) * 1000)

    async def vote_in_transaction(self, job: tuple[int, int, int], latencies: list[float]) -> None:
        """Every vote in a transaction: the floor before the plain vote."""
        t0 = time.perf_counter()
        async with self.pool.acquire() as conn:
            await self._transaction(conn, next(self.update_ids), job)
        latencies.append((time.perf_counter() - t0) * 1000)

    async def _transaction(
        self, conn: asyncpg.Connection, uid: int, job: tuple[int, int, int]
    ) -> None:
        chat, message_id, user = job
        async with conn.transaction():
            await conn.fetchrow(FLOOR_SQL["inbound"], uid, self.payload)
            row = await conn.fetchrow(
                FLOOR_SQL["lock"], self.requests[message_id][0], chat, message_id
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
                self.requests[message_id][0],
                chat,
                message_id,
                user,
                f"user{user}",
                CARD_REFRESH_SECONDS,
            )
        assert row is not None
        latencies.append((time.perf_counter() - t0) * 1000)

    async def closed(
        self, jobs: list[tuple[int, int, int]], concurrency: int, *, mode: str = "quorum"
    ) -> tuple[float, list[float]]:
        """`mode`: "quorum" (Quorum's statements), "transaction" or "one" (FLOOR_ONE_SQL)."""
        pending = iter(jobs)
        latencies: list[float] = []
        vote = {"quorum": self.vote, "transaction": self.vote_in_transaction}.get(
            mode, self.vote_one
        )

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
    db_url: str,
    chats: Sequence[int],
    approvers: int,
    rounds: int,
    requests: dict[int, tuple[uuid.UUID, int]],
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
                    " requester_key, expires_at) VALUES ($1, $2, 'floor', 'svc', 'critical',"
                    " 'critical', $3, 50, 'bench', 'bench', now() + interval '1 hour')",
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
                requests[message_id] = (rid, team_id)
            out.append(ids)
    finally:
        await conn.close()
    return out
