"""Step-up for votes on a level with `step_up = "private"`: an approval tapped on the group
card counts once its voter confirms it in a private chat with the bot within 60 s."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from bot import private, questions
from bot.approvals import totp_stepup
from bot.approvals.decision import after_decision, decided_by
from bot.approvals.outcome import outcome_of
from bot.approvals.publish import refresh_cards
from bot.buttons import keyboard, ref_uuid
from bot.errors import ForgedButton, Refused, RequestClosed
from bot.policy import RiskLevel
from bot.rendering import clip, esc
from bot.runtime import Runtime
from bot.votes import APPROVE, Decision
from storage import approvals as repo
from storage import audit
from storage import confirmations as store
from storage import votes as vote_repo
from storage.outbox import enqueue_text

CONFIRM_SECONDS = 60


class StepUpUnreachable(Refused):
    code = "step_up_unreachable"


def step_up_of(rt: Runtime, req: repo.RequestRecord) -> str | None:
    """The request's level's step_up, if any."""
    team = rt.team(req.team_id)
    return None if team is None else team.rule(RiskLevel(req.risk_level)).step_up


async def before_vote(
    rt: Runtime, session: AsyncSession, req: repo.RequestRecord, decision: str, user_id: int
) -> frozenset[int] | None:
    """Under step-up, the voters who confirmed so far (a tap's votes do not say); None on
    other levels. Only approvals need a confirmation (a rejection is the safe way): one is
    refused (audited) before it is stored if the bot cannot ask its voter privately, and
    the voter's own approval left unconfirmed past its window is withdrawn, so the tap
    counts anew."""
    step_up = step_up_of(rt, req)
    if step_up is None:
        return None
    if decision == APPROVE:
        await _require_reachable(rt, session, req, user_id, step_up)
        await store.withdraw_stale(session, req.id, user_id, CONFIRM_SECONDS)
    return await store.confirmed_voters(session, req.id)


async def _require_reachable(
    rt: Runtime, session: AsyncSession, req: repo.RequestRecord, user_id: int, step_up: str
) -> None:
    why = None
    if not await private.reachable(session, user_id):
        name = f"@{rt.bot_username}" if rt.bot_username else "the bot"
        why = (
            f"This approval needs a confirmation in private: open {name}, press Start, "
            "then tap Approve again."
        )
    elif step_up == "totp":
        why = await totp_stepup.refusal(rt, session, user_id)
    if why is not None:
        await audit.record(
            session,
            "vote.refused",
            actor_telegram_id=user_id,
            team_id=req.team_id,
            approval_id=req.id,
            reason="step_up_unreachable",
        )
        raise StepUpUnreachable(why)


async def ask(rt: Runtime, session: AsyncSession, req: repo.RequestRecord, user_id: int) -> None:
    """The private question: Confirm / Cancel, or the TOTP code (queued in this transaction)."""
    if step_up_of(rt, req) == "totp":
        await totp_stepup.ask_code(session, req, user_id, CONFIRM_SECONDS)
        return
    text = (
        f"🔐 Confirm your approval of <code>{clip(req.action, 200)}</code> on "
        f"<code>{clip(req.target, 200)}</code>? (risk <b>{esc(req.risk_level.upper())}</b>; "
        f"within {CONFIRM_SECONDS} s)\nid <code>{req.id}</code>"
    )
    markup = keyboard(
        [
            [
                ("✅ Confirm", rt.signer.policy_button(req.id, "ok", user_id)),
                ("✖ Cancel", rt.signer.policy_button(req.id, "no", user_id)),
            ]
        ]
    )
    await private.send(session, user_id, text, reply_markup=markup)


async def answer(
    rt: Runtime,
    session: AsyncSession,
    *,
    ref: str,
    act: str,
    tag: str,
    chat_id: int,
    user_id: int,
) -> str:
    """Confirm ("ok") or Cancel ("no") tapped in the voter's private chat; the toast."""
    try:
        request_id: uuid.UUID | None = ref_uuid(ref)
    except ValueError:
        request_id = None
    if (
        request_id is None
        or chat_id != user_id
        or not rt.signer.check("pe", ref, act, chat_id, tag)
    ):
        raise ForgedButton()
    locked = await repo.lock(session, request_id)
    if locked is None:
        raise ForgedButton()
    req, now = locked
    if not req.pending or now >= req.expires_at:
        raise RequestClosed(f"This request is already {'expired' if req.pending else req.status}.")
    if act != "ok" and act != "no":
        raise ForgedButton()
    if act == "no":
        if await store.withdraw(session, req.id, user_id):
            await _audit(session, "vote.withdrawn", req, user_id)
            await _refresh(rt, session, req, now)
            return "Cancelled: your approval was withdrawn."
        return "Nothing to cancel."
    if step_up_of(rt, req) == "totp":
        raise Refused("This approval needs the code of your authenticator, not a button.")
    return await _confirm(rt, session, req, now, user_id)


@questions.on_answer(totp_stepup.KIND)
async def code_given(rt: Runtime, session: AsyncSession, answer: questions.Answer) -> None:
    """A reply with a TOTP code: checked, then the approval confirmed like Confirm."""
    request_id = totp_stepup.request_of(answer)
    locked = await repo.lock(session, request_id)
    try:
        if locked is None or not locked[0].pending or locked[1] >= locked[0].expires_at:
            raise RequestClosed("This request is closed.")
        await totp_stepup.check_code(rt, session, answer.user_id, answer.text)
        toast = await _confirm(rt, session, locked[0], locked[1], answer.user_id)
    except totp_stepup.WrongCode as exc:
        toast = exc.message
        if not exc.locked and locked is not None:
            await totp_stepup.ask_code(session, locked[0], answer.user_id, CONFIRM_SECONDS)
    except Refused as exc:
        toast = exc.message
    await enqueue_text(session, answer.chat_id, esc(toast), reply_to=answer.message_id)


async def _confirm(
    rt: Runtime, session: AsyncSession, req: repo.RequestRecord, now: datetime, user_id: int
) -> str:
    done = await store.confirm(session, req.id, user_id, CONFIRM_SECONDS)
    if done == "late":
        await _audit(session, "vote.withdrawn", req, user_id, reason="late")
        await _refresh(rt, session, req, now)
        return f"Too late (over {CONFIRM_SECONDS} s): tap Approve on the card again."
    if done == "missing":
        return "Nothing to confirm."
    await _audit(session, "vote.confirmed", req, user_id)
    return await _after_confirm(rt, session, req, now, user_id)


async def _after_confirm(
    rt: Runtime, session: AsyncSession, req: repo.RequestRecord, now: datetime, user_id: int
) -> str:
    votes = (await vote_repo.votes_for(session, [req.id]))[req.id]
    outcome = outcome_of(rt, req, votes, now)
    if outcome.decision is Decision.APPROVED:
        decided = await repo.transition(
            session, req.id, "approved", decided_by=decided_by(votes, outcome.deciders)
        )
        if decided is not None:
            name = next((v.voter_name for v in votes if v.voter_telegram_id == user_id), None)
            await after_decision(
                rt, session, decided, votes, now, None, actor=name, actor_telegram_id=user_id
            )
            return "✅ Confirmed and approved: the executor can go ahead."
    await refresh_cards(rt, session, req, votes, now)
    return f"✅ Confirmed ({len(outcome.approvals)}/{outcome.required} approvals)."


async def _refresh(
    rt: Runtime, session: AsyncSession, req: repo.RequestRecord, now: datetime
) -> None:
    votes = (await vote_repo.votes_for(session, [req.id]))[req.id]
    await refresh_cards(rt, session, req, votes, now)


async def _audit(
    session: AsyncSession,
    event: str,
    req: repo.RequestRecord,
    user_id: int,
    reason: str = "by_voter",
) -> None:
    await audit.record(
        session,
        event,
        actor_telegram_id=user_id,
        team_id=req.team_id,
        approval_id=req.id,
        reason=reason,
    )
