"""Vote benchmark: simulated approvers tap approval cards through the emulator over HTTP.

Run: python -m bench.votes [--teams 100] [--approvers 30] [--rate 500] [--seconds 6]
                           [--concurrency 64]

Three processes, so no CPU is shared on one event loop: the Telegram emulator, Quorum (webhook
mode, real PostgreSQL in a fresh database quorum_bench_votes on QUORUM_BENCH_DATABASE_URL,
default the local server, and real Redis 127.0.0.1:6379 db 11) and this driver. Each team has
its own chat and critical requests needing every one of its approvers, so every tap is a
counted vote until the last one decides. Two runs on separate cards: a closed-loop maximum
with --concurrency taps in flight, then open-loop taps at --rate for --seconds (a tap starts
on schedule whether or not earlier ones were answered). Each prints taps/s and p50/p99 of the
emulator-measured latency from tap to answerCallbackQuery. Then the floor: the same SQL
statements and Redis calls a vote makes, run directly with asyncpg at --concurrency, and the
ratio of the two.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import math
import multiprocessing
import os
import random
import statistics
import sys
import time
import uuid
from multiprocessing.connection import Connection
from typing import Any

import aiohttp
import asyncpg
from redis.asyncio import Redis

from bench import fresh_database
from bot.app import Quorum
from bot.emulator import EmulatorClient, TelegramEmulator
from bot.policy import parse_policy
from bot.settings import load_settings
from storage.db import to_sync_dsn

TOKEN = "987654322:" + "C" * 35
DB_NAME = "quorum_bench_votes"
REDIS_URL = "redis://127.0.0.1:6379/11"
FIRST_USER = 700_000
APPROVE = "✅ Approve"


def chat_id(i: int) -> int:
    return -1003000000000 - i


def user_id(team: int, j: int) -> int:
    # Distinct people per team: Telegram (and the emulator) deliver one user's callback
    # queries one after another, so a few people could not tap hundreds of times a second.
    return FIRST_USER + team * 1000 + j


def api_key(i: int) -> str:
    return f"bench-votes-key-{i}"


def make_policy(teams: int, approvers: int) -> dict[str, Any]:
    return {
        "timezone": "UTC",
        "teams": {
            f"team{i}": {
                "chat_ids": [chat_id(i)],
                "approvers": [
                    {"telegram_id": user_id(i, j), "name": f"user{j}"} for j in range(approvers)
                ],
                "api_keys": [
                    {"name": "bench", "sha256": hashlib.sha256(api_key(i).encode()).hexdigest()}
                ],
                "policy": {
                    "critical": {"required_approvals": min(approvers, 50), "reject_threshold": 50}
                },
            }
            for i in range(teams)
        },
    }


def quorum_child(values: dict[str, Any], policy: dict[str, Any], conn: Connection) -> None:
    async def main() -> None:
        app = Quorum(load_settings(**values), parse_policy(policy))
        await app.start(migrate=False)
        conn.send("started")
        await asyncio.to_thread(conn.recv)
        try:
            await asyncio.wait_for(asyncio.shield(app.stop()), 20)
        except TimeoutError:
            # Say what is stuck (a shutdown that hangs is a bug worth seeing).
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    print("stuck task:", task.get_name(), file=sys.stderr)
                    task.print_stack(limit=6, file=sys.stderr)

    asyncio.run(main())
    conn.send("stopped")


def emulator_child(conn: Connection) -> None:
    async def main() -> None:
        emulator = TelegramEmulator(enforce_limits=True)
        conn.send(await emulator.start("127.0.0.1", 0))
        await asyncio.to_thread(conn.recv)
        await emulator.stop()

    asyncio.run(main())
    conn.send("stopped")


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))]


async def create_requests(
    http: aiohttp.ClientSession, base: str, teams: int, label: str
) -> list[str]:
    """One request per team (its card goes to team i's chat)."""
    ids = []
    for i in range(teams):
        async with http.post(
            f"{base}/api/v1/approvals",
            json={
                "action": f"bench {label}",
                "target": f"svc-{i}",
                "risk_level": "critical",
                "requested_by": "bench",
            },
            headers={"Authorization": f"Bearer {api_key(i)}"},
        ) as resp:
            data = await resp.json()
            assert resp.status == 201, data
            ids.append(data["id"])
    return ids


async def card_ids(emu: EmulatorClient, teams: int, request_ids: list[str]) -> list[int]:
    """The message id of each request's card, once the outbox has sent them all."""
    deadline = time.monotonic() + 120
    while True:
        found: list[int] = []
        for i, rid in enumerate(request_ids):
            msgs = await emu.messages(chat_id(i))
            match = [m["message_id"] for m in msgs if rid in str(m.get("text"))]
            if not match:
                break
            found.append(match[0])
        if len(found) == teams:
            return found
        if time.monotonic() > deadline:
            raise SystemExit("cards did not arrive in 120 s")
        await asyncio.sleep(0.2)


class Tally:
    def __init__(self) -> None:
        self.latencies: list[float] = []  # emulator: tap to answerCallbackQuery
        self.client: list[float] = []  # driver: HTTP round trip of the tap call
        self.outcomes: dict[str, int] = {}

    def count(self, key: str) -> None:
        self.outcomes[key] = self.outcomes.get(key, 0) + 1

    def line(self, elapsed: float) -> str:
        lat = self.latencies or [math.nan]
        return (
            f"  {len(self.latencies) / elapsed:.0f} taps/s answered  "
            f"p50 {statistics.median(lat):.1f} ms  p99 {pct(lat, 0.99):.1f} ms  "
            f"max {max(lat):.1f} ms  (driver round trip p99 "
            f"{pct(self.client or [math.nan], 0.99):.1f} ms)  outcomes {self.outcomes}"
        )


async def tap(
    http: aiohttp.ClientSession, emu_url: str, job: tuple[int, int, int], tally: Tally
) -> None:
    chat, message_id, user = job
    url = f"{emu_url}/_emulator/chats/{chat}/messages/{message_id}/tap"
    body = {"from_id": user, "button_text": APPROVE, "wait": 10}
    t0 = time.perf_counter()
    try:
        async with http.post(url, json=body) as resp:
            data = await resp.json()
    except (aiohttp.ClientError, TimeoutError) as exc:
        tally.count(f"error {type(exc).__name__}")
        return
    tally.client.append((time.perf_counter() - t0) * 1000)
    answer = data.get("answer") if isinstance(data, dict) else None
    if resp.status != 200 or not answer:
        tally.count("no answer")
        return
    tally.latencies.append(float(answer["latency_ms"]))
    text = str(answer.get("text") or "")
    tally.count(
        "approved" if "Approved" in text else "recorded" if "recorded" in text else text[:40]
    )


async def run_closed(
    emu_url: str, jobs: list[tuple[int, int, int]], concurrency: int
) -> tuple[float, Tally]:
    """As fast as it goes with `concurrency` taps in flight."""
    queue: asyncio.Queue[tuple[int, int, int]] = asyncio.Queue()
    for job in jobs:
        queue.put_nowait(job)
    tally = Tally()
    connector = aiohttp.TCPConnector(limit=concurrency * 2)
    async with aiohttp.ClientSession(connector=connector) as http:

        async def worker() -> None:
            while True:
                try:
                    job = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                await tap(http, emu_url, job, tally)

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - start
    return elapsed, tally


async def run_open(
    emu_url: str, jobs: list[tuple[int, int, int]], rate: float
) -> tuple[float, float, Tally]:
    """Taps started on a fixed schedule of `rate` per second, answered or not.

    Returns the seconds the schedule took to start every tap (it falls behind only when this
    driver is starved of CPU), the seconds until the last answer, and the tally.
    """
    tally = Tally()
    connector = aiohttp.TCPConnector(limit=0)
    tasks: list[asyncio.Task[None]] = []
    async with aiohttp.ClientSession(connector=connector) as http:
        start = time.perf_counter()
        for i, job in enumerate(jobs):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(tap(http, emu_url, job, tally)))
        issued = time.perf_counter() - start
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - start
    return issued, elapsed, tally


