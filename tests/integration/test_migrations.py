"""Migration stairway: every revision goes up, down and up again; models match the schema."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from storage.db import to_async_url, to_sync_dsn
from storage.models import Base
from tests.support import ROOT, admin_sql, with_db


def alembic_config(url: str) -> Config:
    """The same programmatic configuration quorum.app.run_migrations uses."""
    cfg = Config()
    cfg.set_main_option("script_location", str(ROOT / "migrations"))
    cfg.attributes["url"] = url
    cfg.attributes["configure_logging"] = False
    return cfg


def revisions(cfg: Config) -> list[str]:
    """Revision ids from the first to the head."""
    script = ScriptDirectory.from_config(cfg)
    return [r.revision for r in reversed(list(script.walk_revisions("base", "heads")))]


@pytest.fixture
async def empty_db(pg_server_url: str) -> AsyncIterator[str]:
    """A fresh database that no migration has touched (not the migrated template)."""
    name = f"quorum_stairway_{os.getpid()}"
    await admin_sql(pg_server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await admin_sql(pg_server_url, f'CREATE DATABASE "{name}"')
    yield with_db(pg_server_url, name)
    await admin_sql(pg_server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def fetch(url: str, sql: str) -> list[Any]:
    conn = await asyncpg.connect(to_sync_dsn(url))
    try:
        return [tuple(r) for r in await conn.fetch(sql)]
    finally:
        await conn.close()


async def current(url: str) -> str | None:
    rows = await fetch(url, "SELECT version_num FROM alembic_version")
    return rows[0][0] if rows else None


async def user_objects(url: str) -> dict[str, list[Any]]:
    """Everything a migration may leave behind in the public schema."""
    return {
        "tables": await fetch(
            url,
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' "
            "AND tablename <> 'alembic_version' ORDER BY 1",
        ),
        "types": await fetch(
            url,
            "SELECT t.typname FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace "
            "WHERE n.nspname = 'public' AND t.typtype IN ('e', 'd', 'c') "
            "AND NOT EXISTS (SELECT 1 FROM pg_class c WHERE c.reltype = t.oid) ORDER BY 1",
        ),
        "sequences": await fetch(
            url, "SELECT sequence_name FROM information_schema.sequences ORDER BY 1"
        ),
        "functions": await fetch(
            url,
            "SELECT p.proname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
            "WHERE n.nspname = 'public' ORDER BY 1",
        ),
    }


async def test_stairway_up_down_up_then_base_and_head(empty_db: str) -> None:
    cfg = alembic_config(empty_db)
    revs = revisions(cfg)
    assert revs[:2] == ["0001", "0002"]
    previous: str | None = None
    for rev in revs:
        await asyncio.to_thread(command.upgrade, cfg, rev)
        assert await current(empty_db) == rev
        await asyncio.to_thread(command.downgrade, cfg, "-1")
        assert await current(empty_db) == previous
        await asyncio.to_thread(command.upgrade, cfg, rev)
        assert await current(empty_db) == rev
        previous = rev

    await asyncio.to_thread(command.downgrade, cfg, "base")
    assert await current(empty_db) is None
    assert await user_objects(empty_db) == {
        "tables": [],
        "types": [],
        "sequences": [],
        "functions": [],
    }

    await asyncio.to_thread(command.upgrade, cfg, "head")
    assert await current(empty_db) == revs[-1]
    tables = {t for (t,) in (await user_objects(empty_db))["tables"]}
    assert tables == set(Base.metadata.tables)


def _diff(connection: Connection) -> list[Any]:
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    return list(compare_metadata(context, Base.metadata))


async def test_models_match_migrated_schema(db_url: str) -> None:
    engine = create_async_engine(to_async_url(db_url))
    try:
        async with engine.connect() as conn:
            diff = await conn.run_sync(_diff)
    finally:
        await engine.dispose()
    assert diff == []


async def test_database_at_head(db_url: str) -> None:
    cfg = alembic_config(db_url)
    script = ScriptDirectory.from_config(cfg)
    assert script.get_heads() == [await current(db_url)]


async def test_no_timestamp_without_time_zone_in_database(db_url: str) -> None:
    rows = await fetch(
        db_url,
        "SELECT table_name, column_name FROM information_schema.columns "
        "WHERE table_schema = 'public' AND data_type = 'timestamp without time zone'",
    )
    assert rows == []
