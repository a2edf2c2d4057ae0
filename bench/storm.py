"""Alert storm benchmark: how soon each alert shows in one team chat at Telegram's real limits.

Run: python -m bench.storm [--only 1|2]

Two storms, each into its own team and group chat, the emulator enforcing Telegram's limits
(30/s per bot, 1/s per chat with a burst of 3, 20/min per group) and Quorum (`quorum run` in a
subprocess, webhook mode) pacing itself:

1. 50 alerts, each its own Alertmanager group (its own alertname, its own POST), re-sent every
   3 s for 60 s, then resolved: 1,050 POSTs.
2. 10 alert names x 5 instances, one POST per name (Alertmanager grouping by alertname),
   re-sent every 3 s for 60 s, then resolved: 210 POSTs of 5 alerts.

The chat is read every 0.2 s. Per alert name: seconds from its first POST until a bot message
names it (its card, its group's card or a storm digest), and from its resolve POST until every
bot message naming it shows it resolved. Prints p50/p99/max, messages and calls used, 429s,
and the sum of stored hit counts against the firing alerts posted. Needs the local PostgreSQL
(a fresh database quorum_bench_storm) and Redis (db 13).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import statistics
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
from redis.asyncio import Redis

from bench import free_port, fresh_database, quorum_process, webhook_env
from bench.alerts import key_for, post
from quorum.app import run_loop
from sandbox.emulator import EmulatorClient, TelegramEmulator
from storage.db import to_sync_dsn

TOKEN = "876543211:" + "D" * 35
BOT_ID = 876543211
DB_NAME = "quorum_bench_storm"
REDIS_URL = "redis://127.0.0.1:6379/13"
SERVER_URL = os.environ.get("QUORUM_BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432")
USER = 7002
CHATS = {"storm1": -1003100000001, "storm2": -1003100000002}
REPEAT_SECONDS = 3.0
FIRING_SECONDS = 60.0
DRAIN_TIMEOUT = 150.0  # after the last resolve POST
POLL_SECONDS = 0.2


@dataclass
class Storm:
    team: str
    # alert name -> its instances
    names: dict[str, list[str]]
    first_post: dict[str, float] = field(default_factory=dict)
    resolve_post: dict[str, float] = field(default_factory=dict)
    visible: dict[str, float] = field(default_factory=dict)
    resolved: dict[str, float] = field(default_factory=dict)
    firing_posted: int = 0
    posts: int = 0


def policy_toml() -> str:
    lines = ['timezone = "UTC"', ""]
    for team, chat in CHATS.items():
        digest = hashlib.sha256(key_for(team).encode()).hexdigest()
        lines += [
            f"[teams.{team}]",
            f"chat_ids = [{chat}]",
            f'approvers = [{{ telegram_id = {USER}, name = "oncall" }}]',
            f'api_keys = [{{ name = "bench", sha256 = "{digest}" }}]',
            "",
        ]
    return "\n".join(lines)


def body(name: str, instances: list[str], status: str) -> bytes:
    alerts: list[dict[str, Any]] = []
    for inst in instances:
        labels = {"alertname": name, "instance": inst, "job": "node", "severity": "critical"}
        alerts.append(
            {
                "status": status,
                "labels": labels,
                "annotations": {"summary": f"{name} on {inst}"},
                "startsAt": "2026-01-01T10:00:00.000Z",
                "endsAt": "2026-01-01T11:00:00.000Z"
                if status == "resolved"
                else "0001-01-01T00:00:00Z",
                "fingerprint": hashlib.sha256(f"{name}{inst}".encode()).hexdigest()[:16],
            }
        )
    return json.dumps(
        {
            "version": "4",
            "groupKey": f'{{}}:{{alertname="{name}"}}',
            "truncatedAlerts": 0,
            "status": status,
            "receiver": "quorum",
            "groupLabels": {"alertname": name},
            "commonLabels": {"alertname": name},
            "commonAnnotations": {},
            "externalURL": "http://alertmanager:9093",
            "alerts": alerts,
        }
    ).encode()


def shows_resolved(name: str, text: str) -> bool:
    """Whether this bot message, which names the alert, shows it resolved: a card's first line
    says RESOLVED; a storm digest's line for it starts with ✅."""
    if text.startswith("🌪"):
        return all(line.startswith("✅") for line in text.splitlines() if name in line)
    return "RESOLVED" in text.splitlines()[0]


