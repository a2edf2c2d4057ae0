"""Alert forwarding: one living card per alert, repeats coalesced, buttons and silences."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from bot.buttons import ButtonSigner, keyboard
from bot.policy import Team
from bot.rendering import MAX_TEXT, clip, esc, fmt_duration, fmt_time, href
from bot.runtime import Runtime
from storage import alerts as store
from storage import audit
from storage.alerts import AckRecord, AlertRecord, IncomingAlert, LinkedApproval, SilenceRecord
from storage.db import transaction
from storage.outbox import Priority, edit_message, enqueue_text, find_message, put_message
from storage.teams import active_chats

log = logging.getLogger(__name__)

SILENCE_HOURS = {"s1": 1, "s4": 4, "s24": 24}
ACTIONS = frozenset({"ack", "res", *SILENCE_HOURS})
CARD_PURPOSE = "alert_card"
REFRESH_BATCH = 50
RACE_RETRIES = 3
# unique_violation, deadlock_detected, serialization_failure
RETRYABLE_SQLSTATES = frozenset({"23505", "40P01", "40001"})
ALERTMANAGER_TIMEOUT = aiohttp.ClientTimeout(total=5)
SEVERITY_ICON = {
    "critical": "🔴",
    "page": "🔴",
    "high": "🔴",
    "error": "🔴",
    "warning": "🟠",
    "warn": "🟠",
    "medium": "🟠",
    "info": "🔵",
    "low": "🔵",
}


class AlertError(Exception):
    """A button or command could not be carried out; the message is safe to show."""


class NotAMember(AlertError):
    def __init__(self, team: str) -> None:
        super().__init__(f"You are not a member of team {team}.")


class AlertNotFound(AlertError):
    def __init__(self) -> None:
        super().__init__("This alert no longer exists.")


class AlertClosed(AlertError):
    def __init__(self) -> None:
        super().__init__("This alert is already resolved.")


class ForgedButton(AlertError):
    def __init__(self) -> None:
        super().__init__("This button is not valid here.")


class SilenceNotFound(AlertError):
    def __init__(self, ref: str) -> None:
        super().__init__(f"No silence {ref} in this team.")


@dataclass(frozen=True, slots=True)
class IngestResult:
    received: int
    new: int
    repeats: int
    resolved: int
    silenced: int


# --------------------------------------------------------------------------- rendering


def fit(value: object, limit: int) -> str:
    """Escaped text no longer than `limit` characters of HTML, visibly clipped if needed."""
    raw = str(value)
    out = clip(raw, limit)
    n = limit
    while len(out) > limit and n > 1:
        n = max(1, min(n - 1, n * limit // len(out)))
        out = clip(raw, n)
    return out


def _label_lines(labels: dict[str, Any], budget: int, max_lines: int = 15) -> list[str]:
    items = sorted(labels.items())
    lines: list[str] = []
    used = 0
    for i, (key, value) in enumerate(items):
        line = f"<code>{fit(key, 60)}</code> = <code>{fit(value, 160)}</code>"
        rest = len(items) - i - 1
        if len(lines) >= max_lines or used + len(line) + 20 > budget:
            lines.append(f"<i>+{len(items) - i} more</i>")
            break
        lines.append(line)
        used += len(line) + 1
        if rest == 0:
            break
    return lines


def render_card(
    alert: AlertRecord,
    *,
    tz: ZoneInfo,
    acks: Sequence[AckRecord] = (),
    silence: SilenceRecord | None = None,
    approvals: Sequence[LinkedApproval] = (),
) -> str:
    """The card's HTML: every outside string escaped and the whole within Telegram's 4096."""
    sev = (alert.severity or "").lower()
    icon = SEVERITY_ICON.get(sev, "⚪")
    if alert.status == "firing":
        head = f"🔥 <b>FIRING</b> {icon}"
    else:
        start = alert.starts_at or alert.first_seen_at
        end = alert.ends_at or alert.resolved_at or alert.last_seen_at
        head = f"✅ <b>RESOLVED</b> after {fmt_duration((end - start).total_seconds())}"
    if alert.severity:
        head += f" · {fit(alert.severity, 32)}"
    head += f" · {fit(alert.source, 32)}"
    if alert.occurrence > 1:
        head += f" · #{alert.occurrence}"
    top = [head, f"<b>{fit(alert.title, 300)}</b>"]

    meta = [
        f"Hits: <b>{alert.hit_count}</b> · first {fmt_time(alert.first_seen_at, tz)}"
        f" · last {fmt_time(alert.last_seen_at, tz)}"
    ]
    if alert.starts_at is not None:
        meta.append(f"Started: {fmt_time(alert.starts_at, tz)}")
    if alert.status == "resolved":
        by = f" by {fit(alert.resolved_by, 64)}" if alert.resolved_by else ""
        meta.append(f"Resolved: {fmt_time(alert.resolved_at, tz)}{by}")
    ctx = alert.context
    value = ctx.get("value")
    if value:
        meta.append(f"Value: <code>{fit(value, 300)}</code>")
    truncated = ctx.get("truncated_alerts")
    if isinstance(truncated, int) and truncated > 0:
        meta.append(f"⚠️ Alertmanager truncated {truncated} more alert(s) of this group")
    if acks:
        names = ", ".join(f"{fit(a.name, 40)} ({fmt_time(a.at, tz)})" for a in acks[:5])
        more = f" +{len(acks) - 5} more" if len(acks) > 5 else ""
        meta.append(f"👀 Acknowledged by {names}{more}")
    if silence is not None and alert.status == "firing":
        line = (
            f"🔕 Silenced until {fmt_time(silence.ends_at, tz)} by "
            f"{fit(silence.created_by_name, 40)} (silence {silence.id})"
        )
        if silence.alertmanager_silence_id:
            line += f" · Alertmanager <code>{fit(silence.alertmanager_silence_id, 64)}</code>"
        meta.append(line)
    for req in approvals[:3]:
        meta.append(
            f"⏳ Pending approval: {fit(req.action, 60)} on {fit(req.target, 100)}"
            f" (<code>{str(req.id)[:8]}</code>)"
        )
    if len(approvals) > 3:
        meta.append(f"⏳ +{len(approvals) - 3} more pending approvals")
    tail = [f"Fingerprint: <code>{fit(alert.fingerprint, 64)}</code>"]
    if alert.url:
        tail[0] += f' · <a href="{href(alert.url)}">source</a>'

    fixed = len("\n".join(top + meta + tail)) + 40
    label_budget = min(1400, max(0, MAX_TEXT - fixed - 400))
    labels = _label_lines(alert.labels, label_budget) if alert.labels else []
    if labels:
        labels.insert(0, "<b>Labels</b>")
    budget = MAX_TEXT - fixed - len("\n".join(labels)) - 10
    notes: list[str] = []
    for key in ("summary", "description", "message"):
        text = alert.annotations.get(key)
        if text and budget > 40:
            part = fit(text, min(1500, budget - 1))
            notes.append(part)
            budget -= len(part) + 1
    others = sorted(
        (k, v)
        for k, v in alert.annotations.items()
        if k not in ("summary", "description", "message")
    )
    for key, text in others[:5]:
        if budget <= 80:
            break
        part = f"<i>{fit(key, 40)}</i>: {fit(text, min(300, budget - 60))}"
        notes.append(part)
        budget -= len(part) + 1
    sections = ["\n".join(top)]
    if notes:
        sections.append("\n".join(notes))
    if labels:
        sections.append("\n".join(labels))
    sections.append("\n".join(meta + tail))
    html = "\n\n".join(sections)
    if len(html) > MAX_TEXT:  # cannot happen with the budgets above; never send an invalid card
        html = "\n\n".join([sections[0], sections[-1]])[:MAX_TEXT]
    return html


def card_markup(signer: ButtonSigner, alert: AlertRecord, chat_id: int) -> dict[str, Any] | None:
    if alert.status != "firing":
        return None
    b = signer.alert_button
    return keyboard(
        [
            [
                ("👀 Acknowledge", b(alert.id, "ack", chat_id)),
                ("✅ Resolve", b(alert.id, "res", chat_id)),
            ],
            [
                ("🔕 1h", b(alert.id, "s1", chat_id)),
                ("🔕 4h", b(alert.id, "s4", chat_id)),
                ("🔕 24h", b(alert.id, "s24", chat_id)),
            ],
        ]
    )


# --------------------------------------------------------------------------- cards


async def _render_cards(
    rt: Runtime,
    session: AsyncSession,
    alerts: Sequence[AlertRecord],
    *,
    not_before: dict[int, datetime] | None = None,
    create_missing: bool = False,
) -> list[dict[str, Any]]:
    """Bring every card of these alerts up to date; returns audit rows for new cards."""
    if not alerts:
        return []
    ids = [a.id for a in alerts]
    refs = await store.card_refs(session, ids)
    acks = await store.acks_for(session, ids)
    approvals = await store.pending_approvals_for(session, alerts)
    silences: dict[tuple[int, str], SilenceRecord] = {}
    for team_id in {a.team_id for a in alerts if a.silenced}:
        fps = [a.fingerprint for a in alerts if a.silenced and a.team_id == team_id]
        for s in await store.active_silences(session, team_id, fps):
            silences.setdefault((team_id, s.fingerprint), s)
    tz = rt.zone
    signer = rt.signer
    chats_of: dict[int, list[int]] = {}
    audit_rows: list[dict[str, Any]] = []
    for alert in alerts:
        html = render_card(
            alert,
            tz=tz,
            acks=acks.get(alert.id, ()),
            silence=silences.get((alert.team_id, alert.fingerprint)),
            approvals=approvals.get(alert.id, ()),
        )
        cards = refs.get(alert.id, [])
        if not cards:
            if not create_missing or alert.status != "firing" or alert.silenced:
                continue
            if alert.team_id not in chats_of:
                chats_of[alert.team_id] = await active_chats(session, alert.team_id)
            for chat_id in chats_of[alert.team_id]:
                await put_message(
                    session,
                    chat_id=chat_id,
                    purpose=CARD_PURPOSE,
                    text_html=html,
                    reply_markup=card_markup(signer, alert, chat_id),
                    priority=Priority.ALERT_SEND,
                    alert_id=alert.id,
                )
                audit_rows.append(
                    {
                        "event": "alert.sent",
                        "team_id": alert.team_id,
                        "alert_id": alert.id,
                        "chat_id": chat_id,
                        "detail": {
                            "fingerprint": alert.fingerprint,
                            "occurrence": alert.occurrence,
                        },
                    }
                )
            continue
        when = (not_before or {}).get(alert.id)
        for card in cards:
            markup = card_markup(signer, alert, card.chat_id)
            if card.text == html and card.reply_markup == markup:
                continue  # Telegram refuses an edit that changes nothing
            await edit_message(
                session,
                card.row_id,
                text_html=html,
                reply_markup=markup,
                priority=Priority.ALERT_EDIT,
                not_before=when,
            )
    return audit_rows


async def refresh_due_cards(rt: Runtime, limit: int = REFRESH_BATCH) -> int:
    """One pass of the card worker: re-render cards whose coalesced refresh is due."""
    async with transaction(rt.sessions) as session:
        due = await store.claim_due_cards(session, limit)
        if not due:
            return 0
        firing = [a for a in due if a.status == "firing"]
        rows = await _render_cards(rt, session, firing, create_missing=True)
        await store.mark_cards_rendered(session, [a.id for a in due])
        await audit.record_many(session, rows)
        return len(due)


# --------------------------------------------------------------------------- ingest


async def ingest(rt: Runtime, team: Team, alerts: Sequence[IncomingAlert]) -> IngestResult:
    """Store a batch of alerts from one request in one transaction; cards are queued with it.

    New occurrences get a card in every team chat; repeats bump the count and schedule a
    coalesced card refresh; resolved alerts get their cards edited. Silenced: counted only.
    """
    team_id = rt.team_ids[team.name]
    latest: dict[str, IncomingAlert] = {}
    hits: Counter[str] = Counter()
    for a in alerts:
        latest[a.fingerprint] = a
        if a.status == "firing":
            hits[a.fingerprint] += 1
    firing = sorted(
        ((a, hits[fp]) for fp, a in latest.items() if a.status == "firing"),
        key=lambda pair: pair[0].fingerprint,
    )
    resolved = {fp: a.ends_at for fp, a in latest.items() if a.status == "resolved"}
    for a in alerts:
        rt.metrics.alerts_received.labels(a.source).inc()
    for attempt in range(RACE_RETRIES):
        try:
            return await _ingest_once(rt, team_id, latest, hits, firing, resolved, len(alerts))
        except DBAPIError as exc:
            # Two requests opening the same new alert at once: the loser hits the occurrence
            # key (ON CONFLICT arbitrates only the firing index) or a deadlock; a retry sees
            # the winner's row and counts as a repeat.
            code = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
            if code not in RETRYABLE_SQLSTATES or attempt == RACE_RETRIES - 1:
                raise
    raise AssertionError("unreachable")


async def _ingest_once(
    rt: Runtime,
    team_id: int,
    latest: dict[str, IncomingAlert],
    hits: Counter[str],
    firing: list[tuple[IncomingAlert, int]],
    resolved: dict[str, datetime | None],
    received: int,
) -> IngestResult:
    interval = rt.settings.alert_edit_interval_seconds
    async with transaction(rt.sessions) as session:
        rows = await store.upsert_firing(session, team_id, firing, edit_interval=interval)
        done = await store.resolve_firing(session, team_id, resolved, edit_interval=interval)
        audit_rows: list[dict[str, Any]] = [
            {
                "event": "alert.received" if r.inserted else "alert.deduplicated",
                "team_id": team_id,
                "alert_id": r.id,
                "actor": latest[r.fingerprint].source,
                "detail": {
                    "fingerprint": r.fingerprint,
                    "hits": hits[r.fingerprint],
                    "silenced": r.silenced,
                },
            }
            for r in rows
        ]
        resolved_fps = {a.fingerprint for a in done}
        audit_rows.extend(
            {
                "event": "alert.resolved",
                "team_id": team_id,
                "alert_id": a.id,
                "actor": a.source,
                "detail": {"fingerprint": a.fingerprint, "hits": a.hit_count, "by": "source"},
            }
            for a in done
        )
        audit_rows.extend(
            {
                "event": "alert.received",
                "team_id": team_id,
                "actor": latest[fp].source,
                "detail": {"fingerprint": fp, "status": "resolved", "matched": False},
            }
            for fp in resolved
            if fp not in resolved_fps
        )
        new_ids = [r.id for r in rows if r.inserted and not r.silenced]
        if new_ids:
            fresh = await store.get_alerts(session, new_ids)
            audit_rows.extend(await _render_cards(rt, session, fresh, create_missing=True))
            await store.mark_cards_rendered(session, new_ids)
        if done:
            when = {a.id: a.last_card_edit_at for a in done if a.last_card_edit_at is not None}
            await _render_cards(rt, session, done, not_before=when)
        await audit.record_many(session, audit_rows)
    return IngestResult(
        received=received,
        new=sum(1 for r in rows if r.inserted),
        repeats=sum(1 for r in rows if not r.inserted),
        resolved=len(done),
        silenced=sum(1 for r in rows if r.silenced),
    )


# --------------------------------------------------------------------------- buttons


async def press_button(
    rt: Runtime,
    session: AsyncSession,
    *,
    ref: str,
    act: str,
    tag: str,
    chat_id: int,
    message_id: int | None,
    user_id: int,
) -> str:
    """Carry out an alert button; returns the toast. Raises AlertError subclasses."""
    forged = (
        act not in ACTIONS
        or not ref.isdigit()
        or len(ref) > 18
        or not rt.signer.check("al", ref, act, chat_id, tag)
    )
    alert = None if forged else await store.get_alert(session, int(ref), for_update=True)
    if not forged and alert is not None and message_id is not None:
        # The tag binds alert and chat; the message must not be another card. A card whose
        # send is still being recorded has no message id yet, so an unknown id is accepted.
        msg = await find_message(session, chat_id, message_id)
        forged = msg is not None and msg.alert_id != alert.id
    if forged:
        await audit.record(
            session,
            "alert.button_forged",
            actor_telegram_id=user_id,
            chat_id=chat_id,
            ref=ref[:40],
            act=act[:10],
            message_id=message_id,
        )
        raise ForgedButton
    if alert is None:
        raise AlertNotFound
    team = rt.team(alert.team_id)
    if team is None:
        raise AlertNotFound
    approver = team.approvers.get(user_id)
    if approver is None:
        await audit.record(
            session,
            "alert.button_refused",
            actor_telegram_id=user_id,
            team_id=alert.team_id,
            alert_id=alert.id,
            chat_id=chat_id,
            act=act,
            reason="not a member",
        )
        raise NotAMember(team.name)
    if alert.status != "firing":
        raise AlertClosed
    who = approver.name
    tz = rt.zone

    async def record(event: str, **detail: Any) -> None:
        await audit.record(
            session,
            event,
            actor=who,
            actor_telegram_id=user_id,
            team_id=alert.team_id,
            alert_id=alert.id,
            chat_id=chat_id,
            fingerprint=alert.fingerprint,
            **detail,
        )

    if act == "ack":
        if not await store.add_ack(session, alert.id, user_id, who):
            return "You already acknowledged this alert."
        await record("alert.acknowledged")
        toast = "👀 Acknowledged."
    elif act == "res":
        done = await store.resolve_one(session, alert.id, who)
        if done is None:
            raise AlertClosed
        await record("alert.resolved", by="person")
        await _render_cards(rt, session, [done])
        return "✅ Resolved."
    else:
        hours = SILENCE_HOURS[act]
        sync = bool(team.alertmanager_url) and bool(_matchers(alert.labels))
        silence = await store.create_silence(
            session,
            team_id=alert.team_id,
            fingerprint=alert.fingerprint,
            matchers={"matchers": _matchers(alert.labels)},
            by_id=user_id,
            by_name=who,
            hours=hours,
            sync_alertmanager=sync,
        )
        await record(
            "alert.silenced",
            silence_id=silence.id,
            hours=hours,
            ends_at=silence.ends_at.isoformat(),
            alertmanager=sync,
        )
        toast = f"🔕 Silenced for {hours}h (until {fmt_time(silence.ends_at, tz)})."
        if sync:
            toast += " Creating it in Alertmanager too."
        elif team.alertmanager_url:
            toast += " Not sent to Alertmanager: the alert has no labels to match."
    fresh = await store.get_alert(session, alert.id)
    assert fresh is not None
    await store.mark_cards_rendered(session, [alert.id])
    await _render_cards(rt, session, [fresh])
    return toast


def _matchers(labels: dict[str, Any]) -> list[dict[str, Any]]:
    # Alertmanager refuses matchers that match the empty string.
    return [
        {"name": k, "value": str(v), "isRegex": False, "isEqual": True}
        for k, v in sorted(labels.items())
        if str(v) != ""
    ]


# --------------------------------------------------------------------------- commands


def _chat_team(rt: Runtime, chat_id: int) -> Team:
    team = rt.policy.team_for_chat(chat_id)
    if team is None or team.name not in rt.team_ids:
        raise AlertError("This chat does not belong to a team in the policy file.")
    return team


async def list_firing(rt: Runtime, session: AsyncSession, chat_id: int, limit: int = 25) -> str:
    team = _chat_team(rt, chat_id)
    team_id = rt.team_ids[team.name]
    alerts = await store.firing_alerts(session, team_id, limit)
    if not alerts:
        return f"No firing alerts for team <b>{esc(team.name)}</b>. 🎉"
    total = await store.count_firing(session, team_id)
    tz = rt.zone
    lines = [f"🔥 <b>{total} firing alert(s)</b> for team <b>{esc(team.name)}</b>"]
    for a in alerts:
        flags = " 🔕" if a.silenced else ""
        sev = f"{fit(a.severity, 20)} · " if a.severity else ""
        lines.append(
            f"• <b>{fit(a.title, 80)}</b>{flags}\n  {sev}{a.hit_count} hits · since "
            f"{fmt_time(a.first_seen_at, tz)} · <code>{fit(a.fingerprint, 64)}</code>"
        )
    if total > len(alerts):
        lines.append(f"… and {total - len(alerts)} more")
    return _clip_html(lines)


async def list_silences(rt: Runtime, session: AsyncSession, chat_id: int) -> str:
    team = _chat_team(rt, chat_id)
    silences = await store.active_silences(session, rt.team_ids[team.name])
    if not silences:
        return f"No active silences for team <b>{esc(team.name)}</b>."
    tz = rt.zone
    lines = [f"🔕 <b>{len(silences)} active silence(s)</b> for team <b>{esc(team.name)}</b>"]
    for s in silences[:30]:
        am = ""
        if s.alertmanager_silence_id:
            am = f" · Alertmanager <code>{fit(s.alertmanager_silence_id, 64)}</code>"
        elif s.am_status == "failed":
            am = " · Alertmanager: failed"
        lines.append(
            f"• <b>{s.id}</b> · <code>{fit(s.fingerprint, 64)}</code> until "
            f"{fmt_time(s.ends_at, tz)} by {fit(s.created_by_name, 40)}{am}"
        )
    lines.append("Remove one with /unsilence &lt;id&gt;.")
    return _clip_html(lines)


async def unsilence(
    rt: Runtime, session: AsyncSession, *, chat_id: int, user_id: int, ref: str
) -> str:
    team = _chat_team(rt, chat_id)
    approver = team.approvers.get(user_id)
    if approver is None:
        raise NotAMember(team.name)
    ref = ref.strip()
    if not ref or len(ref) > 64:
        raise AlertError("Usage: /unsilence <id> (the ids are in /silences)")
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


def _clip_html(lines: list[str]) -> str:
    out: list[str] = []
    size = 0
    for line in lines:
        if size + len(line) + 1 > MAX_TEXT - 40:
            out.append("…")
            break
        out.append(line)
        size += len(line) + 1
    return "\n".join(out)


# --------------------------------------------------------------------------- approvals link


async def linked_alert_line(
    session: AsyncSession, team_id: int, fingerprint: str | None, incident_id: str | None
) -> str | None:
    """An escaped HTML line for an approval card naming the firing alert it refers to."""
    found = await store.find_linked_alerts(session, team_id, fingerprint, incident_id)
    if not found:
        return None
    a = found[0]
    sev = f" · {fit(a.severity, 20)}" if a.severity else ""
    more = f" (+{len(found) - 1} more)" if len(found) > 1 else ""
    return (
        f"🔥 Alert: <b>{fit(a.title, 150)}</b>{sev} · {a.hit_count} hits · "
        f"<code>{fit(a.fingerprint, 64)}</code>{more}"
    )


async def on_approval_changed(
    rt: Runtime,
    session: AsyncSession,
    team_id: int,
    fingerprint: str | None,
    incident_id: str | None,
) -> None:
    """Re-render the alert cards linked to this fingerprint or incident."""
    found = await store.find_linked_alerts(session, team_id, fingerprint, incident_id)
    if not found:
        return
    now = datetime.now(UTC)
    interval = timedelta(seconds=rt.settings.alert_edit_interval_seconds)
    when = {
        a.id: max(now, a.last_card_edit_at + interval)
        for a in found
        if a.last_card_edit_at is not None
    }
    await _render_cards(rt, session, found, not_before=when)


# --------------------------------------------------------------------------- Alertmanager


async def _alertmanager_call(
    http: aiohttp.ClientSession, team: Team, silence: SilenceRecord
) -> str | None:
    """Create or expire the silence in the team's Alertmanager; returns its silence id."""
    base = (team.alertmanager_url or "").rstrip("/")
    if silence.am_status == "create":
        body = {
            "matchers": silence.matchers.get("matchers", []),
            "startsAt": silence.starts_at.astimezone(UTC).isoformat(),
            "endsAt": silence.ends_at.astimezone(UTC).isoformat(),
            "createdBy": f"{silence.created_by_name} via Quorum",
            "comment": f"Silenced from Telegram by {silence.created_by_name} (Quorum)",
        }
        async with http.post(f"{base}/api/v2/silences", json=body) as resp:
            data = await resp.json(content_type=None) if resp.status < 300 else None
            if resp.status >= 300 or not isinstance(data, dict) or "silenceID" not in data:
                text = (await resp.text())[:200]
                raise AlertError(f"HTTP {resp.status}: {text}")
            return str(data["silenceID"])
    assert silence.alertmanager_silence_id is not None
    async with http.delete(f"{base}/api/v2/silence/{silence.alertmanager_silence_id}") as resp:
        # 404: already gone, which is what we wanted.
        if resp.status >= 300 and resp.status != 404:
            text = (await resp.text())[:200]
            raise AlertError(f"HTTP {resp.status}: {text}")
    return silence.alertmanager_silence_id


