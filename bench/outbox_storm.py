"""Outbox storm benchmark: 10,000 sends and edits over 20 group chats against the emulator.

Run: python -m bench.outbox_storm [--rows 10000] [--chats 20] [--per-bot-per-second 100] ...

The emulator enforces the limits given here and Quorum paces with the same numbers. Prints:
429s received (must be 0), delivered calls/s against the limits' maximum, lost rows, the
final state of every card, p99 latency from commit to the Telegram call at low load, and the
bot process's peak RSS. Needs PostgreSQL (QUORUM_BENCH_DATABASE_URL, default the local
server; a fresh database quorum_bench_outbox is created) and Redis on 127.0.0.1:6379 (db 10).
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import resource
import statistics
import time
from multiprocessing.connection import Connection
from typing import Any

from redis.asyncio import Redis
from sqlalchemy import func, select

from bench import fresh_database
from bot.policy import parse_policy
from bot.settings import load_settings
from quorum.app import Quorum, run_loop, settle_heap
from sandbox.emulator import Limits, TelegramEmulator
from storage.db import make_engine, make_sessionmaker, transaction
from storage.models import OutboxItem, TelegramMessage
from storage.outbox import Priority, enqueue_call, enqueue_text, put_message

TOKEN = "987654321:" + "B" * 35
BOT_ID = 987654321
DB_NAME = "quorum_bench_outbox"
REDIS_URL = "redis://127.0.0.1:6379/10"
USER = 5001


def chat_ids(n: int) -> list[int]:
    return [-1002000000000 - i for i in range(n)]


def quorum_child(values: dict[str, Any], policy: dict[str, Any], conn: Connection) -> None:
    """The bot process: runs Quorum until told to stop, then reports its peak RSS (KiB)."""

    async def main() -> None:
        app = Quorum(load_settings(**values), parse_policy(policy))
        await app.start(migrate=False, serve=False)
        settle_heap()  # as `quorum run` does
        conn.send("started")
        await asyncio.to_thread(conn.recv)
        await app.stop()

    run_loop(main())
    conn.send(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def ok_calls(emu: TelegramEmulator, since: int = 0) -> list[dict[str, Any]]:
    return [
        c
        for c in emu.call_log
        if c["seq"] > since
        and c["status"] == 200
        and c["method"] in ("sendMessage", "editMessageText", "editMessageReplyMarkup")
    ]


async def wait_drained(sessions: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        async with sessions() as s:
            left = await s.scalar(
                select(func.count())
                .select_from(OutboxItem)
                .where(OutboxItem.status.in_(("pending", "sending")))
            )
        if not left:
            return True
        await asyncio.sleep(0.25)
    return False


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


async def bench(args: argparse.Namespace) -> None:
    server = os.environ.get(
        "QUORUM_BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
    )
    db_url = await fresh_database(server, DB_NAME)
    redis = Redis.from_url(REDIS_URL)
    await redis.flushdb()
    await redis.aclose()

    limits = Limits(
        per_bot_per_second=args.per_bot_per_second,
        per_chat_per_second=args.per_chat_per_second,
        per_chat_burst=args.per_chat_burst,
        per_group_per_minute=args.per_group_per_minute,
    )
    emu = TelegramEmulator(enforce_limits=True, limits=limits)
    emu_url = await emu.start("127.0.0.1", 0)
    chats = chat_ids(args.chats)
    emu._register_bot(TOKEN, "quorum_bench_bot", "Quorum bench")
    emu._add_user(USER, "Ops", "ops", False)
    for cid in chats:
        emu._add_chat(cid, "supergroup", f"bench {cid}", [USER])

    values: dict[str, Any] = {
        "telegram_token": TOKEN,
        "telegram_api_url": emu_url,
        "telegram_mode": "polling",
        "token_secret": "bench-token-secret-0123456789abcdef",
        "database_url": db_url,
        "redis_url": REDIS_URL,
        "pace_bot_per_second": args.per_bot_per_second,
        "pace_chat_per_second": args.per_chat_per_second,
        "pace_chat_burst": args.per_chat_burst,
        "pace_group_per_minute": args.per_group_per_minute,
        "log_level": "WARNING",
    }
    policy = {
        "timezone": "UTC",
        "teams": {"bench": {"chat_ids": chats, "approvers": [{"telegram_id": USER, "name": "o"}]}},
    }
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=quorum_child, args=(values, policy, child), daemon=True)
    proc.start()
    assert await asyncio.to_thread(parent.recv) == "started"

    engine = make_engine(db_url)
    sessions = make_sessionmaker(engine)
    try:
        # -------------------------------------------------------- low load: latency
        latencies: list[float] = []
        for i in range(args.latency_samples):
            text = f"latency {i}"
            async with transaction(sessions) as s:
                await enqueue_text(s, chats[i % len(chats)], text)
            committed = time.time()
            deadline = time.monotonic() + 10
            call = None
            while call is None and time.monotonic() < deadline:
                await asyncio.sleep(0.002)
                for c in reversed(emu.call_log):
                    if c["params"].get("text") == text:
                        call = c
                        break
            if call is not None:
                latencies.append((call["wall"] - committed) * 1000)
            await asyncio.sleep(1 / args.latency_rate)
        await wait_drained(sessions, 30)

        # -------------------------------------------------------- cards to edit in the storm
        cards: list[int] = []
        async with transaction(sessions) as s:
            for i, cid in enumerate(chats):
                cards.append(
                    await put_message(
                        s,
                        chat_id=cid,
                        purpose="bench",
                        text_html=f"card {i}",
                        reply_markup=None,
                        priority=Priority.CARD,
                    )
                )
        await wait_drained(sessions, 120)
        async with sessions() as s:
            card_rows = {
                m.id: m
                for m in await s.scalars(
                    select(TelegramMessage).where(TelegramMessage.id.in_(cards))
                )
            }

        # -------------------------------------------------------- storm
        await asyncio.sleep(args.per_chat_burst / args.per_chat_per_second + 1)
        seq0 = emu._call_seq
        tmr0 = emu.too_many_requests_total
        every = round(1 / args.edit_share) if args.edit_share > 0 else 0
        n_edits = sum(1 for i in range(args.rows) if every and i % every == 0)
        n_sends = args.rows - n_edits
        last_edit: dict[int, str] = {}
        sends: list[str] = []
        t_enqueue = time.monotonic()
        batch = 500
        for start in range(0, args.rows, batch):
            async with transaction(sessions) as s:
                for i in range(start, min(args.rows, start + batch)):
                    cid = chats[i % len(chats)]
                    if not (every and i % every == 0):
                        text = f"storm {i}"
                        sends.append(text)
                        await enqueue_text(s, cid, text, priority=Priority.ALERT_SEND)
                    else:
                        m = card_rows[cards[i % len(chats)]]
                        text = f"card {i % len(chats)} edit {i}"
                        last_edit[m.chat_id] = text
                        await enqueue_call(
                            s,
                            "editMessageText",
                            {"chat_id": cid, "message_id": m.message_id, "text": text},
                            chat_id=cid,
                            priority=Priority.ALERT_EDIT,
                            kind="bench:edit",
                        )
        enqueue_s = time.monotonic() - t_enqueue
        drained = await wait_drained(sessions, args.timeout)
        calls = ok_calls(emu, seq0)
        storm_429 = emu.too_many_requests_total - tmr0

        # -------------------------------------------------------- check
        async with sessions() as s:
            by_status = dict(
                (
                    await s.execute(
                        select(OutboxItem.status, func.count()).group_by(OutboxItem.status)
                    )
                ).all()
            )
        seen: dict[str, int] = {}
        finals: dict[int, str] = {}
        for cid in chats:
            for shown in emu.chats[cid].messages.values():
                seen[shown.text or ""] = seen.get(shown.text or "", 0) + 1
                if shown.text and shown.text.startswith("card"):
                    finals[cid] = shown.text
        missing = [t for t in sends if seen.get(t, 0) == 0]
        twice = [t for t in sends if seen.get(t, 0) > 1]
        wrong_cards = [cid for cid, text in last_edit.items() if finals.get(cid) != text]
    finally:
        parent.send("stop")
        rss_kib = await asyncio.to_thread(parent.recv)
        proc.join(10)
        await engine.dispose()
        await emu.stop()

    span = calls[-1]["ts"] - calls[0]["ts"] if len(calls) > 1 else float("nan")
    rate = (len(calls) - 1) / span if len(calls) > 1 else 0.0
    per_chat = min(args.per_chat_per_second, args.per_group_per_minute / 60)
    theoretical = min(args.per_bot_per_second, args.chats * per_chat)
    print(f"emulator limits: {args.per_bot_per_second}/s bot, {args.per_chat_per_second}/s chat")
    print(f"  (burst {args.per_chat_burst}), {args.per_group_per_minute}/min per group")
    print(f"storm: {args.rows} rows ({n_sends} sends, {n_edits} edits) over {args.chats} groups")
    print(f"  enqueued in {enqueue_s:.1f} s; drained: {drained}; outbox by status: {by_status}")
    print(f"  429 answers received: {storm_429} (all runs: {emu.too_many_requests_total})")
    print(f"  delivered calls: {len(calls)} in {span:.1f} s = {rate:.1f} calls/s")
    print(f"  theoretical max: {theoretical:.1f} calls/s; ratio {rate / theoretical:.1%}")
    print(f"  sends missing: {len(missing)}, sent twice: {len(twice)}")
    print(f"  cards whose final text is not the last edit: {len(wrong_cards)}")
    if latencies:
        print(
            f"low load ({args.latency_samples} sends at {args.latency_rate}/s): commit -> "
            f"Telegram call p50 {statistics.median(latencies):.1f} ms, "
            f"p99 {pct(latencies, 0.99):.1f} ms, max {max(latencies):.1f} ms"
        )
    print(f"bot process peak RSS: {rss_kib / 1024:.1f} MiB")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--rows", type=int, default=10_000)
    p.add_argument("--chats", type=int, default=20)
    p.add_argument("--edit-share", type=float, default=0.2)
    p.add_argument("--per-bot-per-second", type=float, default=100)
    p.add_argument("--per-chat-per-second", type=float, default=10)
    p.add_argument("--per-chat-burst", type=int, default=3)
    p.add_argument("--per-group-per-minute", type=int, default=600)
    p.add_argument("--latency-samples", type=int, default=200)
    p.add_argument("--latency-rate", type=float, default=10)
    p.add_argument("--timeout", type=float, default=600)
    run_loop(bench(p.parse_args()))


if __name__ == "__main__":
    main()
