"""Step-up by TOTP (`step_up = "totp"`): /enroll in a private chat shows a secret once, and a
vote on the group card counts once its voter replies with the current 6-digit code."""

from __future__ import annotations

import uuid

from sqlalchemy.ext.asyncio import AsyncSession

from bot import questions, totp
from bot.errors import Refused
from bot.rendering import clip, esc, fmt_time
from bot.runtime import Runtime
from storage import approvals as repo
from storage import audit
from storage import totp as store

KIND = "totp_step_up"


class WrongCode(Refused):
    code = "wrong_code"

    def __init__(self, message: str, *, locked: bool) -> None:
        super().__init__(message)
        self.locked = locked


async def enroll(rt: Runtime, session: AsyncSession, user_id: int, chat_type: str) -> str:
    """/enroll: a new secret for an approver, sealed and stored; the otpauth URI shown once."""
    if chat_type != "private":
        return "Send /enroll to me in a private chat: a secret must not be shown in a group."
    teams = rt.policy.teams_of(user_id)
    if not teams:
        return "Only approvers enrol for step-up."
    secret = totp.new_secret()
    kid, sealed = rt.sealer.seal(secret, user_id)
    await store.enroll(session, user_id, kid, sealed)
    await audit.record(session, "step_up.enrolled", actor_telegram_id=user_id, chat_id=user_id)
    name = teams[0].approvers[user_id].name
    uri = totp.otpauth_uri(secret, name)
    return (
        "🔐 Add this to your authenticator app (shown once; /enroll again replaces it):\n"
        f"<code>{esc(uri)}</code>"
    )


async def refusal(rt: Runtime, session: AsyncSession, user_id: int) -> str | None:
    """Why this voter cannot give a code now (not enrolled, locked), if so."""
    locked = await store.lock_secret(session, user_id)
    if locked is None:
        name = f"@{rt.bot_username}" if rt.bot_username else "the bot"
        return f"This approval needs a TOTP code: send /enroll to {name} in private first."
    if locked.locked_until is not None and locked.locked_until > locked.db_now:
        return (
            f"Step-up is locked after wrong codes until {fmt_time(locked.locked_until, rt.zone)}."
        )
    return None


async def ask_code(
    session: AsyncSession, req: repo.RequestRecord, user_id: int, seconds: float
) -> None:
    await questions.ask(
        session,
        kind=KIND,
        chat_id=user_id,
        user_id=user_id,
        text_html=(
            f"🔐 Reply with the 6-digit code of your authenticator to confirm your approval of "
            f"<code>{clip(req.action, 200)}</code> on <code>{clip(req.target, 200)}</code>."
            f"\nid <code>{req.id}</code>"
        ),
        subject={"request_id": str(req.id)},
        ttl_seconds=seconds,
        placeholder="6-digit code",
    )


async def check_code(rt: Runtime, session: AsyncSession, user_id: int, code: str) -> None:
    """Raise Refused for a wrong code (counted; the fifth locks step-up for 15 minutes)."""
    secret_row = await store.lock_secret(session, user_id)
    if secret_row is None:
        raise Refused("You are not enrolled any more: /enroll first.")
    if secret_row.locked_until is not None and secret_row.locked_until > secret_row.db_now:
        raise Refused("Step-up is locked after wrong codes; try again later.")
    try:
        secret = rt.sealer.open(secret_row.kid, secret_row.sealed, user_id)
    except totp.SealError:
        raise Refused(
            "Your enrolment no longer opens (the key was rotated out): /enroll."
        ) from None
    if totp.verify(secret, code, secret_row.db_now):
        await store.record_success(session, user_id)
        return
    left = await store.record_failure(session, user_id, totp.MAX_FAILURES, totp.LOCK_SECONDS)
    event = "step_up.locked" if left == 0 else "step_up.failed"
    await audit.record(session, event, actor_telegram_id=user_id, chat_id=user_id)
    if left == 0:
        minutes = totp.LOCK_SECONDS // 60
        raise WrongCode(f"Wrong code: step-up is locked for {minutes} minutes.", locked=True)
    raise WrongCode(f"Wrong code ({left} tries left).", locked=False)


def request_of(answer: questions.Answer) -> uuid.UUID:
    return uuid.UUID(str(answer.question.subject["request_id"]))
