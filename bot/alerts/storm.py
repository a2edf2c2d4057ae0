"""Storm mode per chat: while a chat's outbox holds more than its budget can send in about
10 s, new alert groups join one digest card there instead of each getting a card; once the
chat has stayed under budget for a minute the digest is finalised and the groups still firing
get their own cards."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from bot.alerts.group_card import render_digest
from bot.runtime import Runtime
from storage import alert_groups as store
from storage.alert_groups import DigestRecord
from storage.alerts import AlertRecord
from storage.outbox import Priority, edit_message, put_message

DIGEST_PURPOSE = "alert_digest"


def seconds_per_message(rt: Runtime, chat_id: int) -> float:
    """How long the chat's budget takes for one more message, in the long run."""
    s = rt.settings
    per = 1 / s.pace_chat_per_second
    if chat_id < 0:  # a group: its per-minute window is the tighter budget
        per = max(per, s.pace_group_window_seconds / s.pace_group_per_minute)
    return per


def over_budget(rt: Runtime, chat_id: int, backlog: int) -> bool:
    return backlog * seconds_per_message(rt, chat_id) > rt.settings.storm_backlog_seconds


async def place(
    rt: Runtime, session: AsyncSession, chat_id: int, anchor: AlertRecord
) -> tuple[int, bool] | None:
    """Where a group without a card goes in this chat: None for its own card, else the chat's
    digest (opened now if the chat's backlog is over budget) and whether it is new there."""
    digest = await store.open_digest(session, chat_id)
    if digest is None:
        if not over_budget(rt, chat_id, await store.chat_backlog(session, chat_id)):
            return None
        digest = await store.start_digest(session, chat_id, anchor.team_id)
    return digest.id, await store.add_to_digest(session, digest.id, anchor.group)


async def refresh_digests(
    rt: Runtime,
    session: AsyncSession,
    group_ids: Sequence[int],
    placed: dict[int, Priority],
    priority: Priority,
) -> None:
    """Re-render the digests listing these groups; `placed` digests at their own priority
    (a new group's first appearance), the others at `priority`. A finalised digest changes
    only for resolves (its groups' own cards carry their counts since)."""
    for digest in await store.digests_of_groups(session, group_ids):
        at = placed.get(digest.id, priority)
        if digest.finalised_at is None or at <= Priority.ALERT_RESOLVE:
            await _render(rt, session, digest, at)


async def _render(
    rt: Runtime, session: AsyncSession, digest: DigestRecord, priority: Priority
) -> None:
    gids = await store.digest_group_ids(session, digest.id)
    members = await store.group_members(session, gids)
    html = render_digest([g for g in members.values() if g], final=digest.finalised_at is not None)
    if digest.message_row_id is None:
        row = await put_message(
            session,
            chat_id=digest.chat_id,
            purpose=DIGEST_PURPOSE,
            text_html=html,
            reply_markup=None,
            priority=priority,
        )
        await store.set_digest_message(session, digest.id, row)
    elif await store.message_text(session, digest.message_row_id) != html:
        await edit_message(
            session, digest.message_row_id, text_html=html, reply_markup=None, priority=priority
        )


async def settle_one(rt: Runtime, session: AsyncSession, digest: DigestRecord) -> list[int] | None:
    """Note whether the digest's chat is under budget; once it has been for storm_calm_seconds,
    finalise the digest and return the first alerts of its groups still firing (they get their
    own cards); None while the digest stays open."""
    calm = not over_budget(rt, digest.chat_id, await store.chat_backlog(session, digest.chat_id))
    fresh = await store.mark_calm(session, digest.id, calm)
    calm_for = timedelta(seconds=rt.settings.storm_calm_seconds)
    if fresh.calm_since is None or fresh.calm_since > datetime.now(UTC) - calm_for:
        return None
    await store.finalise_digest(session, digest.id)
    await _render(rt, session, await store.get_digest(session, digest.id), Priority.ALERT_SEND)
    members = await store.group_members(session, await store.digest_group_ids(session, digest.id))
    return [
        min(g, key=lambda m: m.id).id
        for g in members.values()
        if any(m.status == "firing" and not m.silenced for m in g)
    ]
