"""Benchmarks: scripts that print their figures (run with python -m bench.NAME)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from pathlib import Path

import asyncpg
from sqlalchemy.engine import make_url

from bot.app import run_migrations
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


def _cpu(pid: int, *, system_only: bool = False) -> float:
    try:
        # Field 2 (comm) may hold spaces; the fields after its ")" are fixed.
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    ticks = int(fields[12]) if system_only else int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


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
    """CPU seconds (user + system) that named groups of processes spend between two readings.

    A group is a callable returning its pids now, so PostgreSQL backends that start during
    the measured window are counted (from zero) too.
    """

    def __init__(self, groups: dict[str, Callable[[], list[int]]]) -> None:
        self.groups = groups
        self.start: dict[str, dict[int, float]] = {}
        self.start_sys: dict[str, dict[int, float]] = {}

    def reset(self) -> None:
        self.start = {name: {p: _cpu(p) for p in pids()} for name, pids in self.groups.items()}
        self.start_sys = {
            name: {p: _cpu(p, system_only=True) for p in pids()}
            for name, pids in self.groups.items()
        }

    def spent(self, *, system_only: bool = False) -> dict[str, float]:
        out = {}
        start = self.start_sys if system_only else self.start
        for name, pids in self.groups.items():
            before = start.get(name, {})
            out[name] = sum(
                max(0.0, _cpu(p, system_only=system_only) - before.get(p, 0.0)) for p in pids()
            )
        return out

    def line(self, events: int) -> str:
        """CPU ms per event for each group, with the kernel's share (system time) in brackets."""
        spent, kernel = self.spent(), self.spent(system_only=True)
        n = max(events, 1)
        per = ", ".join(
            f"{k} {v * 1000 / n:.2f} ({kernel[k] * 1000 / n:.2f})" for k, v in spent.items()
        )
        return (
            f"  CPU ms per tap (of which kernel): {per}; total {sum(spent.values()) * 1000 / n:.2f}"
        )
