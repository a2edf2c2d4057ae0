"""Alert card buttons (acknowledge, resolve, silence, details) and /unsilence: checked, done,
audited."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from bot import private
from bot.alerts.card import matcher_text
from bot.alerts.group_card import render_details
from bot.alerts.publish import render_cards
from bot.alerts.texts import chat_team
from bot.errors import (
    AlertClosed,
    AlertNotFound,
    ForgedButton,
    NotAMember,
    Refused,
    SilenceNotFound,
)
from bot.policy import Team
from bot.rendering import esc, fmt_time, plural
from bot.runtime import Runtime
from storage import alert_groups as groups_store
from storage import alerts as store
from storage import audit
from storage import incidents as incident_timeline
from storage.alerts import AlertRecord
from storage.outbox import Priority, find_message

SILENCE_HOURS = {"s1": 1, "s4": 4, "s24": 24}
ACTIONS = frozenset({"ack", "res", "det", *SILENCE_HOURS})


@dataclass(frozen=True, slots=True)
class AlertTap:
    """A tap on an alert card's button, as the callback query carried it."""

    ref: str
    act: str
    tag: str
    chat_id: int
    message_id: int | None
    user_id: int


@dataclass(frozen=True, slots=True)
class _Press:
    """A checked tap: a team member's, on the card of a group with firing alerts (`alert` is
    the group's first alert, which the buttons name; `firing` the members it acts on)."""

    session: AsyncSession
    alert: AlertRecord
    team: Team
    who: str
    tap: AlertTap
    firing: list[AlertRecord]
    rt: Runtime

    async def record(self, event: str, **detail: Any) -> None:
        await audit.record(
            self.session,
            event,
            actor=self.who,
            actor_telegram_id=self.tap.user_id,
            team_id=self.alert.team_id,
            alert_id=self.alert.id,
            chat_id=self.tap.chat_id,
            fingerprint=self.alert.fingerprint,
            **detail,
        )
        if self.alert.incident_id:
            what = event.removeprefix("alert.")
            first = await incident_timeline.alert_event(
                self.session,
                self.alert.id,
                event,
                f"alert {self.alert.title[:200]} {what} by {self.who}",
                actor=self.who,
                actor_telegram_id=self.tap.user_id,
                acknowledges=event == "alert.acknowledged",
            )
            if first is not None:
                seconds = max(0.0, (first.at - first.started).total_seconds())
                histogram = self.rt.metrics.incident_time_to_acknowledge
                histogram.labels(self.team.name, first.severity).observe(seconds)


async def press_button(rt: Runtime, session: AsyncSession, tap: AlertTap) -> str:
    """Carry out an alert button; returns the toast. Raises Refused subclasses."""
    alert = await _checked_alert(rt, session, tap)
    press = await _member_press(rt, session, alert, tap)
    if tap.act == "res":
        return await _resolve(rt, press)
    if tap.act == "det":
        return await _details(rt, press)
    if tap.act == "ack":
        added = [
            m for m in press.firing if await store.add_ack(session, m.id, tap.user_id, press.who)
        ]
        if not added:
            return "You already acknowledged this alert."
        await press.record("alert.acknowledged", alerts=[m.id for m in added])
        toast = (
            "👀 Acknowledged."
            if len(press.firing) == 1
            else f"👀 Acknowledged {plural(len(added), 'alert')}."
        )
    else:
        toast = await _silence(rt, press, SILENCE_HOURS[tap.act])
    fresh = await store.get_alert(session, alert.id)
    assert fresh is not None
    await render_cards(rt, session, [fresh])
    return toast


async def _checked_alert(rt: Runtime, session: AsyncSession, tap: AlertTap) -> AlertRecord:
    """The alert the button names, locked; ForgedButton (audited) unless signed for this card."""
    ref, act = tap.ref, tap.act
    forged = (
        act not in ACTIONS
        or not ref.isdigit()
        or len(ref) > 18
        or not rt.signer.check("al", ref, act, tap.chat_id, tap.tag)
    )
    alert = None if forged else await store.get_alert(session, int(ref), for_update=True)
    if alert is not None and tap.message_id is not None:
        # The tag binds alert and chat; the message must not be another card. A card whose
        # send is still being recorded has no message id yet, so an unknown id is accepted.
        msg = await find_message(session, tap.chat_id, tap.message_id)
        forged = msg is not None and msg.alert_id != alert.id
    if forged:
        await audit.record(
            session,
            "alert.button_forged",
            actor_telegram_id=tap.user_id,
            chat_id=tap.chat_id,
            ref=ref[:40],
            act=act[:10],
            message_id=tap.message_id,
        )
        raise ForgedButton
    if alert is None:
        raise AlertNotFound
    return alert


async def _member_press(
    rt: Runtime, session: AsyncSession, alert: AlertRecord, tap: AlertTap
) -> _Press:
    """The tap of a member of the alert's team on a firing alert; refusals are audited."""
    team = rt.team(alert.team_id)
    if team is None:
        raise AlertNotFound
    approver = team.approvers.get(tap.user_id)
    if approver is None:
        await audit.record(
            session,
            "alert.button_refused",
            actor_telegram_id=tap.user_id,
            team_id=alert.team_id,
            alert_id=alert.id,
            chat_id=tap.chat_id,
            act=tap.act,
            reason="not a member",
        )
        raise NotAMember(team.name)
    members = (await groups_store.group_members(session, [alert.group])).get(alert.group, [])
    firing = [m for m in members if m.status == "firing"]
    if not firing:
        raise AlertClosed
    return _Press(
        session=session, alert=alert, team=team, who=approver.name, tap=tap, firing=firing, rt=rt
    )


