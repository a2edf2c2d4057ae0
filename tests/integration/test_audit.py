"""The audit log is append-only: a trigger refuses changes and the app role lacks the grants."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from sqlalchemy import select
from sqlalchemy.engine import make_url

from storage import audit
from storage.db import make_engine, make_sessionmaker, to_sync_dsn, transaction
from storage.models import AuditEntry

LOGIN_ROLE = "quorum_test_login"
CHANGES = [
    "UPDATE audit_log SET event = 'forged'",
    "DELETE FROM audit_log",
    "TRUNCATE audit_log",
]


@pytest.fixture
async def owner(db_url: str) -> AsyncIterator[asyncpg.Connection]:
    """The migrating (superuser, owning) connection with two audit rows in the log."""
    conn = await asyncpg.connect(to_sync_dsn(db_url))
    await conn.execute(
        "INSERT INTO audit_log (event, actor, detail) VALUES "
        "('test.one', 'tester', '{\"n\": 1}'), ('test.two', 'tester', '{\"n\": 2}')"
    )
    yield conn
    await conn.close()


@pytest.fixture
async def app_role(db_url: str, owner: asyncpg.Connection) -> AsyncIterator[asyncpg.Connection]:
    """A login role that is only a member of quorum_app, as the README tells operators to use."""
    await owner.execute(
        f"""
        DO $$
        BEGIN
            IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{LOGIN_ROLE}') THEN
                CREATE ROLE {LOGIN_ROLE} LOGIN IN ROLE quorum_app;
            END IF;
        END $$;
        """
    )
    url = make_url(to_sync_dsn(db_url)).set(username=LOGIN_ROLE, password=None)
    try:
        conn = await asyncpg.connect(url.render_as_string(hide_password=False))
    except asyncpg.InvalidAuthorizationSpecificationError:
        # The server asks for a password: act as the role over the owner's connection.
        conn = await asyncpg.connect(to_sync_dsn(db_url))
        await conn.execute(f"SET SESSION AUTHORIZATION {LOGIN_ROLE}")
    assert await conn.fetchval("SELECT current_user") == LOGIN_ROLE
    assert not await conn.fetchval("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
    yield conn
    await conn.close()


async def events(conn: asyncpg.Connection) -> list[str]:
    return [r["event"] for r in await conn.fetch("SELECT event FROM audit_log ORDER BY id")]


async def test_record_inserts_an_audit_row_with_utc_timestamp(db_url: str) -> None:
    engine = make_engine(db_url)
    sessions = make_sessionmaker(engine)
    try:
        before = datetime.now(UTC)
        async with transaction(sessions) as session:
            await audit.record(
                session, "test.recorded", actor="alice", actor_telegram_id=1001, reason="<b>x</b>"
            )
        async with sessions() as session:
            entry = (
                await session.scalars(select(AuditEntry).where(AuditEntry.event == "test.recorded"))
            ).one()
    finally:
        await engine.dispose()
    assert entry.actor == "alice"
    assert entry.actor_telegram_id == 1001
    assert entry.detail == {"reason": "<b>x</b>"}
    assert entry.at.tzinfo is not None
    assert entry.at.utcoffset() == timedelta(0)
    assert before - timedelta(seconds=5) <= entry.at <= datetime.now(UTC) + timedelta(seconds=5)


async def test_audit_row_rolls_back_with_its_transaction(db_url: str) -> None:
    engine = make_engine(db_url)
    sessions = make_sessionmaker(engine)
    try:

        async def failing_change() -> None:
            async with transaction(sessions) as session:
                await audit.record(session, "test.rolled_back")
                raise RuntimeError("the change failed")

        with pytest.raises(RuntimeError):
            await failing_change()
        async with sessions() as session:
            found = await session.scalars(
                select(AuditEntry).where(AuditEntry.event == "test.rolled_back")
            )
            assert found.all() == []
    finally:
        await engine.dispose()


@pytest.mark.parametrize("sql", CHANGES, ids=["update", "delete", "truncate"])
async def test_trigger_refuses_changes_even_for_the_owner(
    owner: asyncpg.Connection, sql: str
) -> None:
    assert await owner.fetchval("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
        await owner.execute(sql)
    assert await events(owner) == ["test.one", "test.two"]


async def test_owner_may_still_insert(owner: asyncpg.Connection) -> None:
    await owner.execute("INSERT INTO audit_log (event) VALUES ('test.three')")
    assert await events(owner) == ["test.one", "test.two", "test.three"]


@pytest.mark.parametrize("sql", CHANGES, ids=["update", "delete", "truncate"])
async def test_app_role_has_no_grant_to_change(
    app_role: asyncpg.Connection, owner: asyncpg.Connection, sql: str
) -> None:
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="permission denied"):
        await app_role.execute(sql)
    assert await events(owner) == ["test.one", "test.two"]


async def test_app_role_may_insert_and_select(app_role: asyncpg.Connection) -> None:
    await app_role.execute("INSERT INTO audit_log (event, actor) VALUES ('test.by_app', 'quorum')")
    assert await events(app_role) == ["test.one", "test.two", "test.by_app"]


async def test_app_role_cannot_disable_the_trigger(app_role: asyncpg.Connection) -> None:
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await app_role.execute("ALTER TABLE audit_log DISABLE TRIGGER audit_log_no_update_delete")


async def test_app_role_can_use_every_other_table(app_role: asyncpg.Connection) -> None:
    rows = await app_role.fetch(
        """
        SELECT tablename,
               has_table_privilege(current_user, format('%I', tablename), 'SELECT') AS s,
               has_table_privilege(current_user, format('%I', tablename), 'INSERT') AS i,
               has_table_privilege(current_user, format('%I', tablename), 'UPDATE') AS u,
               has_table_privilege(current_user, format('%I', tablename), 'DELETE') AS d
        FROM pg_tables WHERE schemaname = 'public' AND tablename <> 'alembic_version'
        """
    )
    grants = {r["tablename"]: (r["s"], r["i"], r["u"], r["d"]) for r in rows}
    assert grants.pop("audit_log") == (True, True, False, False)
    assert grants.pop("audit_checkpoints") == (True, True, False, False)
    assert grants, "no tables?"
    missing = {t: g for t, g in grants.items() if g != (True, True, True, True)}
    assert missing == {}
    # An UPDATE elsewhere really works for the role (the grants are not only on paper).
    await app_role.execute("INSERT INTO teams (name) VALUES ('grants')")
    await app_role.execute("UPDATE teams SET name = 'grants2' WHERE name = 'grants'")
    await app_role.execute("DELETE FROM teams WHERE name = 'grants2'")
