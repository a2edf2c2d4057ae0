"""Vote benchmark: simulated approvers tap approval cards through the emulator over HTTP.

Run: python -m bench.votes [--teams 40] [--approvers 50] [--concurrency 64]

Quorum runs in its own process in webhook mode against the emulator, real PostgreSQL (a fresh
database quorum_bench_votes on QUORUM_BENCH_DATABASE_URL, default the local server) and real
Redis (127.0.0.1:6379 db 11). Each team has its own chat and one critical request needing
every one of its approvers, so every tap is a counted vote until the last one decides. Prints
taps/s and p50/p99 of the emulator-measured latency from tap to answerCallbackQuery, then the
floor: the same SQL statements and Redis calls a vote makes, run directly with asyncpg at the
same concurrency, and the ratio of the two.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
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
from sqlalchemy.engine import make_url

from bot.app import Quorum, run_migrations
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


def api_key(i: int) -> str:
    return f"bench-votes-key-{i}"


def make_policy(teams: int, approvers: int) -> dict[str, Any]:
    return {
        "timezone": "UTC",
        "teams": {
            f"team{i}": {
                "chat_ids": [chat_id(i)],
                "approvers": [
                    {"telegram_id": FIRST_USER + j, "name": f"user{j}"} for j in range(approvers)
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


async def reset_database(server_url: str) -> str:
    conn = await asyncpg.connect(to_sync_dsn(server_url))
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)')
        await conn.execute(f'CREATE DATABASE "{DB_NAME}"')
    finally:
        await conn.close()
    url = make_url(server_url).set(database=DB_NAME).render_as_string(hide_password=False)
    await asyncio.to_thread(run_migrations, url)
    return url


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))]


async def create_requests(
    http: aiohttp.ClientSession, base: str, teams: int, label: str
) -> list[str]:
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


async def run_taps(
    emu_url: str, jobs: list[tuple[int, int, int]], concurrency: int
) -> tuple[float, list[float], dict[str, int]]:
    queue: asyncio.Queue[tuple[int, int, int]] = asyncio.Queue()
    for job in jobs:
        queue.put_nowait(job)
    latencies: list[float] = []
    outcomes: dict[str, int] = {}
    connector = aiohttp.TCPConnector(limit=concurrency * 2)
    async with aiohttp.ClientSession(connector=connector) as http:

        async def worker() -> None:
            while True:
                try:
                    chat, message_id, user = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                url = f"{emu_url}/_emulator/chats/{chat}/messages/{message_id}/tap"
                body = {"from_id": user, "button_text": APPROVE, "wait": 10}
                async with http.post(url, json=body) as resp:
                    data = await resp.json()
                answer = data.get("answer") if isinstance(data, dict) else None
                if resp.status != 200 or not answer:
                    outcomes["no answer"] = outcomes.get("no answer", 0) + 1
                    continue
                latencies.append(float(answer["latency_ms"]))
                text = str(answer.get("text") or "")
                key = (
                    "approved"
                    if "Approved" in text
                    else "recorded"
                    if "recorded" in text
                    else text[:40]
                )
                outcomes[key] = outcomes.get(key, 0) + 1

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - start
    return elapsed, latencies, outcomes


# The statements one counted vote makes (inbound dedupe + the vote transaction + card edit).
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
        "UPDATE telegram_messages SET text = $2, reply_markup = $3::jsonb,"
        " version = version + 1, updated_at = now() WHERE id = $1 RETURNING chat_id"
    ),
    "sync": (
        "INSERT INTO outbox (method, telegram_message_id, chat_id, priority, kind)"
        " VALUES ('sync', $1, $2, 10, 'edit')"
        " ON CONFLICT (telegram_message_id) WHERE status = 'pending'"
        " AND telegram_message_id IS NOT NULL"
        " DO UPDATE SET priority = least(outbox.priority, excluded.priority)"
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
                for card_row, card_chat in json.loads(row["cards"]):
                    await conn.fetchrow(FLOOR_SQL["edit"], card_row, "x" * 600, markup)
                    await conn.execute(FLOOR_SQL["sync"], card_row, card_chat)
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
        (chat_id(i), message_ids[i], FIRST_USER + j) for j in range(approvers) for i in range(teams)
    ]
    random.Random(42).shuffle(jobs)
    return jobs


async def main(args: argparse.Namespace) -> None:
    server = os.environ.get(
        "QUORUM_BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
    )
    db_url = await reset_database(server)
    redis = Redis.from_url(REDIS_URL)
    await redis.flushdb()
    await redis.aclose()
    emulator = TelegramEmulator(enforce_limits=True)
    emu_url = await emulator.start("127.0.0.1", 0)
    users = [FIRST_USER + j for j in range(args.approvers)]
    async with EmulatorClient(emu_url) as emu:
        await emu.add_bot(TOKEN, username="quorum_bench_bot", first_name="Quorum")
        for uid in users:
            await emu.add_user(uid, f"User{uid}")
        for i in range(args.teams):
            await emu.add_chat(chat_id(i), "supergroup", title=f"team{i}", members=users)
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
        ctx = multiprocessing.get_context("spawn")
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=quorum_child, args=(values, policy, child))
        proc.start()
        if await asyncio.to_thread(parent.recv) != "started":
            raise SystemExit("quorum did not start")
        base = f"http://127.0.0.1:{port}"
        try:
            async with aiohttp.ClientSession() as http:
                tap_ids = await create_requests(http, base, args.teams, "taps")
            message_ids = await card_ids(emu, args.teams, tap_ids)
            jobs = jobs_for(args.teams, args.approvers, message_ids)
            print(
                f"taps: {len(jobs)} taps by {args.approvers} approvers on {args.teams} cards, "
                f"concurrency {args.concurrency}"
            )
            elapsed, lat, outcomes = await run_taps(emu_url, jobs, args.concurrency)
            rate = len(lat) / elapsed
            print(
                f"  {rate:.0f} taps/s  p50 {statistics.median(lat):.1f} ms  "
                f"p99 {pct(lat, 0.99):.1f} ms  max {max(lat):.1f} ms  outcomes {outcomes}"
            )
        finally:
            parent.send("stop")
            if not await asyncio.to_thread(parent.poll, 30):
                print("  (quorum did not stop within 30 s; terminated)")
                proc.terminate()
            proc.join(10)
    # The floor: the same statements on fresh requests of the same shape, straight to PG.
    floor_ids = await seed_floor(db_url, args.teams, args.approvers)
    f_elapsed, f_lat = await run_floor(
        db_url, jobs_for(args.teams, args.approvers, floor_ids), args.concurrency
    )
    f_rate = len(f_lat) / f_elapsed
    print(
        f"floor (same SQL + Redis calls, asyncpg direct): {f_rate:.0f} votes/s  "
        f"p50 {statistics.median(f_lat):.1f} ms  p99 {pct(f_lat, 0.99):.1f} ms"
    )
    print(
        f"ratio: throughput {rate / f_rate:.2f} of the floor, "
        f"p99 {pct(lat, 0.99) / pct(f_lat, 0.99):.1f}x the floor's"
    )
    await emulator.stop()


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
    asyncio.run(main(parser.parse_args()))


if __name__ == "__main__":
    cli()