# The statements one counted vote makes (inbound dedupe + the vote transaction + card edit,
# whose pending sync row is upserted in the same statement).
FLOOR_SQL = {
    "inbound": (
        "INSERT INTO inbound_updates (update_id, payload, status, processed_at)"
        " VALUES ($1, $2::jsonb, 'done', now()) ON CONFLICT (update_id) DO NOTHING RETURNING id"
    ),
    "lock": (
        "SELECT r.*, now() AS db_now, (SELECT json_agg(json_build_array(tm2.id, tm2.chat_id)"
        " ORDER BY tm2.id) FROM telegram_messages AS tm2 WHERE tm2.approval_id = r.id) AS cards"
        " FROM telegram_messages m JOIN approval_requests r ON r.id = m.approval_id"
        " WHERE m.chat_id = $1 AND m.message_id = $2 FOR NO KEY UPDATE OF r"
    ),
    "vote": (
        "WITH ins AS (INSERT INTO votes (request_id, voter_telegram_id, voter_name, decision,"
        " chat_id, message_id) VALUES ($1, $2, $3, 'approve', $4, $5) ON CONFLICT DO NOTHING"
        " RETURNING id, voter_telegram_id, voter_name, decision, created_at)"
        " SELECT id, voter_telegram_id, voter_name, decision, created_at, false AS mine"
        " FROM votes WHERE request_id = $1 UNION ALL"
        " SELECT id, voter_telegram_id, voter_name, decision, created_at, true FROM ins ORDER BY id"
    ),
    "audit": (
        "INSERT INTO audit_log (event, actor, actor_telegram_id, team_id, approval_id, chat_id,"
        " detail) VALUES ('vote.accepted', $1, $2, $3, $4, $5, $6::jsonb)"
    ),
    "edit": (
        "WITH m AS (UPDATE telegram_messages SET text = $2, reply_markup = $3::jsonb,"
        " version = version + 1, updated_at = now() WHERE id = $1 RETURNING id, chat_id)"
        " INSERT INTO outbox (method, telegram_message_id, chat_id, priority, kind,"
        " next_attempt_at) SELECT 'sync', m.id, m.chat_id, 10, 'edit', now() FROM m"
        " ON CONFLICT (telegram_message_id) WHERE status = 'pending'"
        " AND telegram_message_id IS NOT NULL"
        " DO UPDATE SET priority = least(outbox.priority, excluded.priority),"
        " next_attempt_at = least(outbox.next_attempt_at, excluded.next_attempt_at)"
        " RETURNING outbox.id"
    ),
}


