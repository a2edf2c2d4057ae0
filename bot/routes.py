"""Where a card goes: the team's routes (a chat, maybe a forum topic, for the cards their
match takes), else the team's chats. Migrated chats are followed to their new id."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from bot.policy import Route, Team
from storage.teams import active_chats, resolve_chat_id

Destination = tuple[int, int | None]  # chat id, forum topic (message_thread_id) or None


def route_matches(
    route: Route,
    *,
    kind: str,
    risk_level: str | None = None,
    severity: str | None = None,
    source: str | None = None,
    labels: Mapping[str, Any] | None = None,
) -> bool:
    """Whether the route takes this card: every criterion it names holds."""
    if route.kind is not None and route.kind != kind:
        return False
    if route.risk_levels and risk_level not in route.risk_levels:
        return False
    if route.severities and severity not in route.severities:
        return False
    if route.sources and source not in route.sources:
        return False
    given = labels or {}
    return all(str(given.get(k)) == v and k in given for k, v in route.labels)


async def destinations(
    session: AsyncSession,
    team: Team,
    team_id: int,
    *,
    kind: str,
    risk_level: str | None = None,
    severity: str | None = None,
    source: str | None = None,
    labels: Mapping[str, Any] | None = None,
) -> list[Destination]:
    """Every matching route (each chat and topic once), or the team's own chats if none."""
    matched = [
        r
        for r in team.routes
        if route_matches(
            r, kind=kind, risk_level=risk_level, severity=severity, source=source, labels=labels
        )
    ]
    if matched:
        found: dict[Destination, None] = {}
        for r in matched:
            found[(await resolve_chat_id(session, r.chat_id), r.thread_id)] = None
        return list(found)
    # The team's chats as before routes existed: the chats known for the team (the policy's
    # and those they migrated to) except those only routes name.
    route_only = {r.chat_id for r in team.routes} - set(team.chat_ids)
    skip = {await resolve_chat_id(session, c) for c in route_only} | route_only
    return [(c, None) for c in await active_chats(session, team_id) if c not in skip]
