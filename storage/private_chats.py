"""Private chats with people: whether Telegram lets the bot write to them."""

from __future__ import annotations

from typing import Literal

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from storage.models import PrivateChat

State = Literal["open", "not_started", "blocked"]


async def set_state(session: AsyncSession, telegram_id: int, state: State) -> bool:
    """Record what Telegram last told us; True when it changed."""
    stmt = insert(PrivateChat).values(telegram_id=telegram_id, state=state)
    stmt = stmt.on_conflict_do_update(
        index_elements=[PrivateChat.telegram_id],
        set_={"state": state, "updated_at": func.now()},
        where=PrivateChat.state != state,
    )
    result = await session.execute(stmt.returning(PrivateChat.telegram_id))
    return result.first() is not None


async def state_of(session: AsyncSession, telegram_id: int) -> State:
    """`not_started` for someone who never wrote to the bot: Telegram would refuse."""
    found = await session.scalar(
        select(PrivateChat.state).where(PrivateChat.telegram_id == telegram_id)
    )
    return found or "not_started"  # type: ignore[return-value]