async def run_floor(
    db_url: str, jobs: list[tuple[int, int, int]], concurrency: int
) -> tuple[float, list[float]]:
    pool = await asyncpg.create_pool(
        to_sync_dsn(db_url), min_size=concurrency, max_size=concurrency
    )
    redis = Redis.from_url(REDIS_URL)
    assert pool is not None
    queue: asyncio.Queue[tuple[int, int, int]] = asyncio.Queue()
    for job in jobs:
        queue.put_nowait(job)
    latencies: list[float] = []
    update_ids = iter(range(10_000_000, 20_000_000))
    payload = json.dumps({"callback_query": {"id": "x", "data": "ap:" + "x" * 40}})
    markup = json.dumps({"inline_keyboard": [[{"text": APPROVE, "callback_data": "x" * 60}]]})

    async def worker() -> None:
        while True:
            try:
                chat, message_id, user = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            t0 = time.perf_counter()
            uid = next(update_ids)
            await redis.exists(f"quorum:update:{uid}")
            async with pool.acquire() as conn, conn.transaction():
                await conn.fetchrow(FLOOR_SQL["inbound"], uid, payload)
                row = await conn.fetchrow(FLOOR_SQL["lock"], chat, message_id)
                assert row is not None
                await conn.fetch(
                    FLOOR_SQL["vote"], row["id"], user, f"user{user}", chat, message_id
                )
                await conn.execute(
                    FLOOR_SQL["audit"],
                    f"user{user}",
                    user,
                    row["team_id"],
                    row["id"],
                    chat,
                    json.dumps({"decision": "approve"}),
                )
                for card_row, _card_chat in json.loads(row["cards"]):
                    await conn.fetchrow(FLOOR_SQL["edit"], card_row, "x" * 600, markup)
            await redis.set(f"quorum:update:{uid}", b"1", ex=60)
            latencies.append((time.perf_counter() - t0) * 1000)

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - start
    await pool.close()
    await redis.aclose()
    return elapsed, latencies


