"""Audit chain benchmark: the sealer's throughput, and the vote path with and without it.

Run: python -m bench.audit [--rows 100000] [--teams 20] [--approvers 30] [--rounds 2]

Part 1 (fresh database quorum_bench_audit on QUORUM_BENCH_DATABASE_URL, default the local
server): --rows audit rows written in transactions of 1,000, then sealed by `seal_all` (the
worker's statements, 5,000 rows a round); beside it its floor, the same rows hashed in memory
(chain.chain, no SQL), and `verify` and `export` over the sealed chain, with the peak memory
export adds. Part 2 (bench.votes' machinery: emulator, one Quorum in webhook mode, real
Redis db 11): closed-loop taps in rounds that alternate without and with a sealer process
running beside Quorum (Quorum's own sealer is parked), one fresh card per team each round.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import resource
import statistics
import time
from multiprocessing.connection import Connection

import aiohttp
import asyncpg
from redis.asyncio import Redis

from bench import CpuMeter, fresh_database, pids_named, speed_probe_ms
from bench.votes import (
    REDIS_URL,
    card_ids,
    child_settings,
    create_requests,
    emulator_child,
    jobs_for,
    make_policy,
    populate,
    quorum_child,
    run_closed,
    spawn,
    stop,
)
from bot.audit import chain
from bot.audit.sealer import BATCH, seal_once
from bot.audit.verify import export, verify
from bot.settings import Settings
from quorum.app import run_loop
from sandbox.emulator import EmulatorClient
from storage import audit as audit_sql
from storage.db import make_engine, make_sessionmaker, to_sync_dsn

DB_NAME = "quorum_bench_audit"
SERVER = os.environ.get(
    "QUORUM_BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)


async def write_rows(db_url: str, rows: int) -> None:
    conn = await asyncpg.connect(to_sync_dsn(db_url))
    try:
        for start in range(0, rows, 1000):
            await conn.execute(
                "INSERT INTO audit_log (event, actor, actor_telegram_id, team_id, approval_id,"
                " chat_id, detail) SELECT 'vote.recorded', 'user' || (i % 30), 700000 + i % 30,"
                " 1 + i % 20, gen_random_uuid(), -1003000000000 - i % 20,"
                " jsonb_build_object('decision', 'approve', 'reason', 'bench row ' || i,"
                " 'approvals', i % 7) FROM generate_series($1::int, $2::int) AS i",
                start,
                min(rows, start + 1000) - 1,
            )
    finally:
        await conn.close()


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def sealer_part(rows: int) -> float:
    db_url = await fresh_database(SERVER, DB_NAME)
    t0 = time.perf_counter()
    await write_rows(db_url, rows)
    print(f"wrote {rows} audit rows in {time.perf_counter() - t0:.1f} s")
    engine = make_engine(db_url, pool_size=2, statement_timeout_ms=0)
    sessions = make_sessionmaker(engine)
    try:
        sealed, t0 = 0, time.perf_counter()
        deadline = t0 + 600
        while sealed < rows and time.perf_counter() < deadline:
            # Another database's open transaction can hold the cluster-wide xmin back a moment.
            sealed += await seal_once(sessions)
        seal_s = time.perf_counter() - t0
        seal_rate = sealed / seal_s
        print(f"sealer: {sealed} rows in {seal_s:.2f} s = {seal_rate:.0f} rows/s ({BATCH} a round)")
        t0 = time.perf_counter()
        verdict = await verify(sessions, None)
        verify_s = time.perf_counter() - t0
        print(f"verify: {verdict.line} in {verify_s:.2f} s = {verdict.rows / verify_s:.0f} rows/s")
        before, t0, size, lines = peak_rss_mb(), time.perf_counter(), 0, 0
        async for line in export(sessions, "jsonl"):
            size += len(line)
            lines += 1
        export_s = time.perf_counter() - t0
        print(
            f"export jsonl: {lines} rows, {size / 1e6:.0f} MB in {export_s:.2f} s"
            f" ({lines / export_s:.0f} rows/s); peak RSS {before:.0f} -> {peak_rss_mb():.0f} MB"
        )
        async with sessions() as session, session.begin():
            stored = [r async for r in audit_sql.stream_sealed(session, 1)]
        t0 = time.perf_counter()
        chain.chain(chain.GENESIS, 1, stored)
        floor_s = time.perf_counter() - t0
        print(
            f"floor (the same rows hashed in memory, no SQL): {len(stored) / floor_s:.0f} rows/s;"
            f" the sealer reaches {seal_rate * floor_s / len(stored):.2f} of it"
        )
    finally:
        await engine.dispose()
    return seal_rate


def sealer_child(db_url: str, conn: Connection) -> None:
    """A sealer beside Quorum, as a second replica's worker runs (seal, rest the default
    QUORUM_AUDIT_SEAL_INTERVAL_SECONDS when idle)."""
    rest = float(Settings.model_fields["audit_seal_interval_seconds"].default)

    async def main() -> None:
        engine = make_engine(db_url, pool_size=2)
        sessions = make_sessionmaker(engine)
        conn.send("started")
        total = 0
        while not conn.poll():
            done = await seal_once(sessions)
            total += done
            if done < BATCH:
                await asyncio.sleep(rest)
        conn.recv()
        await engine.dispose()
        conn.send(total)

    run_loop(main())


async def votes_part(args: argparse.Namespace) -> tuple[float, float]:
    db_url = await fresh_database(SERVER, DB_NAME)
    redis = Redis.from_url(REDIS_URL)
    await redis.flushdb()
    await redis.aclose()
    emu_proc, emu_conn = spawn(emulator_child)
    emu_url = str(await asyncio.to_thread(emu_conn.recv))
    rates: dict[str, list[float]] = {"without": [], "with": []}
    try:
        async with EmulatorClient(emu_url) as emu:
            port = await populate(emu, args.teams, args.approvers)
            values = {
                **child_settings(emu_url, port, db_url, args.concurrency),
                "audit_seal_interval_seconds": 86400,  # parked: the rounds decide
            }
            proc, conn = spawn(quorum_child, values, make_policy(args.teams, args.approvers))
            if await asyncio.to_thread(conn.recv) != "started":
                raise SystemExit("quorum did not start")
            base = f"http://127.0.0.1:{port}"
            try:
                phases = ["without", "with"] * args.rounds
                async with aiohttp.ClientSession() as http:
                    rounds = [
                        await create_requests(http, base, args.teams, f"a{r}")
                        for r in range(len(phases))
                    ]
                cards = [await card_ids(emu, args.teams, ids) for ids in rounds]
                for phase, ids in zip(phases, cards, strict=True):
                    jobs = jobs_for(args.teams, args.approvers, ids)
                    random.Random(len(rates[phase])).shuffle(jobs)
                    sealer = spawn(sealer_child, db_url) if phase == "with" else None
                    if sealer is not None:
                        await asyncio.to_thread(sealer[1].recv)
                    sealer_pids = [sealer[0].pid] if sealer else []
                    meter = CpuMeter(
                        {
                            "quorum": lambda: [proc.pid],
                            "sealer": lambda: sealer_pids,  # noqa: B023 (read right away)
                            "postgres": lambda: pids_named("postgres"),
                        }
                    )
                    meter.reset()
                    elapsed, tally = await run_closed(emu, jobs, args.concurrency)
                    cpu = meter.line(len(jobs)).strip()
                    sealed = ""
                    if sealer is not None:
                        sealer[1].send("stop")
                        sealed = f", sealer sealed {await asyncio.to_thread(sealer[1].recv)} rows"
                        sealer[0].join(10)
                    rates[phase].append(len(tally.latencies) / elapsed)
                    print(f"  {phase} sealer:" + tally.line(elapsed).lstrip(" ") + sealed)
                    print(f"    {cpu}")
            finally:
                await stop(proc, conn, "quorum")
    finally:
        await stop(emu_proc, emu_conn, "emulator")
    return statistics.mean(rates["without"]), statistics.mean(rates["with"])


async def main(args: argparse.Namespace) -> None:
    print(f"speed probe before: {speed_probe_ms():.0f} ms (lower is faster)")
    seal_rate = await sealer_part(args.rows)
    print(f"speed probe between: {speed_probe_ms():.0f} ms")
    print(
        f"votes: closed loop, concurrency {args.concurrency}, {args.teams} cards of"
        f" {args.approvers} taps a round, rounds alternating without and with the sealer"
    )
    without, with_sealer = await votes_part(args)
    print(f"speed probe after: {speed_probe_ms():.0f} ms")
    print(
        f"RESULT audit sealer_rows_per_s={seal_rate:.0f} taps_per_s_without_sealer={without:.0f}"
        f" taps_per_s_with_sealer={with_sealer:.0f} ratio={with_sealer / without:.2f}"
    )


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--teams", type=int, default=20)
    parser.add_argument("--approvers", type=int, default=30)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3, help="pairs of without/with rounds")
    run_loop(main(parser.parse_args()))


if __name__ == "__main__":
    cli()
