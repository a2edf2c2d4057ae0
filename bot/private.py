"""Private messages to people, through the outbox; Telegram's refusals recorded, not retried.

Telegram lets a bot write to a person only once they have opened the private chat (and not
blocked the bot since). We learn that from their own messages and from Telegram's 403s, and
keep it in PostgreSQL (private_chats) so every replica knows whom it can reach.
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from storage import audit
from storage import private_chats as store
from storage.outbox import Priority, enqueue_call

# The outbox kind of every private message: the sender treats its 403 as a refusal.
KIND = "private"


async def send(
    session: AsyncSession,
    user_id: int,
    text_html: str,
    *,
    reply_markup: dict[str, object] | None = None,
) -> int:
    """Queue a private message to `user_id` in this transaction; returns the outbox row id.

    If Telegram refuses it (never started, blocked), `refused` records that once."""
    payload: dict[str, object] = {
        "chat_id": user_id,
        "text": text_html,
        "parse_mode": "HTML",
        "link_preview_options": {"is_disabled": True},
    }
    if reply_markup is not None:
        payload["reply_markup"] = reply_markup
    return await enqueue_call(
        session, "sendMessage", payload, chat_id=user_id, priority=Priority.REPLY, kind=KIND
    )


def refusal_state(error: str) -> store.State:
    """Which refusal a 403's description is (Telegram's text, matched case-insensitively)."""
    return "blocked" if "blocked" in error.lower() else "not_started"


async def refused(session: AsyncSession, user_id: int, *, error: str, outbox_id: int) -> None:
    """Telegram answered 403 for a private message: remember it and audit it."""
    state = refusal_state(error)
    await store.set_state(session, user_id, state)
    await audit.record(
        session,
        "private.refused",
        actor_telegram_id=user_id,
        chat_id=user_id,
        reason=state,
        outbox_id=outbox_id,
        error=error[:300],
    )


async def opened(session: AsyncSession, user_id: int) -> None:
    """The person wrote to the bot (or unblocked it): it may write to them now."""
    await store.set_state(session, user_id, "open")


async def blocked(session: AsyncSession, user_id: int) -> None:
    await store.set_state(session, user_id, "blocked")


async def reachable(session: AsyncSession, user_id: int) -> bool:
    return await store.state_of(session, user_id) == "open"
