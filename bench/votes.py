"""Vote benchmark: simulated approvers tap approval cards through the emulator over HTTP.

Run: python -m bench.votes [--teams 100] [--approvers 30] [--rates 100,200,300,400,500]
                           [--seconds 4] [--concurrency 64]

Three processes: the Telegram emulator, which also plays the approvers (it taps on its own
schedule, so no driver shares the CPU per tap), Quorum (webhook mode, real PostgreSQL in a
fresh database quorum_bench_votes on QUORUM_BENCH_DATABASE_URL, default the local server, and
real Redis 127.0.0.1:6379 db 11) and this script. Each team has its own chat and critical
requests needing every one of its approvers, so every tap is a counted vote until the last
one decides. First a closed-loop maximum with --concurrency taps unanswered at once, then
open-loop taps at each of --rates for --seconds (a tap starts on schedule whether or not
earlier ones were answered). Each prints taps/s, p50/p99 of the emulator-measured latency from
tap to answerCallbackQuery and the CPU each process spent per tap. Then the floor: the same
SQL statements Quorum's votes make (the plain vote, else the transaction), run directly with
asyncpg, closed loop and at the same rates, and the ratio of the two; and two more closed
loops: every vote in a transaction (the floor before the plain vote) and the lower floor, the
best single statement a vote could be.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import math
import multiprocessing
import os
import random
import statistics
import sys
import time
from multiprocessing.connection import Connection
from typing import Any

import aiohttp
from redis.asyncio import Redis

from bench import (
    CpuMeter,
    PySpy,
    free_port,
    fresh_database,
    peak_rss_mb,
    pids_named,
    speed_probe_ms,
)
from bench.vote_floor import Floor, seed_floor
from bot.policy import parse_policy
from bot.settings import load_settings
from quorum.app import Quorum, run_loop, settle_heap
from sandbox.emulator import EmulatorClient, TelegramEmulator

TOKEN = "987654322:" + "C" * 35
DB_NAME = "quorum_bench_votes" + os.environ.get("QUORUM_BENCH_DB_SUFFIX", "")
REDIS_URL = os.environ.get("QUORUM_BENCH_REDIS_URL", "redis://127.0.0.1:6379/11")
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
        settle_heap()  # as `quorum run` does
        profile = os.environ.get("BENCH_PROFILE")  # a path: cProfile Quorum while it runs
        if profile:
            import cProfile

            profiler = cProfile.Profile()
            profiler.enable()
        conn.send("started")
        await asyncio.to_thread(conn.recv)
        if profile:
            profiler.disable()
            profiler.dump_stats(profile)
        try:
            async with asyncio.timeout(20):
                await asyncio.shield(app.stop())
        except TimeoutError:
            # Say what is stuck (a shutdown that hangs is a bug worth seeing).
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    print("stuck task:", task.get_name(), file=sys.stderr)
                    task.print_stack(limit=6, file=sys.stderr)

    run_loop(main())
    conn.send("stopped")


def emulator_child(conn: Connection) -> None:
    async def main() -> None:
        emulator = TelegramEmulator(enforce_limits=True)
        conn.send(await emulator.start("127.0.0.1", 0))
        await asyncio.to_thread(conn.recv)
        await emulator.stop()

    run_loop(main())
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
    def __init__(self, answers: list[Any]) -> None:
        self.latencies: list[float] = []  # emulator: tap to answerCallbackQuery
        self.outcomes: dict[str, int] = {}
        for answer in answers:
            if not answer:
                self.count("no answer")
                continue
            self.latencies.append(float(answer["latency_ms"]))
            text = str(answer.get("text") or "")
            self.count(
                "approved"
                if "Approved" in text
                else "recorded"
                if "recorded" in text
                else text[:40]
            )

    def count(self, key: str) -> None:
        self.outcomes[key] = self.outcomes.get(key, 0) + 1

    def line(self, elapsed: float) -> str:
        lat = self.latencies or [math.nan]
        return (
            f"  {len(self.latencies) / elapsed:.0f} taps/s answered  "
            f"p50 {statistics.median(lat):.1f} ms  p99 {pct(lat, 0.99):.1f} ms  "
            f"max {max(lat):.1f} ms  outcomes {self.outcomes}"
        )


def tap_list(jobs: list[tuple[int, int, int]]) -> list[dict[str, Any]]:
    return [
        {"chat_id": chat, "message_id": message_id, "from_id": user, "button_text": APPROVE}
        for chat, message_id, user in jobs
    ]


async def populate(emu: EmulatorClient, teams: int, approvers: int) -> int:
    """The bot, the approvers and a chat per team in the emulator; a free port for Quorum."""
    await emu.add_bot(TOKEN, username="quorum_bench_bot", first_name="Quorum")
    for i in range(teams):
        members = [user_id(i, j) for j in range(approvers)]
        for uid in members:
            await emu.add_user(uid, f"User{uid}")
        await emu.add_chat(chat_id(i), "supergroup", title=f"team{i}", members=members)
    return free_port()


def child_settings(emu_url: str, port: int, db_url: str, concurrency: int) -> dict[str, Any]:
    """The settings of the Quorum child (quorum_child) in webhook mode against the emulator."""
    return {
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
        # As many deliveries at once as the taps the benchmark keeps unanswered (Telegram's
        # default is 40; the floor runs at the full concurrency).
        "webhook_max_connections": min(100, concurrency),
    }


async def run_closed(
    emu: EmulatorClient, jobs: list[tuple[int, int, int]], concurrency: int
) -> tuple[float, Tally]:
    """As fast as it goes with `concurrency` taps unanswered at once.

    The emulator plays the users itself, so this driver costs no CPU per tap while the
    measured latency (tap to answerCallbackQuery) is the same Telegram would see.
    """
    out = await emu.taps(tap_list(jobs), concurrency=concurrency)
    return float(out["elapsed_seconds"]), Tally(out["answers"])


async def run_open(
    emu: EmulatorClient, jobs: list[tuple[int, int, int]], rate: float
) -> tuple[float, float, Tally]:
    """Taps started on a fixed schedule of `rate` per second, answered or not.

    Returns the seconds the schedule took to start every tap (it falls behind only when the
    emulator is starved of CPU), the seconds until the last answer, and the tally.
    """
    out = await emu.taps(tap_list(jobs), rate=rate)
    return float(out["issued_seconds"]), float(out["elapsed_seconds"]), Tally(out["answers"])


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


TARGET_P99_MS = 25.0
IDLE_SECONDS = 10.0


def sweep_step(
    label: str, rate: float, latencies: list[float], unanswered: int, elapsed: float
) -> tuple[str, float]:
    """The line for one open-loop rate, and its p99 (infinite when a tap went unanswered)."""
    lat = latencies or [math.nan]
    p99 = pct(lat, 0.99) if latencies and not unanswered else math.inf
    ok = "meets" if p99 <= TARGET_P99_MS else "misses"
    line = (
        f"  {label} at {rate:.0f}/s: {len(latencies) / elapsed:.0f} answered/s"
        f"  p50 {statistics.median(lat):.1f} ms  p99 {pct(lat, 0.99):.1f} ms"
        f"  ({ok} p99 <= {TARGET_P99_MS:.0f} ms)"
    )
    return line, p99


def best_rate(results: dict[float, float]) -> str:
    good = [r for r, p99 in results.items() if p99 <= TARGET_P99_MS]
    return f"{max(good):.0f}/s" if good else "none of the rates tried"


async def main(args: argparse.Namespace) -> None:
    server = os.environ.get(
        "QUORUM_BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
    )
    print(f"speed probe before: {speed_probe_ms():.0f} ms (lower is faster)")
    db_url = await fresh_database(server, DB_NAME)
    redis = Redis.from_url(REDIS_URL)
    await redis.flushdb()
    await redis.aclose()
    emu_proc, emu_conn = spawn(emulator_child)
    emu_url = str(await asyncio.to_thread(emu_conn.recv))
    rates = [float(r) for r in args.rates.split(",")]
    open_taps = [int(r * args.seconds) for r in rates]
    per_card = args.teams * args.approvers  # one card per team, each approver taps it once
    open_cards = max(1, math.ceil(sum(open_taps) / per_card))
    quorum_p99: dict[float, float] = {}
    try:
        async with EmulatorClient(emu_url) as emu:
            port = await populate(emu, args.teams, args.approvers)
            values = child_settings(emu_url, port, db_url, args.concurrency)
            policy = make_policy(args.teams, args.approvers)
            proc, conn = spawn(quorum_child, values, policy)
            if await asyncio.to_thread(conn.recv) != "started":
                raise SystemExit("quorum did not start")
            base = f"http://127.0.0.1:{port}"
            try:
                # Every card first (cards and edits share each chat's 20 messages a minute).
                rounds: list[list[str]] = []
                async with aiohttp.ClientSession() as http:
                    for r in range(1 + open_cards):
                        rounds.append(await create_requests(http, base, args.teams, f"r{r}"))
                cards = [await card_ids(emu, args.teams, ids) for ids in rounds]
                closed_jobs = jobs_for(args.teams, args.approvers, cards[0])
                open_jobs = [j for c in cards[1:] for j in jobs_for(args.teams, args.approvers, c)]
                random.Random(7).shuffle(open_jobs)
                meter = CpuMeter(
                    {
                        "quorum": lambda: [proc.pid],
                        "emulator": lambda: [emu_proc.pid],
                        "driver": lambda: [os.getpid()],
                        "postgres": lambda: pids_named("postgres"),
                        "redis": lambda: pids_named("redis-server"),
                    }
                )
                await asyncio.sleep(2)  # the cards' own edits settle
                meter.reset()
                with PySpy(proc.pid, "idle"):
                    await asyncio.sleep(IDLE_SECONDS)
                idle = {k: v / IDLE_SECONDS * 100 for k, (v, _) in meter.spent().items()}
                print(
                    f"idle for {IDLE_SECONDS:.0f} s before the taps, CPU % of a core:",
                    ", ".join(f"{k} {v:.2f}" for k, v in idle.items()),
                )
                print(
                    f"closed loop: {len(closed_jobs)} taps on {args.teams} cards in"
                    f" {args.teams} chats by {args.approvers} approvers each,"
                    f" concurrency {args.concurrency}"
                )
                meter.reset()
                with PySpy(proc.pid, "closed loop"):
                    elapsed, tally = await run_closed(emu, closed_jobs, args.concurrency)
                print(tally.line(elapsed))
                closed_cpu = {k: total for k, (total, _) in meter.spent().items()}
                print(meter.line(len(closed_jobs)))
                rate = len(tally.latencies) / elapsed
                c_p99 = pct(tally.latencies or [math.nan], 0.99)
                print(
                    f"open loop: taps started on schedule ({args.seconds:.0f} s per rate),"
                    f" answered or not, on {args.teams * open_cards} more cards"
                )
                start = 0
                for offered, n in zip(rates, open_taps, strict=True):
                    jobs, start = open_jobs[start : start + n], start + n
                    meter.reset()
                    with PySpy(proc.pid, f"open loop {offered:.0f}"):
                        issued, o_elapsed, o_tally = await run_open(emu, jobs, offered)
                    line, quorum_p99[offered] = sweep_step(
                        "Quorum",
                        len(jobs) / issued,
                        o_tally.latencies,
                        o_tally.outcomes.get("no answer", 0),
                        o_elapsed,
                    )
                    print(line)
                    print("  " + meter.line(len(jobs)).strip())
                    await asyncio.sleep(2)  # let card edits and the queue settle
                rss_peak, rss_now = peak_rss_mb(proc.pid)
                print(f"Quorum RSS: peak {rss_peak:.0f} MiB, now {rss_now:.0f} MiB")
            finally:
                await stop(proc, conn, "quorum")
    finally:
        await stop(emu_proc, emu_conn, "emulator")
    print(f"speed probe between Quorum and the floor: {speed_probe_ms():.0f} ms")
    # The floor: the same statements on fresh requests of the same shape, straight to PG.
    floor_meter = CpuMeter(
        {
            "floor client": lambda: [os.getpid()],
            "postgres": lambda: pids_named("postgres"),
            "redis": lambda: pids_named("redis-server"),
        }
    )
    floor_p99: dict[float, float] = {}
    async with Floor(db_url, args.concurrency) as floor:
        chats = [chat_id(i) for i in range(args.teams)]
        floor_ids = await seed_floor(db_url, chats, args.approvers, 3 + open_cards, floor.requests)
        floor_jobs = [j for ids in floor_ids for j in jobs_for(args.teams, args.approvers, ids)]
        floor_rounds = [floor_jobs[i * per_card : (i + 1) * per_card] for i in range(3)]
        open_floor = floor_jobs[3 * per_card :]
        f_rate, f_p99, floor_client = await floor_closed(
            floor,
            floor_meter,
            floor_rounds[0],
            args.concurrency,
            "quorum",
            "floor (Quorum's statements: the plain vote, else the transaction; asyncpg direct)",
        )
        txn_rate, _, _ = await floor_closed(
            floor,
            floor_meter,
            floor_rounds[1],
            args.concurrency,
            "transaction",
            "transaction floor (every vote in a transaction, as before the plain vote)",
        )
        one_rate, _, one_client = await floor_closed(
            floor,
            floor_meter,
            floor_rounds[2],
            args.concurrency,
            "one",
            "lower floor (the vote as one statement, FLOOR_ONE_SQL)",
        )
        start = 0
        for offered, n in zip(rates, open_taps, strict=True):
            jobs, start = open_floor[start : start + n], start + n
            t0 = time.perf_counter()
            lat = await floor.open(jobs, offered)
            line, floor_p99[offered] = sweep_step(
                "floor", offered, lat, len(jobs) - len(lat), time.perf_counter() - t0
            )
            print(line)
    print(
        f"ratio: Quorum's closed-loop throughput is {rate / f_rate:.2f} of the floor's,"
        f" its closed-loop p99 {c_p99 / f_p99:.1f}x the floor's"
    )
    print(
        f"highest rate tried with p99 <= {TARGET_P99_MS:.0f} ms: Quorum {best_rate(quorum_p99)},"
        f" floor {best_rate(floor_p99)}"
    )
    print(budget_line(closed_cpu, len(closed_jobs), floor_client))
    print(f"speed probe after: {speed_probe_ms():.0f} ms; load average {os.getloadavg()}")
    quorum_ms = closed_cpu["quorum"] * 1000 / max(len(closed_jobs), 1)
    last = rates[-1]
    print(
        f"RESULT votes closed_ratio={rate / f_rate:.2f} cpu_ratio={quorum_ms / floor_client:.2f}"
        f" p99_{last:.0f}={quorum_p99[last]:.1f} idle_cpu_pct={idle['quorum']:.2f}"
        f" rss_mb={rss_peak:.0f} rss_now_mb={rss_now:.0f} taps_per_s={rate:.0f}"
        f" floor_per_s={f_rate:.0f} txn_floor_ratio={rate / txn_rate:.2f}"
        f" one_stmt_per_s={one_rate:.0f}"
        f" one_stmt_ratio={rate / one_rate:.2f} cpu_ratio_one_stmt={quorum_ms / one_client:.2f}"
    )


TARGET_RATE = 500.0


async def floor_closed(
    floor: Floor,
    meter: CpuMeter,
    jobs: list[tuple[int, int, int]],
    concurrency: int,
    mode: str,
    title: str,
) -> tuple[float, float, float]:
    """One closed loop of the floor in `mode`, printed: (votes/s, p99 ms, client CPU ms/vote)."""
    meter.reset()
    elapsed, lat = await floor.closed(jobs, concurrency, mode=mode)
    cpu = meter.line(len(lat), "vote")  # before the pool's backends exit
    client = meter.spent()["floor client"][0] * 1000 / len(lat)
    rate, p99 = len(lat) / elapsed, pct(lat, 0.99)
    print(
        f"{title}, closed loop at concurrency {concurrency}: {rate:.0f} votes/s"
        f"  p50 {statistics.median(lat):.1f} ms  p99 {p99:.1f} ms"
    )
    print(cpu)
    return rate, p99, client


def budget_line(closed_cpu: dict[str, float], taps: int, floor_client_ms: float) -> str:
    """What the target leaves Quorum of this machine's CPU, from the closed loop's figures.

    Telegram's side (the emulator) and the database share the cores here, so their CPU per
    tap comes off the budget before Quorum's. A p99 of 50 ms needs the cores well short of
    saturation (queues grow without bound as they near it), hence the 80% figure.
    """
    cores = os.cpu_count() or 1
    budget = cores * 1000 / TARGET_RATE
    per_tap = {k: v * 1000 / max(taps, 1) for k, v in closed_cpu.items()}
    others = per_tap["emulator"] + per_tap["postgres"] + per_tap["redis"]
    return (
        f"budget at {TARGET_RATE:.0f} taps/s on {cores} cores: {budget:.2f} ms CPU per tap with"
        f" the cores 100% busy, {0.8 * budget:.2f} at 80%; emulator + postgres + redis took"
        f" {others:.2f}, leaving Quorum {budget - others:.2f} ms (at 80%:"
        f" {0.8 * budget - others:.2f}); Quorum spent {per_tap['quorum']:.2f} ms, and its SQL"
        f" alone cost the floor client {floor_client_ms:.2f} ms"
    )


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--teams", type=int, default=100)
    parser.add_argument("--approvers", type=int, default=30)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument(
        "--rates", default="100,200,300,400,500", help="open-loop taps per second, in turn"
    )
    parser.add_argument("--seconds", type=float, default=4.0, help="open-loop time per rate")
    run_loop(main(parser.parse_args()))


if __name__ == "__main__":
    cli()
