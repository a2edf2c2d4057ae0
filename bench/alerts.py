"""Alert benchmarks: HTTP ingest throughput, a 10,000-alert storm, and the bot's peak RSS.

Run: python -m bench.alerts [--quick]

Real PostgreSQL (a fresh database quorum_bench_alerts on QUORUM_BENCH_DATABASE_URL, default
postgresql://postgres@127.0.0.1:5432) and Redis (127.0.0.1:6379 db 12); the Telegram emulator
enforcing Telegram's limits runs in this process; Quorum runs as `quorum run` in a subprocess
in webhook mode, so its RSS is its own. Prints figures; it is not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import random
import statistics
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
from redis.asyncio import Redis

from bench import (
    PySpy,
    floor_pool,
    free_port,
    fresh_database,
    peak_rss_mb,
    quorum_process,
    webhook_env,
)
from quorum.app import run_loop
from sandbox.emulator import EmulatorClient, TelegramEmulator
from storage import alert_firing
from storage.db import to_sync_dsn

TOKEN = "876543210:" + "C" * 35
BOT_ID = 876543210
DB_NAME = "quorum_bench_alerts" + os.environ.get("QUORUM_BENCH_DB_SUFFIX", "")
REDIS_URL = os.environ.get("QUORUM_BENCH_REDIS_URL", "redis://127.0.0.1:6379/12")
SERVER_URL = os.environ.get("QUORUM_BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432")
USER = 7001
# The statements of one alert as the intake runs them, taken from the module that runs them.
FLOOR_SQL = {"plain": alert_firing._COUNT_REPEAT, "upsert": alert_firing._UPSERT_FIRING_AUDITED}
STORM_TEAMS = 25  # 2 fingerprints per group chat: see explain_storm()
STORM_FINGERPRINTS = 50


def key_for(team: str) -> str:
    return f"bench-key-{team}"


def policy_toml(storm_chats: list[int]) -> str:
    lines = ['timezone = "UTC"', ""]
    teams: dict[str, list[int]] = {"ingest": [], "single": []} | {
        f"storm{i:02d}": [c] for i, c in enumerate(storm_chats)
    }
    for name, chats in teams.items():
        digest = hashlib.sha256(key_for(name).encode()).hexdigest()
        lines += [
            f"[teams.{name}]",
            f"chat_ids = {chats}",
            f'approvers = [{{ telegram_id = {USER}, name = "oncall" }}]',
            f'api_keys = [{{ name = "bench", sha256 = "{digest}" }}]',
            # One card per fingerprint: the storm below checks each one's final count.
            "alert_group_by = []",
            "",
        ]
    return "\n".join(lines)


def am_body(alerts: list[dict[str, Any]]) -> bytes:
    return json.dumps(
        {
            "version": "4",
            "groupKey": '{}:{alertname="Bench"}',
            "truncatedAlerts": 0,
            "status": "firing",
            "receiver": "quorum",
            "groupLabels": {"alertname": "Bench"},
            "commonLabels": {"alertname": "Bench"},
            "commonAnnotations": {},
            "externalURL": "http://alertmanager:9093",
            "alerts": alerts,
        }
    ).encode()


def am_alert(n: int, prefix: str, *, grouped: bool = False) -> dict[str, Any]:
    """One alert; `grouped` adds service=<prefix>, which the --incident run's incidents group."""
    labels = {
        "alertname": "Bench",
        "instance": f"{prefix}-{n}:9100",
        "job": "node",
        "severity": "warning",
    }
    if grouped:
        labels["service"] = prefix
    return {
        "status": "firing",
        "labels": labels,
        "annotations": {"summary": f"{prefix} alert {n}", "description": "disk <b>95%</b> & up"},
        "startsAt": "2026-01-01T10:00:00.000Z",
        "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": "http://prometheus:9090/graph?g0.expr=up",
        "fingerprint": hashlib.sha256(f"{prefix}{n}".encode()).hexdigest()[:16],
    }


async def post(
    http: aiohttp.ClientSession, url: str, body: bytes, key: str, statuses: Counter[int]
) -> None:
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    for _ in range(20):
        async with http.post(url, data=body, headers=headers) as resp:
            await resp.read()
            statuses[resp.status] += 1
            if resp.status < 500:
                return
        await asyncio.sleep(0.2)  # like Alertmanager: retry a 5xx


