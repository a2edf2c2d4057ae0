"""🚨 Break glass: an approver with a listed role approves a pending request alone, with a
reason given by ForceReply, a loud trail, and a review by the team afterwards."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from sqlalchemy.ext.asyncio import AsyncSession

from bot import private, questions
from bot.approvals.card import mention
from bot.approvals.decision import after_decision
from bot.approvals.outcome import outcome_of
from bot.buttons import keyboard, ref_uuid
from bot.errors import ForgedButton, NotAnApprover, Refused, RequestClosed
from bot.policy import RiskLevel, Team
from bot.rendering import clip, esc
from bot.rules import GlassAsk, glass_refusal
from bot.runtime import Runtime
from bot.votes import APPROVE, REJECT, Ballot, Decision, tally
from storage import approvals as repo
from storage import audit
from storage import breakglass as store
from storage import votes as vote_repo
from storage.outbox import Priority, edit_message, enqueue_text, put_message
from storage.teams import active_chats

KIND = "break_glass"
REASON_SECONDS = 300  # how long the ForceReply question for the reason stays open
MAX_REASON = 1000
NEVER = datetime.max.replace(tzinfo=UTC)  # a review does not expire


class BreakGlassRefused(Refused):
    code = "break_glass_refused"


async def _locked(
    rt: Runtime, session: AsyncSession, request_id: uuid.UUID, chat_id: int
) -> tuple[repo.RequestRecord, datetime, Team]:
    locked = await repo.lock(session, request_id)
    team = rt.policy.team_for_chat(chat_id)
    if locked is None or team is None or locked[0].team_id != rt.team_ids.get(team.name):
        raise ForgedButton("This button does not belong to this chat.")
    return locked[0], locked[1], team


async def _used_today(rt: Runtime, session: AsyncSession, team: Team, now: datetime) -> int:
    """Break-glasses of the team since midnight in its time zone (locked for this team)."""
    local = now.astimezone(rt.zone if team.timezone is None else ZoneInfo(team.timezone))
    midnight = local.replace(hour=0, minute=0, second=0, microsecond=0)
    return await store.count_today(session, rt.team_ids[team.name], midnight)


async def start_by_button(
    rt: Runtime,
    session: AsyncSession,
    *,
    ref: str,
    tag: str,
    chat_id: int,
    message_id: int,
    user_id: int,
) -> str:
    """A tap on 🚨 Break glass: refused at once if it could not pass; else the reason is
    asked by ForceReply (or, with require_reason = false, the glass is broken now)."""
    request_id = _checked(rt, ref, "bg", chat_id, tag)
    req, now, team = await _locked(rt, session, request_id, chat_id)
    if not req.pending or now >= req.expires_at:
        raise RequestClosed(f"This request is already {'expired' if req.pending else req.status}.")
    used = await _used_today(rt, session, team, now)
    refusal = glass_refusal(team, GlassAsk(user_id, "-", used))
    if refusal is not None:
        await _refused(session, req, user_id, refusal)
        raise BreakGlassRefused(refusal[:200])
    glass = team.break_glass
    assert glass is not None  # glass_refusal said so
    if not glass.require_reason:
        return await break_glass(rt, session, req.id, user_id, "", chat_id)
    who = team.approvers[user_id]
    await questions.ask(
        session,
        kind=KIND,
        chat_id=chat_id,
        user_id=user_id,
        text_html=(
            f"{mention(user_id, who.name)} 🚨 Why break the glass on "
            f"<code>{clip(req.action, 200)}</code> → <code>{clip(req.target, 200)}</code>? "
            "Reply to this message with the reason."
        ),
        subject={"request_id": str(req.id)},
        ttl_seconds=REASON_SECONDS,
        placeholder="the reason for breaking the glass",
        reply_to=message_id,
    )
    return "🚨 Reply to my message with your reason (5 minutes)."


def _checked(rt: Runtime, ref: str, act: str, chat_id: int, tag: str) -> uuid.UUID:
    try:
        request_id = ref_uuid(ref)
    except ValueError:
        raise ForgedButton() from None
    if not rt.signer.check("pe", ref, act, chat_id, tag):
        raise ForgedButton()
    return request_id


async def _refused(session: AsyncSession, req: repo.RequestRecord, user: int, why: str) -> None:
    await audit.record(
        session,
        "break_glass.refused",
        actor_telegram_id=user,
        team_id=req.team_id,
        approval_id=req.id,
        reason=why[:300],
    )


@questions.on_answer(KIND)
async def reason_given(rt: Runtime, session: AsyncSession, answer: questions.Answer) -> None:
    """The ForceReply answer: the glass is broken now, if everything still allows it."""
    request_id = uuid.UUID(str(answer.question.subject["request_id"]))
    try:
        await break_glass(rt, session, request_id, answer.user_id, answer.text, answer.chat_id)
    except Refused as exc:
        await enqueue_text(session, answer.chat_id, esc(exc.message), reply_to=answer.message_id)


async def break_glass(
    rt: Runtime,
    session: AsyncSession,
    request_id: uuid.UUID,
    user_id: int,
    reason: str,
    chat_id: int,
) -> str:
    """Approve the request on this approver's word, decided by bot.rules.decide (role, daily
    limit, reason), with its trail: audit, token, loud notice, private messages, review."""
    req, now, team = await _locked(rt, session, request_id, chat_id)
    if not req.pending or now >= req.expires_at:
        raise RequestClosed(f"This request is already {'expired' if req.pending else req.status}.")
    used = await _used_today(rt, session, team, now)
    votes = (await vote_repo.votes_for(session, [req.id]))[req.id]
    outcome = outcome_of(rt, req, votes, now, glass=GlassAsk(user_id, reason, used))
    if outcome.glass_by is None or outcome.decision is not Decision.APPROVED:
        await _refused(session, req, user_id, outcome.reason)
        raise BreakGlassRefused(outcome.reason[:200])
    who = team.approvers[user_id]
    decided = await repo.transition(
        session, req.id, "approved", decided_by=[{"id": user_id, "name": who.name}]
    )
    if decided is None:
        raise RequestClosed("This request was decided meanwhile.")
    decided = await repo.mark_policy(session, req.id, break_glass_reason=reason[:MAX_REASON])
    await audit.record(
        session,
        "approval.break_glass",
        actor=who.name,
        actor_telegram_id=user_id,
        team_id=req.team_id,
        approval_id=req.id,
        reason=reason[:MAX_REASON],
        used_today=used + 1,
    )
    await after_decision(
        rt, session, decided, votes, now, None, actor=who.name, actor_telegram_id=user_id
    )
    await _trail(rt, session, decided, team, user_id, chat_id)
    return "🚨 Glass broken: the request is approved."


async def _trail(
    rt: Runtime,
    session: AsyncSession,
    req: repo.RequestRecord,
    team: Team,
    user_id: int,
    chat_id: int,
) -> None:
    """The loud notice in the team's chats, a private message to every other approver, and
    the review card."""
    who = team.approvers[user_id]
    what = f"<code>{clip(req.action, 200)}</code> → <code>{clip(req.target, 200)}</code>"
    why = clip(req.break_glass_reason or "(no reason required)", 500)
    loud = (
        f"🚨🚨 <b>BREAK GLASS</b> by {mention(user_id, who.name)}: {what} is approved without "
        f"a quorum.\n<b>Reason:</b> {why}\nid <code>{req.id}</code>"
    )
    for chat in await active_chats(session, req.team_id):
        await enqueue_text(session, chat, loud, priority=Priority.URGENT_CARD)
    for other in team.approvers.values():
        if other.telegram_id != user_id:
            await private.send(session, other.telegram_id, loud)
    row = await put_message(
        session,
        chat_id=chat_id,
        purpose="break_glass_review",
        text_html=review_text(req, team, []),
        reply_markup=_review_markup(rt, req.id, chat_id),
        priority=Priority.URGENT_CARD,
    )
    await store.open_review(session, req.id, row)


def _review_markup(rt: Runtime, request_id: uuid.UUID, chat_id: int) -> dict[str, object]:
    return keyboard(
        [
            [
                ("👍 Acknowledge", rt.signer.policy_button(request_id, "ak", chat_id)),
                ("👎 Dispute", rt.signer.policy_button(request_id, "dp", chat_id)),
            ]
        ]
    )


@dataclass(frozen=True, slots=True)
class _Review:
    """What tally needs of the review: the glass-breaker is its 'requester'."""

    required_approvals: int
    reject_threshold: int
    requester_telegram_id: int | None
    requested_by: str
    expires_at: datetime


def _review_outcome(
    req: repo.RequestRecord, team: Team, verdicts: list[tuple[int, str, str]]
) -> tuple[Decision, int, int, int]:
    """(decision, acknowledgements, disputes, needed) under the level's normal rule: the
    team's threshold of acknowledgements, or its reject threshold of disputes."""
    rule = team.rule(RiskLevel(req.risk_level))
    breaker = int((req.decided_by or [{}])[0].get("id", 0))
    others = len([a for a in team.approvers if a != breaker])
    needed = max(1, min(rule.required_approvals, others))
    subject = _Review(needed, rule.reject_threshold, breaker, "", NEVER)
    ballots = [Ballot(v, APPROVE if verdict == "ack" else REJECT) for v, _, verdict in verdicts]
    plain = replace(rule, required_approvals=needed, required_roles=frozenset())
    out = tally(subject, plain, team.approvers, ballots, datetime.min.replace(tzinfo=UTC))
    return out.decision, len(out.approvals), len(out.rejects), needed


