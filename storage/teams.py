"""Teams and their chats: synced from the policy file, followed through migrations and kicks."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from storage.models import Chat, OutboxItem, Team, TelegramMessage


@dataclass(frozen=True, slots=True)
class ChatRecord:
    id: int
    team_id: int
    team_name: str
    active: bool
    migrated_to: int | None


async def sync_teams(session: AsyncSession, teams: dict[str, tuple[int, ...]]) -> dict[str, int]:
    """Upsert teams and their chats from the policy; returns team name -> id.

    A chat the policy names that has since migrated keeps pointing at its new id.
    """
    ids: dict[str, int] = {}
    for name, chat_ids in teams.items():
        stmt = pg_insert(Team).values(name=name)
        stmt = stmt.on_conflict_do_update(index_elements=[Team.name], set_={"name": name})
        team_id: int = (await session.execute(stmt.returning(Team.id))).scalar_one()
        ids[name] = team_id
        for chat_id in chat_ids:
            cstmt = pg_insert(Chat).values(id=chat_id, team_id=team_id)
            cstmt = cstmt.on_conflict_do_update(
                index_elements=[Chat.id], set_={"team_id": team_id, "updated_at": func.now()}
            )
            await session.execute(cstmt)
    return ids


async def get_chat(session: AsyncSession, chat_id: int) -> ChatRecord | None:
    row = (
        await session.execute(
            select(Chat, Team.name).join(Team, Team.id == Chat.team_id).where(Chat.id == chat_id)
        )
    ).first()
    if row is None:
        return None
    chat, team_name = row
    return ChatRecord(chat.id, chat.team_id, team_name, chat.active, chat.migrated_to)


async def active_chats(session: AsyncSession, team_id: int) -> list[int]:
    rows = await session.scalars(
        select(Chat.id).where(Chat.team_id == team_id, Chat.migrated_to.is_(None)).order_by(Chat.id)
    )
    return list(rows)


async def set_active(session: AsyncSession, chat_id: int, active: bool) -> bool:
    """Returns whether the flag changed (so callers audit only real transitions)."""
    result = await session.execute(
        update(Chat)
        .where(Chat.id == chat_id, Chat.active.is_not(active))
        .values(active=active, updated_at=func.now())
        .returning(Chat.id)
    )
    return result.first() is not None


async def migrate_chat(session: AsyncSession, old_id: int, new_id: int) -> ChatRecord | None:
    """Group became a supergroup: the new id joins the team, the old one points at it."""
    old = await get_chat(session, old_id)
    if old is None:
        return None
    stmt = pg_insert(Chat).values(id=new_id, team_id=old.team_id, type="supergroup", active=True)
    stmt = stmt.on_conflict_do_nothing(index_elements=[Chat.id])
    await session.execute(stmt)
    await session.execute(
        update(Chat)
        .where(Chat.id == old_id)
        .values(migrated_to=new_id, active=False, updated_at=func.now())
    )
    return await get_chat(session, new_id)


async def wake_held_rows(session: AsyncSession, chat_id: int) -> None:
    """The bot is back in the chat: rows held back while it was out become due now."""
    await session.execute(
        update(OutboxItem)
        .where(OutboxItem.chat_id == chat_id, OutboxItem.status == "pending")
        .values(next_attempt_at=OutboxItem.created_at)
    )


async def move_unsent(session: AsyncSession, old_id: int, new_id: int) -> None:
    """Messages not yet posted, and pending rows, follow a migrated chat to its new id (those
    already posted stay where they are)."""
    await session.execute(
        update(TelegramMessage)
        .where(TelegramMessage.chat_id == old_id, TelegramMessage.message_id.is_(None))
        .values(chat_id=new_id)
    )
    await session.execute(
        update(OutboxItem)
        .where(OutboxItem.chat_id == old_id, OutboxItem.status == "pending")
        .values(chat_id=new_id)
    )


async def resolve_chat_id(session: AsyncSession, chat_id: int) -> int:
    """Follow migrations to the chat's current id."""
    seen = {chat_id}
    while True:
        nxt = await session.scalar(select(Chat.migrated_to).where(Chat.id == chat_id))
        if nxt is None or nxt in seen:
            return chat_id
        seen.add(nxt)
        chat_id = nxt


async def team_id_named(session: AsyncSession, name: str) -> int | None:
    """The id of the team called `name`, if the policy ever named it."""
    found: int | None = await session.scalar(select(Team.id).where(Team.name == name))
    return found
