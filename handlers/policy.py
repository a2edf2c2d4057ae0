"""The policy engine in chat and over HTTP: /trust and its reset buttons, ⛔ Revoke on an
auto-approved card, GET /api/v1/trust and POST /api/v1/trust/{pattern}/reset."""

from __future__ import annotations

from typing import Any

from aiogram import Router
from aiogram.filters import Command
from aiogram.methods import AnswerCallbackQuery
from aiogram.types import CallbackQuery, Message
from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncSession

from bot import errors, trust
from bot.approvals import breakglass, stepup, totp_stepup
from bot.approvals.revoke import revoke_by_button
from bot.buttons import PolicyAction, TrustReset
from bot.rules import PATTERN_MAX
from bot.runtime import RUNTIME, Runtime
from handlers.api import authenticate, fail, text_problem
from handlers.openapi_parts import API
from handlers.replies import answer_tap
from storage.outbox import enqueue_text
from storage.trust import TrustRecord

routes = web.RouteTableDef()


async def show_trust(message: Message, session: AsyncSession, runtime: Runtime) -> None:
    text, markup = await trust.trust_text(runtime, session, message.chat.id)
    await enqueue_text(
        session, message.chat.id, text, reply_to=message.message_id, reply_markup=markup
    )


async def enroll_totp(message: Message, session: AsyncSession, runtime: Runtime) -> None:
    sender = message.from_user
    if sender is None or message.sender_chat is not None:
        return
    text = await totp_stepup.enroll(runtime, session, sender.id, message.chat.type)
    await enqueue_text(session, message.chat.id, text, reply_to=message.message_id)


async def reset_trust_button(
    query: CallbackQuery, callback_data: TrustReset, runtime: Runtime
) -> AnswerCallbackQuery:
    msg = query.message
    if msg is None:
        return query.answer("This button is not valid.", show_alert=True)
    return await answer_tap(
        query.id,
        trust.reset_by_button(
            runtime, msg.chat.id, query.from_user.id, callback_data.ref, callback_data.tag
        ),
    )


async def policy_button(
    query: CallbackQuery, callback_data: PolicyAction, session: AsyncSession, runtime: Runtime
) -> AnswerCallbackQuery:
    msg = query.message
    if msg is None or callback_data.act not in ("rv", "ok", "no", "bg", "ak", "dp"):
        return query.answer("This button is not valid.", show_alert=True)
    act = callback_data.act
    try:
        if act == "bg":
            toast = await breakglass.start_by_button(
                runtime,
                session,
                ref=callback_data.ref,
                tag=callback_data.tag,
                chat_id=msg.chat.id,
                message_id=msg.message_id,
                user_id=query.from_user.id,
            )
        elif act in ("ak", "dp"):
            toast = await breakglass.review_by_button(
                runtime,
                session,
                ref=callback_data.ref,
                act=act,
                tag=callback_data.tag,
                chat_id=msg.chat.id,
                user_id=query.from_user.id,
            )
        elif act == "rv":
            toast = await revoke_by_button(
                runtime,
                session,
                ref=callback_data.ref,
                tag=callback_data.tag,
                chat_id=msg.chat.id,
                user_id=query.from_user.id,
            )
        else:
            toast = await stepup.answer(
                runtime,
                session,
                ref=callback_data.ref,
                act=callback_data.act,
                tag=callback_data.tag,
                chat_id=msg.chat.id,
                user_id=query.from_user.id,
            )
    except errors.Refused as exc:
        return query.answer(exc.message[:200], show_alert=True)
    return query.answer(toast[:200])


def make_router() -> Router:
    """This module's Telegram handlers; a fresh router per app (a router has one parent)."""
    router = Router(name=__name__)
    router.message.register(show_trust, Command("trust"))
    router.message.register(enroll_totp, Command("enroll"))
    router.callback_query.register(reset_trust_button, TrustReset.filter())
    router.callback_query.register(policy_button, PolicyAction.filter())
    return router


# ---------------------------------------------------------------- HTTP


def _time(value: Any) -> Any:
    return value.isoformat() if value is not None else None


def trust_json(r: TrustRecord) -> dict[str, Any]:
    return {
        "pattern": r.pattern,
        "score": r.score,
        "total_approvals": r.total_approvals,
        "total_rejections": r.total_rejections,
        "last_approver": r.last_approver,
        "last_approved_at": _time(r.last_approved_at),
        "last_rejecter": r.last_rejecter,
        "last_rejected_at": _time(r.last_rejected_at),
        "updated_at": _time(r.updated_at),
    }


def _limit(request: web.Request) -> int:
    text = request.query.get("limit")
    if text is None:
        return trust.PAGE_SIZE
    if not (text.isascii() and text.isdigit() and len(text) <= 3) or not (
        1 <= int(text) <= trust.PAGE_MAX
    ):
        fail(
            422, "validation_error", f"limit: an integer from 1 to {trust.PAGE_MAX}", field="limit"
        )
    return int(text)


@routes.get(f"{API}/trust")
async def list_trust(request: web.Request) -> web.Response:
    rt = request.app[RUNTIME]
    team = authenticate(request, scope="approvals:read").team
    cursor = request.query.get("cursor")
    if cursor is not None and text_problem(cursor):
        fail(422, "validation_error", "cursor: not a cursor from a previous page", field="cursor")
    page = await trust.trust_page(rt, team, limit=_limit(request), cursor=cursor)
    return web.json_response({"trust": [trust_json(r) for r in page.items], "next": page.next})


@routes.post(f"{API}/trust/{{pattern:.+}}/reset")
async def reset_trust(request: web.Request) -> web.Response:
    rt = request.app[RUNTIME]
    caller = authenticate(request, scope="trust:reset")
    pattern = request.match_info["pattern"]
    if len(pattern) > PATTERN_MAX or text_problem(pattern):
        fail(422, "validation_error", "pattern: not a stored pattern", field="pattern")
    record = await trust.reset_by_hand(rt, caller.team, pattern, caller.actor)
    return web.json_response(trust_json(record))