def review_text(req: repo.RequestRecord, team: Team, verdicts: list[tuple[int, str, str]]) -> str:
    decision, acks, disputes, needed = _review_outcome(req, team, verdicts)
    head = {
        Decision.APPROVED: "✅ <b>Break-glass acknowledged</b>",
        Decision.REJECTED: "⚠️ <b>Break-glass DISPUTED</b>",
    }.get(decision, "🔎 <b>Review the break-glass</b>")
    names = ", ".join(f"{clip(n, 40)} ({'👍' if v == 'ack' else '👎'})" for _, n, v in verdicts)
    return (
        f"{head}: <code>{clip(req.action, 200)}</code> → <code>{clip(req.target, 200)}</code>\n"
        f"<b>Reason:</b> {clip(req.break_glass_reason or '-', 500)}\n"
        f"<b>Acknowledged:</b> {acks}/{needed} · <b>Disputed:</b> {disputes}"
        f"{f' · {names}' if names else ''}\nid <code>{req.id}</code>"
    )


async def review_by_button(
    rt: Runtime,
    session: AsyncSession,
    *,
    ref: str,
    act: str,
    tag: str,
    chat_id: int,
    user_id: int,
) -> str:
    """👍 / 👎 on the review card by another approver of the team, audited."""
    request_id = _checked(rt, ref, act, chat_id, tag)
    req, _now, team = await _locked(rt, session, request_id, chat_id)
    approver = team.approvers.get(user_id)
    if approver is None:
        raise NotAnApprover(f"Only approvers of team {team.name} review a break-glass.")
    breaker = int((req.decided_by or [{}])[0].get("id", 0))
    if user_id == breaker:
        raise Refused("You broke the glass: the others review it.")
    if req.review_status != "open":
        raise RequestClosed(f"This review is already {req.review_status}.")
    verdict = "ack" if act == "ak" else "dispute"
    if not await store.add_review(session, req.id, user_id, approver.name, verdict):
        raise Refused("You already reviewed it.")
    await audit.record(
        session,
        "break_glass.review",
        actor=approver.name,
        actor_telegram_id=user_id,
        team_id=req.team_id,
        approval_id=req.id,
        verdict=verdict,
    )
    verdicts = await store.reviews(session, req.id)
    decision = _review_outcome(req, team, verdicts)[0]
    markup: dict[str, object] | None = _review_markup(rt, req.id, chat_id)
    if decision is not Decision.PENDING:
        status = "acknowledged" if decision is Decision.APPROVED else "disputed"
        if await store.close_review(session, req.id, status):
            await audit.record(
                session, f"break_glass.{status}", team_id=req.team_id, approval_id=req.id
            )
        markup = None
    if req.review_message_row is not None:
        await edit_message(
            session,
            req.review_message_row,
            text_html=review_text(req, team, verdicts),
            reply_markup=markup,
            priority=Priority.URGENT_CARD,
        )
    return "👍 Acknowledged." if verdict == "ack" else "👎 Disputed."