async def _details(rt: Runtime, press: _Press) -> str:
    """The group's full list, sent to the tapper's private chat (a group card shows ten)."""
    user_id = press.tap.user_id
    if not await private.reachable(press.session, user_id):
        # Telegram refuses a bot's first message to a person (403): they must open the chat.
        name = f"@{rt.bot_username}" if rt.bot_username else "the bot"
        return f"Open a private chat with {name}, press Start, then tap Details again."
    members = (await groups_store.group_members(press.session, [press.alert.group]))[
        press.alert.group
    ]
    html = render_details(members, group_by=press.team.alert_group_by, tz=rt.zone)
    await private.send(press.session, user_id, html)
    await press.record("alert.details_sent", alerts=len(members))
    return "📋 The full list is in your private chat with me."


async def _resolve(rt: Runtime, press: _Press) -> str:
    done = []
    for member in press.firing:
        resolved = await store.resolve_one(press.session, member.id, press.who)
        if resolved is not None:
            done.append(resolved)
    if not done:
        raise AlertClosed
    await press.record("alert.resolved", by="person", alerts=[a.id for a in done])
    await render_cards(rt, press.session, done, priority=Priority.ALERT_RESOLVE)
    return "✅ Resolved." if len(done) == 1 else f"✅ Resolved {plural(len(done), 'alert')}."


def _group_matchers(press: _Press) -> list[dict[str, Any]]:
    """One Alertmanager silence for the tap: the alert's own labels on a group of one, the
    group's labels (with its alertname) on a larger group."""
    alert = press.alert
    if len(press.firing) == 1 and press.firing[0].id == alert.id:
        return silence_matchers(alert.source, alert.labels)
    shared = {k: alert.labels[k] for k in press.team.alert_group_by if k in alert.labels}
    if "alertname" not in shared or alert.source not in MIRRORED_SOURCES:
        return []
    return [
        {"name": k, "value": str(v), "isRegex": False, "isEqual": True}
        for k, v in sorted(shared.items())
    ]


async def _silence(rt: Runtime, press: _Press, hours: int) -> str:
    team = press.team
    matchers = _group_matchers(press)
    sync = bool(team.alertmanager_url) and bool(matchers)
    # Quorum silences each member by fingerprint; only the first carries the Alertmanager
    # silence, which covers the whole group there.
    silence = None
    for member in press.firing:
        made = await store.create_silence(
            press.session,
            team_id=member.team_id,
            fingerprint=member.fingerprint,
            matchers={"matchers": matchers if sync else []},
            by_id=press.tap.user_id,
            by_name=press.who,
            hours=hours,
            sync_alertmanager=sync and silence is None,
        )
        silence = silence or made
    assert silence is not None
    await press.record(
        "alert.silenced",
        silence_id=silence.id,
        hours=hours,
        ends_at=silence.ends_at.isoformat(),
        alertmanager=sync,
        matchers=matchers if sync else [],
    )
    toast = f"🔕 Silenced for {hours}h (until {fmt_time(silence.ends_at, rt.zone)})."
    if sync:
        # A toast is plain text, at most 200 characters: the card shows the matchers in full.
        toast += f" Also in Alertmanager: {matcher_text(matchers)}"
    elif team.alertmanager_url:
        toast += " Quorum only: Alertmanager silences only its own alerts with an alertname."
    return toast if len(toast) <= 200 else toast[:199] + "…"


# Where an alert's labels are Alertmanager's own: anything else (the generic intake) may carry
# labels like {severity: critical} alone, whose silence would mute every critical alert.
MIRRORED_SOURCES = frozenset({"alertmanager", "grafana"})


def silence_matchers(source: str, labels: dict[str, Any]) -> list[dict[str, Any]]:
    """Alertmanager matchers for exactly these labels, or none when the silence must stay in
    Quorum: an alert not from Alertmanager or Grafana, or without an alertname and at least
    one more label to narrow it."""
    # Alertmanager refuses matchers that match the empty string.
    present = {k: str(v) for k, v in sorted(labels.items()) if str(v) != ""}
    if source not in MIRRORED_SOURCES or "alertname" not in present or len(present) < 2:
        return []
    return [{"name": k, "value": v, "isRegex": False, "isEqual": True} for k, v in present.items()]


async def unsilence(
    rt: Runtime, session: AsyncSession, *, chat_id: int, user_id: int | None, ref: str
) -> str:
    """/unsilence: end a silence of the chat's team; `user_id` None for a post not by a person."""
    if user_id is None:
        raise Refused("Post as yourself to remove a silence.")
    team = chat_team(rt, chat_id)
    approver = team.approvers.get(user_id)
    if approver is None:
        raise NotAMember(team.name)
    ref = ref.strip()
    if not ref or len(ref) > 64:
        raise Refused("Usage: /unsilence <id> (the ids are in /silences)")
    team_id = rt.team_ids[team.name]
    found = await store.find_silence(session, team_id, ref)
    if found is None:
        raise SilenceNotFound(ref)
    if found.cancelled_at is not None or found.ends_at <= datetime.now(UTC):
        return f"Silence {found.id} has already ended."
    cancelled = await store.cancel_silence(session, found.id, user_id)
    await audit.record(
        session,
        "alert.unsilenced",
        actor=approver.name,
        actor_telegram_id=user_id,
        team_id=team_id,
        chat_id=chat_id,
        silence_id=found.id,
        fingerprint=found.fingerprint,
        alertmanager_silence_id=found.alertmanager_silence_id,
    )
    text = f"🔔 Silence {found.id} removed by {esc(approver.name)}."
    if cancelled.am_status == "expire":
        text += " Expiring it in Alertmanager too."
    return text
