"""The sealer: chains finished audit rows in order, and signs the chain head now and then.

One sealer works at a time across replicas (a transaction-level advisory lock); the vote path
keeps inserting its audit row in its own transaction and never waits for it.
"""

from __future__ import annotations

import asyncio
import html
import json
import logging
from datetime import UTC, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.audit import chain
from bot.runtime import Runtime
from bot.settings import Settings
from storage import audit as repo
from storage.db import transaction
from storage.outbox import Priority, enqueue_text

log = logging.getLogger(__name__)

BATCH = 5000


async def seal_once(sessions: async_sessionmaker[AsyncSession], batch: int = BATCH) -> int:
    """Chain up to `batch` rows whose transactions have ended; how many were sealed (0 also
    when another sealer holds the lock)."""
    async with transaction(sessions) as session:
        if not await repo.take_sealer_lock(session):
            return 0
        head = await repo.chain_head(session)
        rows = await repo.unsealed(session, head, batch)
        if not rows:
            return 0
        prev, first = (
            (chain.GENESIS, 1) if head is None else (head.hash or b"", (head.seq or 0) + 1)
        )
        return await repo.seal(session, chain.chain(prev, first, rows))


async def seal_all(sessions: async_sessionmaker[AsyncSession], batch: int = BATCH) -> int:
    """Seal until nothing more is ready (for tests, the CLI and benchmarks)."""
    total = 0
    while sealed := await seal_once(sessions, batch):
        total += sealed
    return total


def checkpoint_text(checkpoint: chain.Checkpoint) -> str:
    """The audit chat's message: the checkpoint as the JSON `quorum audit verify
    --checkpoint FILE` reads."""
    document = json.dumps(checkpoint.to_json(), indent=1)
    return f"🔏 <b>Audit checkpoint</b> seq {checkpoint.seq}\n<pre>{html.escape(document)}</pre>"


async def make_checkpoint(
    sessions: async_sessionmaker[AsyncSession], settings: Settings, *, force: bool = False
) -> chain.Checkpoint | None:
    """Sign and store the chain head (posting it to the audit chat if one is set). Unless
    `force`d, only when the head moved and the last checkpoint is older than the interval.
    None without a key, without a sealed row, or when nothing is due."""
    secret = settings.audit_signing_key.get_secret_value()
    if not secret:
        return None
    key = chain.load_private_key(secret)
    async with transaction(sessions) as session:
        # The sealer's lock: one replica signs, and the head cannot move meanwhile. On demand
        # it waits for a running round (a replica's sealer) to end rather than giving up.
        if not await repo.take_sealer_lock(session, wait=force):
            return None
        head = await repo.chain_head(session)
        if head is None or head.seq is None or head.hash is None:
            return None
        now = datetime.now(UTC)
        latest = await repo.latest_checkpoint(session)
        if not force and latest is not None:
            interval = timedelta(seconds=settings.audit_checkpoint_seconds)
            if latest.seq == head.seq or now - latest.signed_at < interval:
                return None
        signed = chain.sign(key, head.seq, head.hash, now)
        await repo.add_checkpoint(
            session, signed.seq, signed.hash, signed.signed_at, signed.key_id, signed.signature
        )
        if settings.audit_chat_id is not None:
            await enqueue_text(
                session, settings.audit_chat_id, checkpoint_text(signed), priority=Priority.REPLY
            )
    log.info("audit checkpoint signed at seq %s", signed.seq)
    return signed


async def run_sealer(rt: Runtime) -> None:
    """The sealer worker: seal what is ready, checkpoint when due, rest when idle. A failure
    ends it; the app's supervisor logs it and starts it again."""
    while True:
        sealed = await seal_once(rt.sessions)
        await make_checkpoint(rt.sessions, rt.settings)
        if sealed < BATCH:
            await asyncio.sleep(rt.settings.audit_seal_interval_seconds)
