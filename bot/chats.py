"""Chat lifecycle: the bot kicked or re-added, a group upgraded to a supergroup."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from storage import audit
from storage.teams import get_chat, migrate_chat, move_unsent, set_active, wake_held_rows


async def bot_removed(session: AsyncSession, chat_id: int, *, reason: str) -> bool:
    """Stop sending to a chat the bot can no longer post in; its rows wait, they are not lost.

    Returns whether the chat is one of ours (so it is now inactive and holds its rows).
    """
    chat = await get_chat(session, chat_id)
    if chat is None:
        return False
    if await set_active(session, chat_id, False):
        await audit.record(
            session,
            "chat.deactivated",
            chat_id=chat_id,
            team_id=chat.team_id,
            reason=reason,
        )
    return True


async def bot_added(session: AsyncSession, chat_id: int, *, by: int | None) -> None:
    if await set_active(session, chat_id, True):
        chat = await get_chat(session, chat_id)
        await audit.record(
            session,
            "chat.reactivated",
            chat_id=chat_id,
            actor_telegram_id=by,
            team_id=chat.team_id if chat else None,
        )
        await wake_held_rows(session, chat_id)


async def chat_migrated(session: AsyncSession, old_id: int, new_id: int) -> bool:
    """Move the chat id everywhere; unsent messages go to the new chat. Idempotent."""
    old = await get_chat(session, old_id)
    if old is None or old.migrated_to == new_id:
        return False
    await migrate_chat(session, old_id, new_id)
    await move_unsent(session, old_id, new_id)
    await audit.record(
        session, "chat.migrated", chat_id=old_id, team_id=old.team_id, new_chat_id=new_id
    )
    return True
