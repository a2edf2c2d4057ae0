"""Benchmarks: scripts that print their figures (run with python -m bench.NAME)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
import asyncpg
from sqlalchemy.engine import make_url

from quorum.app import run_migrations
from storage.db import to_sync_dsn


async def fresh_database(server_url: str, name: str) -> str:
    """Drop and recreate database `name` on the server, migrate it, return its URL."""
    admin = await asyncpg.connect(to_sync_dsn(server_url))
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    url = make_url(server_url).set(database=name).render_as_string(hide_password=False)
    await asyncio.to_thread(run_migrations, url)
    return url


async def _keep(conn: asyncpg.Connection) -> None:
    """A released connection is kept as it is (see floor_pool)."""


async def floor_pool(db_url: str, size: int) -> asyncpg.Pool:
    """`size` open connections for a floor: its statements and nothing else. asyncpg's default
    reset sends a query on every release (pg_advisory_unlock_all, CLOSE ALL, UNLISTEN *,
    RESET ALL), a round trip per unit of work that Quorum's pool does not make; the floors
    leave no session state behind (a transaction still open is rolled back either way)."""
    pool = await asyncpg.create_pool(to_sync_dsn(db_url), min_size=size, max_size=size, reset=_keep)
    assert pool is not None
    return pool


def _cpu(pid: int) -> tuple[float, float]:
    """(user + system, system) CPU seconds the process has used, or zeros if it is gone."""
    try:
        # Field 2 (comm) may hold spaces; the fields after its ")" are fixed.
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0, 0.0
    tick = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / tick, int(fields[12]) / tick


def speed_probe_ms() -> float:
    """CPU ms a fixed pure-Python loop takes: the machine's speed at this moment.

    Machines of this kind change speed over minutes (the same loop took 29 to 57 ms here,
    idle), so figures from two runs compare only next to their probes."""
    best = float("inf")
    for _ in range(3):
        started, acc = time.process_time(), 0
        for i in range(300_000):
            acc += i * i % 7
        best = min(best, (time.process_time() - started) * 1000)
    return best


def pids_named(comm: str) -> list[int]:
    """Every process whose command name is `comm` (PostgreSQL backends, redis-server)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() == comm:
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


class CpuMeter:
    """CPU seconds (user + system, and the kernel's share) that named groups of processes
    spend between two readings.

    A group is a callable returning its pids now, so PostgreSQL backends that start during
    the measured window are counted (from zero) too.
    """

    def __init__(self, groups: dict[str, Callable[[], list[int]]]) -> None:
        self.groups = groups
        self.start: dict[str, dict[int, tuple[float, float]]] = {}

    def reset(self) -> None:
        self.start = {name: {p: _cpu(p) for p in pids()} for name, pids in self.groups.items()}

    def spent(self) -> dict[str, tuple[float, float]]:
        out = {}
        for name, pids in self.groups.items():
            before = self.start.get(name, {})
            total = kernel = 0.0
            for p in pids():
                now, was = _cpu(p), before.get(p, (0.0, 0.0))
                total += max(0.0, now[0] - was[0])
                kernel += max(0.0, now[1] - was[1])
            out[name] = (total, kernel)
        return out

    def line(self, events: int, unit: str = "tap") -> str:
        """CPU ms per event for each group, with the kernel's share (system time) in brackets."""
        spent = self.spent()
        n = max(events, 1)
        per = ", ".join(
            f"{k} {total * 1000 / n:.2f} ({kernel * 1000 / n:.2f})"
            for k, (total, kernel) in spent.items()
        )
        overall = sum(total for total, _ in spent.values()) * 1000 / n
        return f"  CPU ms per {unit} (of which kernel): {per}; total {overall:.2f}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def webhook_env(
    *, token: str, emu_url: str, port: int, db_url: str, redis_url: str, workdir: Path
) -> dict[str, str]:
    """The environment of a `quorum run` in webhook mode against the emulator, its policy in
    workdir/policy.toml."""
    return {
        "QUORUM_TELEGRAM_TOKEN": token,
        "QUORUM_TELEGRAM_API_URL": emu_url,
        "QUORUM_TELEGRAM_MODE": "webhook",
        "QUORUM_WEBHOOK_URL": f"http://127.0.0.1:{port}/telegram/webhook",
        "QUORUM_WEBHOOK_SECRET": "bench_secret",
        "QUORUM_TOKEN_SECRET": "bench-token-secret-0123456789abcdef-xyz",
        "QUORUM_DATABASE_URL": db_url,
        "QUORUM_REDIS_URL": redis_url,
        "QUORUM_HTTP_PORT": str(port),
        "QUORUM_POLICY_FILE": str(workdir / "policy.toml"),
        "QUORUM_DATA_DIR": str(workdir),
        "QUORUM_LOG_LEVEL": "WARNING",
    }


@contextlib.asynccontextmanager
async def quorum_process(
    env: dict[str, str], port: int, workdir: Path
) -> AsyncIterator[subprocess.Popen[bytes]]:
    """`quorum run` in a subprocess (its log in workdir/quorum.log), yielded once /healthz
    answers 200; stopped with SIGTERM on exit."""
    log = (workdir / "quorum.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "quorum.cli", "run"],
        env={**os.environ, **env},
        stdout=log,
        stderr=log,
        cwd=os.getcwd(),
    )
    base = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as http:
            for _ in range(300):
                try:
                    async with http.get(base + "/healthz") as resp:
                        if resp.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                if proc.poll() is not None:
                    raise SystemExit(f"quorum exited; see {workdir / 'quorum.log'}")
                await asyncio.sleep(0.1)
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def peak_rss_mb(pid: int) -> tuple[float, float]:
    """(peak, current) resident set size of a process in MiB (VmHWM, VmRSS)."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmHWM", "VmRSS"):
            fields[key] = int(value.split()[0]) / 1024
    return fields.get("VmHWM", 0.0), fields.get("VmRSS", 0.0)


class PySpy:
    """py-spy sampling one process while in the block (BENCH_PYSPY=path: raw stacks there),
    then its top entries by own samples, as `py-spy top` shows them. Off without the variable
    or without py-spy (pip install py-spy; the dev extras have it)."""

    def __init__(self, pid: int, label: str) -> None:
        self.pid, self.label = pid, label
        base = os.environ.get("BENCH_PYSPY", "")
        self.path = f"{base}.{label}.txt" if base else ""
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> PySpy:
        exe = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
        if self.path and Path(exe).exists():
            self.proc = subprocess.Popen(
                [
                    *(exe, "record", "--pid", str(self.pid), "--format", "raw"),
                    *("--rate", "250", "--nonblocking", "--output", self.path),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGINT)
        self.proc.wait(30)
        print(f"  py-spy top ({self.label}; raw stacks in {self.path}):")
        for line in top_entries(Path(self.path)):
            print("    " + line)


def top_entries(path: Path, n: int = 15) -> list[str]:
    """The functions most often on top of the stack (own) and anywhere on it (total)."""
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    samples = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = [
            f.split(" (", 1)[0] + " " + f.rsplit("/", 1)[-1].rstrip(")")
            for f in stack.split(";")[1:]
        ]
        k = int(count)
        samples += k
        if frames:
            own[frames[-1]] += k
        for f in set(frames):
            total[f] += k
    out = [f"{'own%':>6} {'total%':>6}  function (file:line)"]
    for name, k in own.most_common(n):
        out.append(f"{100 * k / samples:6.1f} {100 * total[name] / samples:6.1f}  {name}")
    return out