async def watch(emu: EmulatorClient, chat: int, storm: Storm, stop: asyncio.Event) -> None:
    """Read the chat every POLL_SECONDS and note when each name shows, and shows resolved."""
    while not stop.is_set():
        now = time.monotonic()
        texts = [str(m["text"]) for m in await emu.messages(chat) if m["from_id"] == BOT_ID]
        for name in storm.names:
            naming = [t for t in texts if name in t]
            if naming and name not in storm.visible:
                storm.visible[name] = now
            if (
                name in storm.resolve_post
                and name not in storm.resolved
                and naming
                and all(shows_resolved(name, t) for t in naming)
            ):
                storm.resolved[name] = now
        if len(storm.resolved) == len(storm.names):
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(POLL_SECONDS):
                await stop.wait()


async def fire(http: aiohttp.ClientSession, base: str, storm: Storm) -> None:
    """Each name re-sent every REPEAT_SECONDS for FIRING_SECONDS (names spread over the
    cycle), then each resolved at its own offset."""
    url = base + "/api/v1/alerts/alertmanager"
    key = key_for(storm.team)
    statuses: Counter[int] = Counter()
    names = list(storm.names)
    rounds = int(FIRING_SECONDS / REPEAT_SECONDS)
    start = time.monotonic()
    schedule = sorted(
        (r * REPEAT_SECONDS + i * REPEAT_SECONDS / len(names), name, "firing")
        for r in range(rounds)
        for i, name in enumerate(names)
    )
    schedule += [
        (FIRING_SECONDS + i * REPEAT_SECONDS / len(names), name, "resolved")
        for i, name in enumerate(names)
    ]
    tasks: set[asyncio.Task[None]] = set()
    for at, name, status in schedule:
        delay = start + at - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        now = time.monotonic()
        if status == "firing":
            storm.first_post.setdefault(name, now)
            storm.firing_posted += len(storm.names[name])
        else:
            storm.resolve_post[name] = now
        storm.posts += 1
        task = asyncio.create_task(
            post(http, url, body(name, storm.names[name], status), key, statuses)
        )
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    await asyncio.gather(*tasks)
    bad = {s: n for s, n in statuses.items() if s >= 300}
    if bad:
        print(f"    HTTP answers other than 2xx: {bad}")


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def run_storm(
    http: aiohttp.ClientSession, base: str, emu: EmulatorClient, db_url: str, storm: Storm
) -> dict[str, float]:
    chat = CHATS[storm.team]
    before = await emu.stats()
    calls_before = sum(before["calls_by_method"].values())
    r429_before = before["too_many_requests_total"]
    stop = asyncio.Event()
    watcher = asyncio.create_task(watch(emu, chat, storm, stop))
    await fire(http, base, storm)
    last_resolve = max(storm.resolve_post.values())
    try:
        async with asyncio.timeout(DRAIN_TIMEOUT):
            await asyncio.shield(watcher)
    except TimeoutError:
        stop.set()
        await watcher
    after = await emu.stats()
    messages = sum(1 for m in await emu.messages(chat) if m["from_id"] == BOT_ID)
    conn = await asyncpg.connect(to_sync_dsn(db_url))
    try:
        hits = await conn.fetchval(
            "SELECT coalesce(sum(hit_count), 0) FROM alerts a JOIN teams t ON t.id = a.team_id"
            " WHERE t.name = $1",
            storm.team,
        )
    finally:
        await conn.close()
    vis = {n: storm.visible[n] - storm.first_post[n] for n in storm.names if n in storm.visible}
    res = {n: storm.resolved[n] - storm.resolve_post[n] for n in storm.names if n in storm.resolved}
    print("    name        visible_s  resolved_s")
    for name in storm.names:
        v = f"{vis[name]:9.1f}" if name in vis else "    never"
        r = f"{res[name]:10.1f}" if name in res else "     never"
        print(f"    {name:<10} {v}  {r}")
    for label, values in (("visible", vis), ("resolved", res)):
        if values:
            xs = list(values.values())
            print(
                f"    {label}: p50 {statistics.median(xs):.1f} s, p99 {pct(xs, 0.99):.1f} s,"
                f" max {max(xs):.1f} s over {len(xs)}/{len(storm.names)} names"
            )
    drained = max(storm.resolved.values(), default=time.monotonic()) - last_resolve
    calls = sum(after["calls_by_method"].values()) - calls_before
    r429 = after["too_many_requests_total"] - r429_before
    lost = 2 * len(storm.names) - len(vis) - len(res)
    print(
        f"    {storm.posts} POSTs; bot messages in the chat {messages}; Bot API calls {calls};"
        f" 429s {r429}; last resolve shown {drained:.1f} s after the last resolve POST;"
        f" hit counts stored {hits} (firing alerts posted {storm.firing_posted})"
    )
    return {
        "visible_max_s": max(vis.values(), default=float("inf")),
        "resolved_max_s": max(res.values(), default=float("inf")),
        "messages": messages,
        "calls": calls,
        "r429": r429,
        "lost": lost + (0 if hits == storm.firing_posted else 1),
    }


