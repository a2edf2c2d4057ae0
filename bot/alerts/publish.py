"""Alert cards in the team chats: one card per group, sent once per chat (or listed in the
chat's storm digest), then kept up to date by edits."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from bot.alerts import storm
from bot.alerts.card import card_markup
from bot.alerts.group_card import is_critical, render_group
from bot.routes import Destination, destinations
from bot.runtime import Runtime
from storage import alert_groups as groups_store
from storage import alerts as store
from storage.alerts import AckRecord, AlertRecord, CardRef, LinkedApproval, SilenceRecord
from storage.outbox import Priority, edit_message, put_message
from storage.teams import active_chats

CARD_PURPOSE = "alert_card"


@dataclass(frozen=True, slots=True)
class _Context:
    """What a batch of cards shows beside the alerts themselves."""

    acks: dict[int, list[AckRecord]]
    approvals: dict[int, list[LinkedApproval]]
    silences: dict[tuple[int, str], SilenceRecord]

    def render(self, rt: Runtime, members: Sequence[AlertRecord]) -> str:
        team = rt.team(members[0].team_id)
        seen: set[int] = set()
        acks = []
        for m in members:  # a group acknowledgement is stored on each member: show it once
            for a in self.acks.get(m.id, ()):
                if a.telegram_id not in seen:
                    seen.add(a.telegram_id)
                    acks.append(a)
        silence = next(
            (
                s
                for m in members
                if (s := self.silences.get((m.team_id, m.fingerprint))) is not None
            ),
            None,
        )
        approvals = [r for m in members for r in self.approvals.get(m.id, ())]
        return render_group(
            members,
            group_by=team.alert_group_by if team else (),
            tz=rt.zone,
            acks=acks,
            silence=silence,
            approvals=approvals,
        )


async def render_cards(
    rt: Runtime,
    session: AsyncSession,
    alerts: Sequence[AlertRecord],
    *,
    not_before: dict[int, datetime] | None = None,
    create_missing: bool = False,
    priority: Priority = Priority.ALERT_EDIT,
    own_cards: bool = False,
) -> list[dict[str, Any]]:
    """Bring the cards of these alerts' groups up to date; returns audit rows for new cards.

    With `create_missing`, a firing group gets a card in each team chat that has none, or a
    line in the chat's storm digest while the chat is in a storm (never with `own_cards`).
    `priority` is the edits' (a resolve goes before other groups' first cards, a count
    refresh after).
    """
    if not alerts:
        return []
    gids = sorted({a.group for a in alerts})
    members = await groups_store.group_members(session, gids)
    refs = await store.card_refs(session, gids)
    context = await _load_context(session, [m for g in members.values() for m in g])
    audit_rows: list[dict[str, Any]] = []
    placed: dict[int, Priority] = {}
    for gid in gids:
        group = members.get(gid) or []
        if not group:
            continue
        anchor = min(group, key=lambda m: m.id)
        firing = [m for m in group if m.status == "firing"]
        html = context.render(rt, group)
        cards = refs.get(gid, [])
        if cards:
            when = min((t for m in group if (t := (not_before or {}).get(m.id))), default=None)
            await _edit_cards(rt, session, group, bool(firing), cards, html, when, priority)
        if create_missing and any(not m.silenced for m in firing):
            shown = {r.chat_id for r in cards}
            missing = [d for d in await _destinations(rt, session, anchor) if d[0] not in shown]
            audit_rows += await _show_new(rt, session, group, missing, html, placed, own_cards)
        await store.mark_cards_rendered(session, [m.id for m in group])
    await storm.refresh_digests(rt, session, gids, placed, priority)
    return audit_rows


async def _show_new(
    rt: Runtime,
    session: AsyncSession,
    group: Sequence[AlertRecord],
    where: Sequence[Destination],
    html: str,
    placed: dict[int, Priority],
    own_cards: bool,
) -> list[dict[str, Any]]:
    """A group's first appearance in chats (and topics) showing it nowhere yet: its card, or a
    line in the chat's storm digest (`placed` collects those digests, at the priority their
    refresh needs; a digest lives in the chat's General topic)."""
    anchor = min(group, key=lambda m: m.id)
    first = Priority.ALERT_CRITICAL if is_critical(group) else Priority.ALERT_SEND
    audit_rows = []
    for chat_id, thread_id in where:
        digest = None if own_cards else await storm.place(rt, session, chat_id, anchor)
        if digest is not None:
            digest_id, new = digest
            at = first if new else Priority.ALERT_EDIT
            placed[digest_id] = min(placed.get(digest_id, at), at)
            continue
        await _send_card(rt, session, group, (chat_id, thread_id), html, first)
        audit_rows.append(_sent_row(anchor, chat_id))
    return audit_rows


async def _load_context(session: AsyncSession, alerts: Sequence[AlertRecord]) -> _Context:
    ids = [a.id for a in alerts]
    acks = await store.acks_for(session, ids)
    approvals = await store.pending_approvals_for(session, alerts)
    silences: dict[tuple[int, str], SilenceRecord] = {}
    for team_id in {a.team_id for a in alerts if a.silenced}:
        fps = [a.fingerprint for a in alerts if a.silenced and a.team_id == team_id]
        for s in await store.active_silences(session, team_id, fps):
            silences.setdefault((team_id, s.fingerprint), s)
    return _Context(acks=acks, approvals=approvals, silences=silences)


async def _destinations(
    rt: Runtime, session: AsyncSession, alert: AlertRecord
) -> list[Destination]:
    team = rt.team(alert.team_id)
    if team is None:
        return [(c, None) for c in await active_chats(session, alert.team_id)]
    return await destinations(
        session,
        team,
        alert.team_id,
        kind="alert",
        severity=alert.severity,
        source=alert.source,
        labels=alert.labels,
    )


def _sent_row(alert: AlertRecord, chat_id: int) -> dict[str, Any]:
    return {
        "event": "alert.sent",
        "team_id": alert.team_id,
        "alert_id": alert.id,
        "chat_id": chat_id,
        "detail": {"fingerprint": alert.fingerprint, "occurrence": alert.occurrence},
    }


async def _send_card(
    rt: Runtime,
    session: AsyncSession,
    group: Sequence[AlertRecord],
    where: Destination,
    html: str,
    prio: Priority,
) -> None:
    """Queue the group's first card in a chat (and topic); its buttons name the group's first
    alert."""
    anchor = min(group, key=lambda m: m.id)
    chat_id, thread_id = where
    await put_message(
        session,
        chat_id=chat_id,
        purpose=CARD_PURPOSE,
        text_html=html,
        reply_markup=card_markup(rt.signer, anchor, chat_id, firing=True, details=len(group) > 1),
        priority=prio,
        alert_id=anchor.id,
        thread_id=thread_id,
    )


async def _edit_cards(
    rt: Runtime,
    session: AsyncSession,
    group: Sequence[AlertRecord],
    firing: bool,
    cards: list[CardRef],
    html: str,
    not_before: datetime | None,
    priority: Priority,
) -> None:
    anchor = min(group, key=lambda m: m.id)
    for card in cards:
        markup = card_markup(rt.signer, anchor, card.chat_id, firing=firing, details=len(group) > 1)
        if card.text == html and card.reply_markup == markup:
            continue  # Telegram refuses an edit that changes nothing
        await edit_message(
            session,
            card.row_id,
            text_html=html,
            reply_markup=markup,
            priority=priority,
            not_before=None if priority < Priority.ALERT_EDIT else not_before,
        )
