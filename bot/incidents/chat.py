"""Incidents from the team chat: card buttons, /incident, /incidents, /note, /timeline, replies."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NoReturn

from sqlalchemy.ext.asyncio import AsyncSession

from bot.errors import AlertNotFound, ForgedButton, NotAnApprover, Refused
from bot.incidents import card as ui
from bot.incidents import service
from bot.incidents.rules import (
    ID_PATTERN,
    Declared,
    parse_declaration,
    parse_note,
    severity_for_alert,
    step_severity,
)
from bot.policy import Team
from bot.rendering import card_link, esc, join_lines, mention
from bot.runtime import Runtime
from storage import alerts as alert_store
from storage import audit
from storage import incident_cards as cards
from storage import incidents as store
from storage.incidents import IncidentRecord
from storage.outbox import Priority, enqueue_call

TIMELINE_LINES = 20
NOTE_MAX = 2000


@dataclass(frozen=True, slots=True)
class Sender:
    """Who wrote or tapped in a chat: their Telegram id (None for a channel) and name."""

    chat_id: int
    user_id: int | None
    name: str


@dataclass(frozen=True, slots=True)
class IncidentTap:
    ref: str
    act: str
    tag: str
    chat_id: int
    message_id: int
    user_id: int
    name: str


async def _approver(
    rt: Runtime, session: AsyncSession, who: Sender, what: str
) -> tuple[Team, service.Actor]:
    """The chat's team and the sender as its approver; refusals are audited."""
    team = rt.policy.team_for_chat(who.chat_id)
    if team is None or team.name not in rt.team_ids:
        raise Refused("This chat does not belong to a team in the policy file.")
    approver = team.approvers.get(who.user_id) if who.user_id is not None else None
    if approver is None:
        await audit.record(
            session,
            "incident.refused",
            actor_telegram_id=who.user_id,
            team_id=rt.team_ids[team.name],
            chat_id=who.chat_id,
            what=what,
            reason="not an approver",
        )
        raise NotAnApprover(f"Only approvers of team {team.name} can do that.")
    return team, service.Actor(approver.name, approver.telegram_id)


async def _forged(session: AsyncSession, tap: IncidentTap) -> NoReturn:
    await audit.record(
        session,
        "incident.button_forged",
        actor_telegram_id=tap.user_id,
        chat_id=tap.chat_id,
        ref=tap.ref[:40],
        act=tap.act[:10],
    )
    raise ForgedButton


async def press(rt: Runtime, session: AsyncSession, tap: IncidentTap) -> str:
    """Carry out an incident card's button; returns the toast (Refused: audited)."""
    signed = rt.signer.check("in", tap.ref, tap.act, tap.chat_id, tap.tag)
    if tap.act not in ui.ACTIONS or not signed:
        await _forged(session, tap)
    who = Sender(tap.chat_id, tap.user_id, tap.name)
    team, actor = await _approver(rt, session, who, f"button:{tap.act}")
    return await _act(rt, session, team, actor, tap)


async def _act(
    rt: Runtime, session: AsyncSession, team: Team, actor: service.Actor, tap: IncidentTap
) -> str:
    ident = tap.ref
    if tap.act == ui.NOTE:
        incident = await service.get_in(rt, session, team, ident)
        await ask_for_note(session, tap, incident)
        return "📝 Reply to the question with your note."
    if tap.act == ui.COMMAND:
        await service.set_commander(rt, session, team, ident, tap.user_id, actor)
        return "🙋 You are in command."
    if tap.act in (ui.WORSE, ui.MILDER):
        incident = await service.get_in(rt, session, team, ident)
        severity = step_severity(incident.severity, -1 if tap.act == ui.WORSE else 1)
        if severity is None:
            raise Refused(f"The incident is already {incident.severity}.")
        await service.set_severity(rt, session, team, ident, severity, actor)
        return f"Severity is now {severity}."
    status = {
        ui.MITIGATING: "mitigating",
        ui.RESOLVED: "resolved",
        ui.CLOSE: "closed",
        ui.REOPEN: "investigating",
    }[tap.act]
    await service.set_status(rt, session, team, ident, status, actor)
    return f"The incident is now {status}."


async def ask_for_note(session: AsyncSession, tap: IncidentTap, incident: IncidentRecord) -> None:
    """A ForceReply question under the card: the answer becomes a timeline note. `selective`
    with the tapper mentioned: only their client opens the reply field."""
    who = mention(tap.user_id, tap.name)
    await enqueue_call(
        session,
        "sendMessage",
        {
            "chat_id": tap.chat_id,
            "text": f"📝 Note for {incident.id}, {who}: reply to this message.",
            "parse_mode": "HTML",
            "reply_parameters": {
                "message_id": tap.message_id,
                "allow_sending_without_reply": True,
            },
            "reply_markup": {
                "force_reply": True,
                "selective": True,
                "input_field_placeholder": "What happened?",
            },
        },
        chat_id=tap.chat_id,
        priority=Priority.REPLY,
        kind="reply",
    )