def storms(only: int | None) -> list[Storm]:
    one = Storm("storm1", {f"StormA{i:02d}": ["db-1:9100"] for i in range(50)})
    two = Storm(
        "storm2", {f"StormB{i:02d}": [f"web-{j}:9100" for j in range(5)] for i in range(10)}
    )
    return [s for n, s in ((1, one), (2, two)) if only in (None, n)]


async def main(only: int | None) -> None:
    db_url = await fresh_database(SERVER_URL + "/postgres", DB_NAME)
    redis = Redis.from_url(REDIS_URL)
    await redis.flushdb()
    await redis.aclose()
    emulator = TelegramEmulator(enforce_limits=True)
    emu_url = await emulator.start("127.0.0.1", 0)
    emu = EmulatorClient(emu_url)
    await emu.add_bot(TOKEN, username="quorum_storm_bot", first_name="Quorum")
    await emu.add_user(USER, "Oncall", username="oncall")
    for team, chat in CHATS.items():
        await emu.add_chat(chat, "supergroup", title=team, members=[USER])
    port = free_port()
    workdir = Path(tempfile.mkdtemp(prefix="quorum-bench-storm-"))
    policy = workdir / "policy.toml"
    policy.write_text(policy_toml())
    env = webhook_env(
        token=TOKEN, emu_url=emu_url, port=port, db_url=db_url, redis_url=REDIS_URL, workdir=workdir
    )
    base = f"http://127.0.0.1:{port}"
    results = []
    try:
        async with quorum_process(env, port, workdir), aiohttp.ClientSession() as http:
            print(f"bench.storm on {os.cpu_count()} CPUs; the emulator at Telegram's limits")
            for n, storm in enumerate(storms(only), 1):
                per = len(next(iter(storm.names.values())))
                print(f"[{n}] {storm.team}: {len(storm.names)} alert names x {per} instance(s)")
                results.append(await run_storm(http, base, emu, db_url, storm))
    finally:
        await emu.close()
        await emulator.stop()
    print(
        "RESULT storm"
        f" visible_max_s={max(r['visible_max_s'] for r in results):.1f}"
        f" resolved_max_s={max(r['resolved_max_s'] for r in results):.1f}"
        f" messages={sum(int(r['messages']) for r in results)}"
        f" calls={sum(int(r['calls']) for r in results)}"
        f" r429={sum(int(r['r429']) for r in results)}"
        f" lost={sum(int(r['lost']) for r in results)}"
    )


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", type=int, choices=(1, 2), help="run one of the two storms")
    args = parser.parse_args()
    run_loop(main(args.only))


if __name__ == "__main__":
    cli()