async def sync_alertmanager(rt: Runtime, http: aiohttp.ClientSession) -> int:
    """Create or expire silences in Alertmanager, outside any transaction, with a timeout."""
    async with transaction(rt.sessions) as session:
        jobs = await store.claim_alertmanager_jobs(session, 10)
    for job in jobs:
        team = rt.team(job.team_id)
        error: str | None = None
        silence_ref: str | None = None
        if team is None or not team.alertmanager_url:
            error = "the team has no alertmanager_url any more"
        else:
            try:
                silence_ref = await _alertmanager_call(http, team, job)
            except (aiohttp.ClientError, TimeoutError, AlertError, ValueError) as exc:
                error = str(exc) or type(exc).__name__
        expected = job.am_status or ""
        creating = expected == "create"
        async with transaction(rt.sessions) as session:
            outcome = "failed" if error else ("created" if creating else "expired")
            stored = await store.finish_alertmanager_job(
                session,
                job.id,
                expected=expected,
                status=outcome,
                silence_ref=silence_ref if creating and not error else None,
                error=error[:500] if error else None,
            )
            event = {
                ("create", False): "alertmanager_silence_created",
                ("create", True): "alertmanager_silence_failed",
                ("expire", False): "alertmanager_silence_expired",
                ("expire", True): "alertmanager_unsilence_failed",
            }[(expected, error is not None)]
            await audit.record(
                session,
                event,
                actor="quorum",
                team_id=job.team_id,
                silence_id=job.id,
                fingerprint=job.fingerprint,
                alertmanager_silence_id=silence_ref or job.alertmanager_silence_id,
                error=error,
            )
            if error:
                what = "create" if creating else "expire"
                msg = (
                    f"⚠️ Could not {what} the Alertmanager silence for silence {job.id} "
                    f"(<code>{fit(job.fingerprint, 64)}</code>): {fit(error, 300)}. "
                    "The silence still applies in Quorum."
                )
                for chat_id in await active_chats(session, job.team_id):
                    await enqueue_text(session, chat_id, msg)
            elif stored is not None and creating:
                firing = await store.find_linked_alerts(session, job.team_id, job.fingerprint, None)
                await store.schedule_refresh(session, [a.id for a in firing])
    return len(jobs)


# --------------------------------------------------------------------------- worker


async def run_maintenance(rt: Runtime) -> None:
    """Card refreshes, Alertmanager silence sync, and silences running out."""
    last_release = 0.0
    async with aiohttp.ClientSession(timeout=ALERTMANAGER_TIMEOUT) as http:
        while True:
            busy = await refresh_due_cards(rt)
            busy += await sync_alertmanager(rt, http)
            if time.monotonic() - last_release > 5:
                last_release = time.monotonic()
                async with transaction(rt.sessions) as session:
                    await store.release_silenced(session)
            if not busy:
                await asyncio.sleep(0.2)