async def declare_from_alert(rt: Runtime, session: AsyncSession, tap: IncidentTap) -> str:
    """🚨 Declare incident on an alert card: the alert's incident, the alert attached."""
    ref = tap.ref
    signed = rt.signer.check("di", ref, "dec", tap.chat_id, tap.tag)
    if not (ref.isdigit() and len(ref) <= 18 and signed):
        await _forged(session, tap)
    who = Sender(tap.chat_id, tap.user_id, tap.name)
    team, actor = await _approver(rt, session, who, "button:declare")
    alert = await alert_store.get_alert(session, int(ref), for_update=True)
    if alert is None or alert.team_id != rt.team_ids[team.name]:
        raise AlertNotFound
    if alert.incident_id:
        raise Refused(f"This alert is already part of {alert.incident_id[:40]}.")
    incident = await service.declare(
        rt,
        session,
        team,
        title=" ".join(alert.title.split())[:200] or "alert",
        severity=severity_for_alert(alert.severity),
        actor=actor,
        alert_ids=[alert.id],
    )
    return f"🚨 Declared {incident.id} ({incident.severity})."


async def declare(rt: Runtime, session: AsyncSession, who: Sender, args: str) -> str:
    """/incident P1 title…"""
    parsed = parse_declaration(args)
    if not isinstance(parsed, Declared):
        return esc(parsed)
    team, actor = await _approver(rt, session, who, "/incident")
    incident = await service.declare(
        rt, session, team, title=parsed.title, severity=parsed.severity, actor=actor
    )
    return f"🚨 Declared <b>{incident.id}</b> ({incident.severity}): {esc(incident.title)}"


async def _the_open_one(rt: Runtime, session: AsyncSession, team: Team) -> IncidentRecord:
    open_ones = await service.open_incidents(rt, session, team)
    if len(open_ones) != 1:
        some = "several open incidents" if open_ones else "no open incident"
        raise Refused(f"There is {some}: name one, as in /note INC-… text.")
    return open_ones[0]


async def note(rt: Runtime, session: AsyncSession, who: Sender, args: str) -> str:
    """/note [INC-…] text: on the named incident, else on the only open one."""
    ident, text = parse_note(args)
    if not text:
        return "Usage: /note [INC-…] text"
    team, actor = await _approver(rt, session, who, "/note")
    if ident is None:
        ident = (await _the_open_one(rt, session, team)).id
    await service.add_note(rt, session, team, ident, text[:NOTE_MAX], actor)
    return f"📝 Noted on <b>{ident}</b>."


async def note_by_reply(
    rt: Runtime, session: AsyncSession, who: Sender, replied_id: int, replied_text: str, text: str
) -> str | None:
    """A reply to an incident card, or to its note question: a note. None: not about one."""
    ident = await cards.card_in_chat(session, who.chat_id, replied_id)
    if ident is None:
        found = ID_PATTERN.search(replied_text) if replied_text.startswith("📝 Note for") else None
        ident = found.group(0) if found else None
    if ident is None or not text.strip():
        return None
    team, actor = await _approver(rt, session, who, "note")
    await service.add_note(rt, session, team, ident, text.strip()[:NOTE_MAX], actor)
    return f"📝 Noted on <b>{ident}</b>."


async def timeline_text(rt: Runtime, session: AsyncSession, chat_id: int, args: str) -> str:
    """/timeline [id]: the last lines, with a link to the card."""
    team = _chat_team(rt, chat_id)
    ident = args.strip().upper()
    incident = (
        await service.get_in(rt, session, team, ident)
        if ident
        else await _the_open_one(rt, session, team)
    )
    lines = await store.last_lines(session, incident.id, TIMELINE_LINES)
    head = f"🧾 <b>{incident.id}</b> · {incident.severity} · {incident.status}"
    link = await _card_link(session, incident.id, chat_id)
    out = [head + (f' · <a href="{link}">card</a>' if link else "")]
    out += [ui.timeline_line(e, rt.zone) for e in lines]
    return join_lines(out)


async def open_text(rt: Runtime, session: AsyncSession, chat_id: int) -> str:
    """/incidents: the team's open incidents."""
    team = _chat_team(rt, chat_id)
    found = await service.open_incidents(rt, session, team)
    if not found:
        return f"No open incidents for team <b>{esc(team.name)}</b>."
    out = [f"🚨 <b>{len(found)} open</b> for team <b>{esc(team.name)}</b>"]
    for i in found:
        commander = esc(i.commander_name) if i.commander_name else "no commander"
        out.append(f"• <b>{i.id}</b> {i.severity} · {i.status} · {commander}\n  {esc(i.title)}")
    return join_lines(out)


def _chat_team(rt: Runtime, chat_id: int) -> Team:
    team = rt.policy.team_for_chat(chat_id)
    if team is None or team.name not in rt.team_ids:
        raise Refused("This chat does not belong to a team in the policy file.")
    return team


async def _card_link(session: AsyncSession, incident_id: str, chat_id: int) -> str | None:
    for card in await cards.cards_of(session, incident_id):
        if card.chat_id == chat_id and card.message_id is not None:
            return card_link(chat_id, card.message_id)
    return None
