"""Incidents in PostgreSQL: timeline lines commit (or roll back) with the change they record."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from storage import incidents as store
from storage.db import make_engine, make_sessionmaker, transaction
from storage.incidents import Event
from storage.models import Incident, TimelineEvent
from storage.teams import sync_teams


class Boom(Exception):
    pass


@pytest.fixture
async def sessions(db_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = make_engine(db_url, pool_size=2)
    yield make_sessionmaker(engine)
    await engine.dispose()


async def _team(sessions: async_sessionmaker[AsyncSession], name: str = "platform") -> int:
    async with transaction(sessions) as session:
        return (await sync_teams(session, {name: ()}))[name]


async def _declare(session: AsyncSession, team_id: int) -> store.IncidentRecord:
    return await store.create(
        session,
        team_id=team_id,
        title="Payments 5xx",
        severity="P1",
        services=["payments"],
        group_labels={"service": ["payments"]},
        declared_by="alice",
        event=Event("incident.declared", "P1 declared by alice", actor="alice"),
    )


async def _lines(sessions: async_sessionmaker[AsyncSession]) -> list[str]:
    async with sessions() as session:
        rows = await session.scalars(select(TimelineEvent.kind).order_by(TimelineEvent.id))
        return list(rows)


async def test_a_declared_incident_has_an_id_of_its_day_and_its_first_line(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    team_id = await _team(sessions)
    async with transaction(sessions) as session:
        incident = await _declare(session, team_id)
        today = await session.scalar(select(func.to_char(func.now(), "YYYYMMDD")))
    assert re.fullmatch(rf"INC-{today}-[A-Z2-9]{{6}}", incident.id)
    assert incident.status == "investigating" and incident.open
    assert await _lines(sessions) == ["incident.declared"]


async def test_a_change_that_rolls_back_leaves_no_timeline_line(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    team_id = await _team(sessions)
    async with transaction(sessions) as session:
        incident = await _declare(session, team_id)

    async def change_then_fail() -> None:
        async with transaction(sessions) as session:
            await store.get(session, team_id, incident.id, for_update=True)
            changed = await store.change(
                session,
                incident.id,
                {"status": "mitigating"},
                [Event("incident.status", "investigating → mitigating", actor="alice")],
            )
            assert changed.status == "mitigating"
            assert await _lines_in(session) == ["incident.declared", "incident.status"]
            raise Boom

    with pytest.raises(Boom):
        await change_then_fail()
    async with sessions() as session:
        assert await store.get(session, team_id, incident.id) == incident
    assert await _lines(sessions) == ["incident.declared"]


async def test_a_declaration_that_rolls_back_leaves_neither_incident_nor_line(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    team_id = await _team(sessions)

    async def declare_then_fail() -> None:
        async with transaction(sessions) as session:
            await _declare(session, team_id)
            raise Boom

    with pytest.raises(Boom):
        await declare_then_fail()
    async with sessions() as session:
        assert await session.scalar(select(func.count()).select_from(Incident)) == 0
    assert await _lines(sessions) == []


async def test_another_teams_incident_is_not_found(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    team_id = await _team(sessions)
    other = await _team(sessions, "data")
    async with transaction(sessions) as session:
        incident = await _declare(session, team_id)
    async with sessions() as session:
        assert await store.get(session, other, incident.id) is None
        assert await store.list_for_team(session, other, None, 10) == []
        assert [i.id for i in await store.list_for_team(session, team_id, None, 10)] == [
            incident.id
        ]


async def _lines_in(session: AsyncSession) -> list[str]:
    rows = await session.scalars(select(TimelineEvent.kind).order_by(TimelineEvent.id))
    return list(rows)


async def test_open_groups_lists_the_teams_open_incidents_oldest_first(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    team_id = await _team(sessions)
    other = await _team(sessions, "data")
    declared = []
    for team in (team_id, team_id, team_id, other):
        async with transaction(sessions) as session:  # one now() each: created_at orders them
            declared.append(await _declare(session, team))
    first, second, resolved, _ = declared
    for incident, status in ((second, "mitigating"), (resolved, "resolved")):
        async with transaction(sessions) as session:
            await store.change(session, incident.id, {"status": status}, [])
    async with sessions() as session:
        found = await store.open_groups(session, team_id)
    assert found == [(first.id, {"service": ["payments"]}), (second.id, {"service": ["payments"]})]
    assert store.OPEN == ("investigating", "mitigating")  # as spelled in _OPEN_GROUPS
