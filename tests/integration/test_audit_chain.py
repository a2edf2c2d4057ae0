"""The audit hash chain: the sealer's order under interleaved transactions, the seal-only
trigger, and verify catching a superuser's tampering."""

from __future__ import annotations

import asyncio
import itertools
import random
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import asyncpg
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.audit import chain
from bot.audit.sealer import make_checkpoint, seal_all, seal_once
from bot.audit.verify import verify
from bot.settings import load_settings
from storage import audit
from storage.db import make_engine, make_sessionmaker, to_sync_dsn, transaction
from tests.support import wait_until

SIGNING_KEY = chain.new_private_key()


@pytest.fixture
async def sessions(db_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = make_engine(db_url, pool_size=4)
    yield make_sessionmaker(engine)
    await engine.dispose()


@pytest.fixture
async def superuser(db_url: str) -> AsyncIterator[asyncpg.Connection]:
    """The owning superuser, with triggers off (session_replication_role = replica): what a
    DBA, a restored backup or a careless migration can do."""
    conn = await asyncpg.connect(to_sync_dsn(db_url))
    await conn.execute("SET session_replication_role = replica")
    yield conn
    await conn.close()


async def connect(db_url: str) -> asyncpg.Connection:
    return await asyncpg.connect(to_sync_dsn(db_url))


async def write(sessions: async_sessionmaker[AsyncSession], n: int, event: str = "t.row") -> None:
    async with transaction(sessions) as session:
        await audit.record_many(
            session, [{"event": event, "actor": "tester", "detail": {"n": i}} for i in range(n)]
        )


async def chain_of(db_url: str) -> list[tuple[int, str]]:
    conn = await connect(db_url)
    try:
        rows = await conn.fetch(
            "SELECT seq, event FROM audit_log WHERE seq IS NOT NULL ORDER BY seq"
        )
    finally:
        await conn.close()
    return [(r["seq"], r["event"]) for r in rows]


async def seq_of(db_url: str, event: str) -> int | None:
    conn = await connect(db_url)
    try:
        return await conn.fetchval("SELECT seq FROM audit_log WHERE event = $1", event)  # type: ignore[no-any-return]
    finally:
        await conn.close()


def signer() -> object:
    return load_settings(audit_signing_key=SIGNING_KEY, database_url="postgresql://x@h/d")


# ---------------------------------------------------------------- order


async def sealed_through(
    db_url: str, sessions: async_sessionmaker[AsyncSession], seq: int
) -> list[tuple[int, str]]:
    """Seal until the chain reaches `seq`. Waits, because transactions of other databases on
    the same server (the xmin is cluster-wide) may hold sealing back for a moment."""

    async def reached() -> list[tuple[int, str]] | None:
        await seal_all(sessions)
        got = await chain_of(db_url)
        return got if len(got) >= seq else None

    found: list[tuple[int, str]] = await wait_until(reached, what=f"the chain reaching seq {seq}")
    return found


async def test_a_row_waits_for_every_older_transaction_then_takes_the_next_place(
    db_url: str, sessions: async_sessionmaker[AsyncSession]
) -> None:
    await write(sessions, 2, "t.before")
    slow_a, slow_c, late = [await connect(db_url) for _ in range(3)]
    try:
        # A writes and stays open; B, younger, commits first.
        await slow_a.execute("BEGIN")
        await slow_a.execute("INSERT INTO audit_log (event) VALUES ('t.slow_a')")
        await write(sessions, 1, "t.fast_b")
        # `late` begins before the sealer runs but writes only after it: its xid is younger.
        await late.execute("BEGIN")
        await late.fetchval("SELECT 1")
        assert await sealed_through(db_url, sessions, 2) == [(1, "t.before"), (2, "t.before")]
        assert await seal_all(sessions) == 0
        assert await seq_of(db_url, "t.fast_b") is None  # committed, but behind running A
        await slow_c.execute("BEGIN")
        await slow_c.execute("INSERT INTO audit_log (event) VALUES ('t.slow_c')")
        await slow_a.execute("COMMIT")
        assert len(await sealed_through(db_url, sessions, 4)) == 4
        await late.execute("INSERT INTO audit_log (event) VALUES ('t.late')")
        await late.execute("COMMIT")
        await write(sessions, 1, "t.fast_d")
        assert await seal_all(sessions) == 0  # C still runs: nothing younger may pass it
        assert len(await chain_of(db_url)) == 4
        await slow_c.execute("COMMIT")
        assert len(await sealed_through(db_url, sessions, 7)) == 7
    finally:
        for conn in (slow_a, slow_c, late):
            await conn.close()
    assert [e for _, e in await chain_of(db_url)] == [
        "t.before",
        "t.before",
        "t.slow_a",
        "t.fast_b",
        "t.slow_c",
        "t.late",
        "t.fast_d",
    ]
    verdict = await verify(sessions, None)
    assert (verdict.bad_seq, verdict.rows) == (None, 7)


async def test_interleaved_slow_writers_never_need_a_place_behind_a_sealed_row(
    db_url: str, sessions: async_sessionmaker[AsyncSession]
) -> None:
    """Writers hold their transactions open for random times while the sealer runs: every
    round's rows sort after every earlier round's, so no row was ever owed an earlier place."""
    rng = random.Random(18)
    rounds: list[list[tuple[int, int]]] = []
    writers_done = asyncio.Event()

    async def writer(k: int) -> None:
        conn = await connect(db_url)
        try:
            for _ in range(6):
                async with conn.transaction():
                    await conn.execute(
                        "INSERT INTO audit_log (event, detail) VALUES ('t.w', $1::jsonb)",
                        f'{{"writer": {k}}}',
                    )
                    await conn.execute("SELECT pg_sleep($1)", rng.uniform(0, 0.05))
        finally:
            await conn.close()

    async def sealer() -> None:
        probe = await connect(db_url)
        try:
            while True:
                done = writers_done.is_set()
                before = await probe.fetchval("SELECT coalesce(max(seq), 0) FROM audit_log")
                await seal_once(sessions, batch=7)
                got = await probe.fetch(
                    "SELECT xid::text::numeric AS xid, id FROM audit_log WHERE seq > $1"
                    " ORDER BY seq",
                    before,
                )
                if got:
                    rounds.append([(int(r["xid"]), r["id"]) for r in got])
                elif done and sum(len(r) for r in rounds) == 48:
                    return
        finally:
            await probe.close()

    sealing = asyncio.create_task(sealer())
    await asyncio.gather(*(writer(k) for k in range(8)))
    writers_done.set()
    async with asyncio.timeout(30):  # other databases' transactions may hold it back a moment
        await sealing
    assert sum(len(r) for r in rounds) == 48
    assert len(rounds) > 3, "the sealer should have run between the writers' commits"
    for earlier, later in itertools.pairwise(rounds):
        assert max(earlier) < min(later)
    for one in rounds:
        assert one == sorted(one)
    assert (await verify(sessions, None)).bad_seq is None


async def test_one_sealer_at_a_time(
    db_url: str, sessions: async_sessionmaker[AsyncSession]
) -> None:
    await write(sessions, 3)
    holder = await connect(db_url)
    try:
        await holder.execute("BEGIN")
        assert await holder.fetchval("SELECT pg_try_advisory_xact_lock($1, 0)", audit.SEALER_LOCK)
        assert await seal_once(sessions) == 0
        await holder.execute("COMMIT")
    finally:
        await holder.close()
    assert len(await sealed_through(db_url, sessions, 3)) == 3


# ---------------------------------------------------------------- the seal-only trigger


async def test_trigger_lets_chain_columns_be_set_once_and_nothing_else(
    db_url: str, sessions: async_sessionmaker[AsyncSession]
) -> None:
    await write(sessions, 2)
    owner = await connect(db_url)
    try:
        refused = [
            "UPDATE audit_log SET seq = 100, prev_hash = '\\x00', hash = '\\x00', event = 'x'",
            "UPDATE audit_log SET seq = 100 WHERE id = (SELECT min(id) FROM audit_log)",
        ]
        for sql in refused:
            with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
                await owner.execute(sql)
        await sealed_through(db_url, sessions, 2)
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
            await owner.execute(
                "UPDATE audit_log SET seq = seq + 10, hash = hash, prev_hash = prev_hash"
            )
    finally:
        await owner.close()
    assert [s for s, _ in await chain_of(db_url)] == [1, 2]


# ---------------------------------------------------------------- tampering


async def sealed_log(db_url: str, sessions: async_sessionmaker[AsyncSession], n: int = 6) -> None:
    await write(sessions, n)
    await sealed_through(db_url, sessions, n)


async def test_untouched_chain_verifies(
    db_url: str, sessions: async_sessionmaker[AsyncSession]
) -> None:
    await sealed_log(db_url, sessions)
    verdict = await verify(sessions, None)
    assert verdict.bad_seq is None
    assert verdict.line.startswith("verified 6 rows, head seq 6 ")


@pytest.mark.parametrize(
    ("tamper", "bad", "why"),
    [
        ("UPDATE audit_log SET actor = 'mallory' WHERE seq = 3", 3, "contents"),
        ("UPDATE audit_log SET detail = '{\"n\": 99}' WHERE seq = 4", 4, "contents"),
        ("DELETE FROM audit_log WHERE seq = 2", 2, "missing"),
        (
            "UPDATE audit_log SET seq = -1 WHERE seq = 2;"
            "UPDATE audit_log SET seq = 2 WHERE seq = 5;"
            "UPDATE audit_log SET seq = 5 WHERE seq = -1",
            2,
            "moved",
        ),
        (
            "UPDATE audit_log SET seq = -seq WHERE seq >= 4;"
            "UPDATE audit_log SET seq = 1 - seq WHERE seq < 0;"
            "INSERT INTO audit_log (event, seq, prev_hash, hash)"
            " SELECT 't.forged', 4, hash, sha256(hash) FROM audit_log WHERE seq = 3",
            4,
            "missing",
        ),
    ],
    ids=["edit-actor", "edit-detail", "delete", "swap", "insert"],
)
async def test_verify_names_the_first_tampered_seq(
    db_url: str,
    sessions: async_sessionmaker[AsyncSession],
    superuser: asyncpg.Connection,
    tamper: str,
    bad: int,
    why: str,
) -> None:
    await sealed_log(db_url, sessions)
    await superuser.execute(tamper)
    verdict = await verify(sessions, None)
    assert verdict.bad_seq == bad, verdict.line
    assert why in verdict.problem


async def test_deleting_the_newest_rows_is_caught_by_a_checkpoint(
    db_url: str, sessions: async_sessionmaker[AsyncSession], superuser: asyncpg.Connection
) -> None:
    await sealed_log(db_url, sessions)
    assert await make_checkpoint(sessions, signer(), force=True) is not None  # type: ignore[arg-type]
    await superuser.execute("DELETE FROM audit_log WHERE seq >= 5")
    verdict = await verify(sessions, chain.load_private_key(SIGNING_KEY).public_key())
    assert (verdict.bad_seq, verdict.problem) == (5, "row missing (a checkpoint covers it)")


async def test_a_rewritten_chain_differs_from_the_signed_checkpoint(
    db_url: str, sessions: async_sessionmaker[AsyncSession], superuser: asyncpg.Connection
) -> None:
    """An attacker who recomputes every hash after an edit still cannot re-sign."""
    await sealed_log(db_url, sessions)
    assert await make_checkpoint(sessions, signer(), force=True) is not None  # type: ignore[arg-type]
    await superuser.execute("UPDATE audit_log SET actor = 'mallory' WHERE seq = 2")
    async with sessions() as session, session.begin():
        rows = [r async for r in audit.stream_sealed(session, 1)]
    links = chain.chain(chain.GENESIS, 1, rows)
    for row_id, _, prev, digest in links:
        await superuser.execute(
            "UPDATE audit_log SET prev_hash = $2, hash = $3 WHERE id = $1", row_id, prev, digest
        )
    assert len(links) == 6
    verdict = await verify(sessions, chain.load_private_key(SIGNING_KEY).public_key())
    assert verdict.bad_seq == 6
    assert "differs from the checkpoint" in verdict.problem


async def test_a_forged_checkpoint_signature_is_reported(
    db_url: str, sessions: async_sessionmaker[AsyncSession], superuser: asyncpg.Connection
) -> None:
    await sealed_log(db_url, sessions)
    public = chain.load_private_key(SIGNING_KEY).public_key()
    assert await make_checkpoint(sessions, signer(), force=True) is not None  # type: ignore[arg-type]
    assert (await verify(sessions, public)).checkpoints == 1
    forger = chain.load_private_key(chain.new_private_key())
    fake = chain.sign(forger, 6, bytes(32), datetime.now(UTC))
    await superuser.execute(
        "INSERT INTO audit_checkpoints (seq, hash, signed_at, key_id, signature)"
        " VALUES ($1, $2, $3, $4, $5)",
        fake.seq,
        fake.hash,
        fake.signed_at,
        chain.key_id(public),
        fake.signature,
    )
    verdict = await verify(sessions, public)
    assert (verdict.bad_seq, verdict.problem) == (6, "checkpoint signature does not verify")