def jobs_for(teams: int, approvers: int, message_ids: list[int]) -> list[tuple[int, int, int]]:
    # Shuffled: concurrent taps come from different people on different cards. (Telegram,
    # and the emulator, deliver one user's callback queries one after another.)
    jobs = [
        (chat_id(i), message_ids[i], user_id(i, j)) for j in range(approvers) for i in range(teams)
    ]
    random.Random(42).shuffle(jobs)
    return jobs


def spawn(target: Any, *args: Any) -> tuple[Any, Connection]:
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=target, args=(*args, child))
    proc.start()
    return proc, parent


async def stop(proc: Any, conn: Connection, name: str) -> None:
    conn.send("stop")
    if not await asyncio.to_thread(conn.poll, 30):
        print(f"  ({name} did not stop within 30 s; terminated)")
        proc.terminate()
    proc.join(10)


async def main(args: argparse.Namespace) -> None:
    server = os.environ.get(
        "QUORUM_BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
    )
    db_url = await fresh_database(server, DB_NAME)
    redis = Redis.from_url(REDIS_URL)
    await redis.flushdb()
    await redis.aclose()
    emu_proc, emu_conn = spawn(emulator_child)
    emu_url = str(await asyncio.to_thread(emu_conn.recv))
    open_taps = int(args.rate * args.seconds)
    # Cards per team for each run: enough for every tap (each approver taps each card once).
    per_team_open = max(1, math.ceil(open_taps / (args.teams * args.approvers)))
    closed_cards = 1
    rate = lat_p99 = math.nan
    try:
        async with EmulatorClient(emu_url) as emu:
            await emu.add_bot(TOKEN, username="quorum_bench_bot", first_name="Quorum")
            for i in range(args.teams):
                members = [user_id(i, j) for j in range(args.approvers)]
                for uid in members:
                    await emu.add_user(uid, f"User{uid}")
                await emu.add_chat(chat_id(i), "supergroup", title=f"team{i}", members=members)
            sock = __import__("socket").socket()
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
            sock.close()
            values = {
                "telegram_token": TOKEN,
                "telegram_api_url": emu_url,
                "telegram_mode": "webhook",
                "webhook_url": f"http://127.0.0.1:{port}/telegram/webhook",
                "webhook_secret": "bench_webhook_secret",
                "token_secret": "bench-token-secret-0123456789abcdef-xyz",
                "database_url": db_url,
                "redis_url": REDIS_URL,
                "http_port": port,
                "log_level": "WARNING",
            }
            policy = make_policy(args.teams, args.approvers)
            proc, conn = spawn(quorum_child, values, policy)
            if await asyncio.to_thread(conn.recv) != "started":
                raise SystemExit("quorum did not start")
            base = f"http://127.0.0.1:{port}"
            try:
                # Every card first (cards and edits share each chat's 20 messages a minute).
                rounds: list[list[str]] = []
                async with aiohttp.ClientSession() as http:
                    for r in range(closed_cards + per_team_open):
                        rounds.append(await create_requests(http, base, args.teams, f"r{r}"))
                cards = [await card_ids(emu, args.teams, ids) for ids in rounds]
                closed_jobs = [
                    j for c in cards[:closed_cards] for j in jobs_for(args.teams, args.approvers, c)
                ]
                open_jobs = [
                    j for c in cards[closed_cards:] for j in jobs_for(args.teams, args.approvers, c)
                ][:open_taps]
                random.Random(7).shuffle(open_jobs)
                print(
                    f"closed loop: {len(closed_jobs)} taps on {args.teams * closed_cards} cards,"
                    f" concurrency {args.concurrency}"
                )
                elapsed, tally = await run_closed(emu_url, closed_jobs, args.concurrency)
                print(tally.line(elapsed))
                rate = len(tally.latencies) / elapsed
                c_p99 = pct(tally.latencies or [math.nan], 0.99)
                print(
                    f"open loop: {len(open_jobs)} taps at {args.rate:.0f}/s by {args.approvers}"
                    f" approvers on {args.teams * per_team_open} cards in {args.teams} chats"
                )
                issued, o_elapsed, o_tally = await run_open(emu_url, open_jobs, args.rate)
                print(
                    f"  offered {len(open_jobs) / issued:.0f} taps/s for {issued:.1f} s;"
                    f" last answer after {o_elapsed:.1f} s"
                )
                print(o_tally.line(o_elapsed))
                lat_p99 = pct(o_tally.latencies or [math.nan], 0.99)
            finally:
                await stop(proc, conn, "quorum")
    finally:
        await stop(emu_proc, emu_conn, "emulator")
    # The floor: the same statements on fresh requests of the same shape, straight to PG.
    floor_ids = await seed_floor(db_url, args.teams, args.approvers)
    f_elapsed, f_lat = await run_floor(
        db_url, jobs_for(args.teams, args.approvers, floor_ids), args.concurrency
    )
    f_rate = len(f_lat) / f_elapsed
    f_p99 = pct(f_lat, 0.99)
    print(
        f"floor (same SQL + Redis calls, asyncpg direct, concurrency {args.concurrency}):"
        f" {f_rate:.0f} votes/s  p50 {statistics.median(f_lat):.1f} ms  p99 {f_p99:.1f} ms"
    )
    print(
        f"ratio: closed-loop throughput {rate / f_rate:.2f} of the floor's,"
        f" closed-loop p99 {c_p99 / f_p99:.1f}x the floor's;"
        f" open-loop p99 at {args.rate:.0f}/s: {lat_p99:.1f} ms"
    )