async def bench_ingest(
    http: aiohttp.ClientSession,
    base: str,
    bodies: int,
    concurrency: int,
    distinct: int,
    *,
    grouped: bool = False,
) -> float:
    url = base + "/api/v1/alerts/alertmanager"
    payloads = [
        am_body([am_alert((b * 100 + i) % distinct, "ingest", grouped=grouped) for i in range(100)])
        for b in range(bodies)
    ]
    statuses: Counter[int] = Counter()
    # Warm up connections and prepared statements; not counted.
    await asyncio.gather(*(post(http, url, p, key_for("ingest"), statuses) for p in payloads[:8]))
    statuses.clear()
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for p in payloads:
        queue.put_nowait(p)

    async def worker() -> None:
        while not queue.empty():
            p = queue.get_nowait()
            await post(http, url, p, key_for("ingest"), statuses)

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - start
    rate = bodies * 100 / elapsed
    print(
        f"[1] ingest: {bodies} Alertmanager bodies x 100 alerts ({distinct} distinct "
        f"fingerprints), concurrency {concurrency}: {elapsed:.2f} s -> {rate:,.0f} alerts/s "
        f"(target >= 5,000); HTTP statuses {dict(statuses)}"
    )
    return rate


SINGLE_ALERTS = 2000
SINGLE_FINGERPRINTS = 20
SINGLE_SENDERS = 32


def generic_alert(n: int) -> dict[str, Any]:
    return {
        "fingerprint": f"single-{n % SINGLE_FINGERPRINTS:02d}",
        "title": f"Disk almost full on node {n % SINGLE_FINGERPRINTS}",
        "severity": "warning",
        "labels": {"alertname": "DiskFull", "instance": f"node-{n % SINGLE_FINGERPRINTS}"},
        "annotations": {"summary": "disk <b>95%</b> & up"},
        "source": "bench",
    }


async def closed_loop(n: int, senders: int, one: Any) -> float:
    """`n` calls of `one(i)` by `senders` concurrent workers; the seconds it took."""
    numbers = iter(range(n))

    async def worker() -> None:
        for i in numbers:
            await one(i)

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(senders)))
    return time.perf_counter() - start


SINGLE_ROUNDS = 3  # each side's rounds, taken in turn: the machine's speed drifts in a run


async def bench_single(http: aiohttp.ClientSession, base: str, db_url: str) -> dict[str, float]:
    """One alert per request on the generic endpoint, SINGLE_SENDERS at once, against its
    floors: the same statements straight on asyncpg, no HTTP, no parsing, no ORM session;
    "floor" runs them as the intake does (the plain repeat in autocommit, else the upsert
    with its audit rows in a transaction), "transaction floor" every alert in the transaction
    (the floor before the plain repeat). SINGLE_ROUNDS rounds of each in turn; the medians."""
    url, statuses = base + "/api/v1/alerts", Counter[int]()
    bodies = [json.dumps(generic_alert(i)).encode() for i in range(SINGLE_ALERTS)]

    async def quorum(i: int) -> None:
        await post(http, url, bodies[i], key_for("single"), statuses)

    await closed_loop(SINGLE_FINGERPRINTS, 1, quorum)  # new alerts (their cards) first
    pool = await floor_pool(db_url, SINGLE_SENDERS)
    async with pool.acquire() as conn:
        team_id = await conn.fetchval("SELECT id FROM teams WHERE name = 'single'")

    def rows(i: int) -> str:
        a = generic_alert(i)
        row = {k: a.get(k) for k in ("fingerprint", "title", "severity", "labels", "source")}
        return json.dumps([{**row, "annotations": a["annotations"], "hits": 1, "context": {}}])

    async def floor(i: int) -> None:
        async with pool.acquire() as conn:
            if not await conn.fetchrow(FLOOR_SQL["plain"], team_id, rows(i), 10.0):
                async with conn.transaction():
                    await conn.fetch(FLOOR_SQL["upsert"], team_id, rows(i), 10.0)

    async def transaction_floor(i: int) -> None:
        async with pool.acquire() as conn, conn.transaction():
            await conn.fetch(FLOOR_SQL["upsert"], team_id, rows(i), 10.0)

    sides = {"Quorum": quorum, "floor": floor, "transaction floor": transaction_floor}
    rates: dict[str, list[float]] = {name: [] for name in sides}
    try:
        # Not timed: every side's connections opened and its statements prepared on them.
        for one in sides.values():
            await closed_loop(4 * SINGLE_SENDERS, SINGLE_SENDERS, one)
        statuses.clear()
        for _ in range(SINGLE_ROUNDS):
            for name, one in sides.items():
                rates[name].append(
                    SINGLE_ALERTS / await closed_loop(SINGLE_ALERTS, SINGLE_SENDERS, one)
                )
    finally:
        await pool.close()
    print(
        f"[4] one alert per request (POST /api/v1/alerts, {SINGLE_SENDERS} senders,"
        f" {SINGLE_ALERTS} alerts over {SINGLE_FINGERPRINTS} fingerprints, {SINGLE_ROUNDS}"
        f" rounds of each side in turn); HTTP statuses {dict(statuses)}"
    )
    for name, got in rates.items():
        rounds = ", ".join(f"{r:,.0f}" for r in got)
        print(f"    {name}: {rounds} alerts/s; median {statistics.median(got):,.0f}")
    return {name: statistics.median(got) for name, got in rates.items()}


