"""Updates about the bot's membership and group-to-supergroup migrations."""

from __future__ import annotations

from aiogram import Router
from aiogram.filters import Filter
from aiogram.types import ChatMemberUpdated, Message
from sqlalchemy.ext.asyncio import AsyncSession

from bot import chats, private

_GONE = {"left", "kicked"}


class MigratedTo(Filter):
    """A group's last service message: it became the supergroup `migrate_to_chat_id`."""

    async def __call__(self, message: Message) -> bool:
        return message.migrate_to_chat_id is not None


class MigratedFrom(Filter):
    """A supergroup's first service message: it was the group `migrate_from_chat_id`."""

    async def __call__(self, message: Message) -> bool:
        return message.migrate_from_chat_id is not None


async def track_membership(event: ChatMemberUpdated, session: AsyncSession) -> None:
    status = event.new_chat_member.status
    if event.chat.type == "private":  # the person blocked (or unblocked) the bot
        if status in _GONE:
            await private.blocked(session, event.chat.id)
        else:
            await private.opened(session, event.chat.id)
        return
    if status in _GONE:
        await chats.bot_removed(session, event.chat.id, reason=f"my_chat_member:{status}")
    else:
        await chats.bot_added(session, event.chat.id, by=event.from_user.id)


async def follow_migration(message: Message, session: AsyncSession) -> None:
    assert message.migrate_to_chat_id is not None
    await chats.chat_migrated(session, message.chat.id, message.migrate_to_chat_id)


async def follow_migration_from(message: Message, session: AsyncSession) -> None:
    assert message.migrate_from_chat_id is not None
    await chats.chat_migrated(session, message.migrate_from_chat_id, message.chat.id)


def make_router() -> Router:
    """This module's handlers; a fresh router per Quorum (aiogram lets a router have one parent)."""
    router = Router(name=__name__)
    router.my_chat_member.register(track_membership)
    router.message.register(follow_migration, MigratedTo())
    router.message.register(follow_migration_from, MigratedFrom())
    return router