async def seed_floor(db_url: str, teams: int, approvers: int) -> list[int]:
    """Copies of the tap requests with cards at known message ids (no Telegram involved)."""
    conn = await asyncpg.connect(to_sync_dsn(db_url))
    ids = []
    try:
        for i in range(teams):
            rid = uuid.uuid4()
            team_id = await conn.fetchval("SELECT id FROM teams WHERE name = $1", f"team{i}")
            await conn.execute(
                "INSERT INTO approval_requests (id, team_id, action, target, risk_level,"
                " approval_level, required_approvals, reject_threshold, requested_by, expires_at)"
                " VALUES ($1, $2, 'floor', 'svc', 'critical', 'critical', $3, 50, 'bench',"
                " now() + interval '1 hour')",
                rid,
                team_id,
                min(approvers, 50),
            )
            await conn.execute(
                "INSERT INTO telegram_messages (chat_id, message_id, purpose, approval_id, text)"
                " VALUES ($1, $2, 'approval_card', $3, 'x')",
                chat_id(i),
                900_000 + i,
                rid,
            )
            ids.append(900_000 + i)
    finally:
        await conn.close()
    return ids


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--teams", type=int, default=100)
    parser.add_argument("--approvers", type=int, default=30)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--rate", type=float, default=500.0, help="open-loop taps per second")
    parser.add_argument("--seconds", type=float, default=6.0, help="open-loop duration")
    asyncio.run(main(parser.parse_args()))


if __name__ == "__main__":
    cli()