def explain_storm(seconds: float) -> None:
    per_chat = STORM_FINGERPRINTS // STORM_TEAMS
    edits = per_chat * seconds / 10
    print(
        f"    storm layout: {STORM_TEAMS} teams x 1 group chat, {per_chat} fingerprints each. "
        f"Every card goes to every chat of its team, and a group chat allows 20 messages/min "
        f"(edits included): {per_chat} cards edited at most once per 10 s is about "
        f"{per_chat + edits:.0f} calls per chat over {seconds:.0f} s, within budget; 50 "
        f"fingerprints on one chat would need ~{50 + 50 * seconds / 10:.0f} calls there."
    )


async def bench_storm(
    http: aiohttp.ClientSession,
    base: str,
    emu: EmulatorClient,
    db_url: str,
    chats: list[int],
    total: int,
    seconds: float,
    *,
    grouped: bool = False,
) -> None:
    url = base + "/api/v1/alerts/alertmanager"
    rng = random.Random(7)
    teams = [f"storm{i:02d}" for i in range(STORM_TEAMS)]
    per_team = STORM_FINGERPRINTS // STORM_TEAMS
    expected: Counter[str] = Counter()
    requests: list[tuple[str, bytes]] = []
    per_request = 10
    for r in range(total // per_request):
        team = teams[r % len(teams)]
        alerts = []
        for _ in range(per_request):
            n = rng.randrange(per_team)
            a = am_alert(n, team, grouped=grouped)
            expected[a["fingerprint"]] += 1
            alerts.append(a)
        requests.append((team, am_body(alerts)))
    explain_storm(seconds)
    statuses: Counter[int] = Counter()
    gap = seconds / len(requests)
    start = time.monotonic()
    pending: set[asyncio.Task[None]] = set()
    for i, (team, body) in enumerate(requests):
        delay = start + i * gap - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.create_task(post(http, url, body, key_for(team), statuses))
        pending.add(task)
        task.add_done_callback(pending.discard)
    await asyncio.gather(*pending)
    storm_end = time.monotonic()
    print(
        f"[2] storm: {total} alerts over {len(expected)} fingerprints in "
        f"{storm_end - start:.1f} s ({len(requests)} requests); HTTP statuses {dict(statuses)}"
    )

    async def card_state() -> tuple[int, int]:
        n_cards = 0
        final = 0
        for chat in chats:
            for m in await emu.messages(chat):
                text = str(m["text"])
                if m["from_id"] != BOT_ID or "Fingerprint:" not in text:
                    continue
                n_cards += 1
                fp = text.rsplit("Fingerprint: ", 1)[1][:16]
                if f"Hits: {expected[fp]} " in text:
                    final += 1
        return n_cards, final

    deadline = storm_end + 60
    n_cards, final = await card_state()
    while final < len(expected) and time.monotonic() < deadline:
        await asyncio.sleep(0.25)
        n_cards, final = await card_state()
    converged = time.monotonic() - storm_end
    conn = await asyncpg.connect(to_sync_dsn(db_url))
    try:
        hits = await conn.fetchval(
            "SELECT coalesce(sum(hit_count), 0) FROM alerts a JOIN teams t ON t.id = a.team_id"
            " WHERE t.name LIKE 'storm%'"
        )
    finally:
        await conn.close()
    stats = await emu.stats()
    ok = final == len(expected)
    print(f"    cards in the emulator: {n_cards} (expected {len(expected)})")
    print(f"    sum of hit_count in PostgreSQL: {hits} (expected {total})")
    print(f"    429 answers from the emulator: {stats['too_many_requests_total']} (expected 0)")
    print(
        f"    final card state delivered for {final}/{len(expected)} cards, "
        f"{converged:.1f} s after the storm ended (target <= 15 s){'' if ok else ' NOT MET'}"
    )
    calls = stats["calls_by_method"]
    print(
        f"    Telegram calls: sendMessage {calls.get('sendMessage', 0)}, "
        f"editMessageText {calls.get('editMessageText', 0)}"
    )


async def declare_incidents(http: aiohttp.ClientSession, base: str, teams: list[str]) -> None:
    """An open incident per team, grouping its alerts (service=<team>): every alert attaches."""
    for team in teams:
        body = {"title": f"{team} storm", "severity": "P1", "services": [team]}
        headers = {"Authorization": f"Bearer {key_for(team)}"}
        async with http.post(base + "/api/v1/incidents", json=body, headers=headers) as resp:
            if resp.status != 201:
                raise SystemExit(f"declaring an incident: {resp.status} {await resp.text()}")


async def main(quick: bool, incident: bool = False) -> None:
    db_url = await fresh_database(SERVER_URL + "/postgres", DB_NAME)
    redis = Redis.from_url(REDIS_URL)
    await redis.flushdb()
    await redis.aclose()
    emulator = TelegramEmulator(enforce_limits=True)
    emu_url = await emulator.start("127.0.0.1", 0)
    emu = EmulatorClient(emu_url)
    await emu.add_bot(TOKEN, username="quorum_bench_bot", first_name="Quorum")
    await emu.add_user(USER, "Oncall", username="oncall")
    chats = [-1003000000000 - i for i in range(STORM_TEAMS)]
    for c in chats:
        await emu.add_chat(c, "supergroup", title=f"storm {c}", members=[USER])
    port = free_port()
    workdir = Path(tempfile.mkdtemp(prefix="quorum-bench-alerts-"))
    policy = workdir / "policy.toml"
    policy.write_text(policy_toml(chats))
    env = webhook_env(
        token=TOKEN, emu_url=emu_url, port=port, db_url=db_url, redis_url=REDIS_URL, workdir=workdir
    )
    base = f"http://127.0.0.1:{port}"
    try:
        async with quorum_process(env, port, workdir) as proc, aiohttp.ClientSession() as http:
            print(f"bench.alerts on {os.cpu_count()} CPUs; Quorum pid {proc.pid} (webhook mode)")
            teams = ["ingest"] + [f"storm{i:02d}" for i in range(STORM_TEAMS)]
            if incident:
                await declare_incidents(http, base, teams)
                print(f"    an open incident per team ({len(teams)}): every alert attaches")
            bodies = 100 if quick else 400
            batched = await bench_ingest(
                http, base, bodies, concurrency=8, distinct=2000, grouped=incident
            )
            total, seconds = (2000, 12.0) if quick else (10_000, 60.0)
            await bench_storm(http, base, emu, db_url, chats, total, seconds, grouped=incident)
            with PySpy(proc.pid, "single alerts"):
                medians = await bench_single(http, base, db_url)
            single, floor = medians["Quorum"], medians["floor"]
            txn_floor = medians["transaction floor"]
            rss_peak, rss_now = peak_rss_mb(proc.pid)
            print(f"[3] Quorum RSS: peak (VmHWM) {rss_peak:.1f} MiB, now {rss_now:.1f} MiB")
            print(
                f"RESULT alerts single_ratio={single / floor:.2f} single_per_s={single:.0f}"
                f" floor_per_s={floor:.0f} txn_floor_ratio={single / txn_floor:.2f}"
                f" batched_per_s={batched:.0f} rss_mb={rss_peak:.0f}"
                f" rss_now_mb={rss_now:.0f}"
            )
    finally:
        await emu.close()
        await emulator.stop()


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a shorter run (12 s storm)")
    parser.add_argument(
        "--incident", action="store_true", help="with an open incident grouping each team's alerts"
    )
    args = parser.parse_args()
    run_loop(main(args.quick, args.incident))


if __name__ == "__main__":
    cli()
