"""Benchmarks: scripts that print their figures (run with python -m bench.NAME)."""

from __future__ import annotations

import asyncio

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
