"""Approvals: vote buttons, /pending /status /whoami, and the /api/v1 HTTP API."""

from __future__ import annotations

import json
import uuid
from typing import Any

from aiogram import Router
from aiogram.filters import Command, CommandObject, Filter
from aiogram.methods import AnswerCallbackQuery
from aiogram.types import CallbackQuery, Message
from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncSession

from bot import approvals
from bot.buttons import ApprovalVote
from bot.policy import RiskLevel
from bot.runtime import RUNTIME, Runtime
from handlers.api import authenticate, fail, page_limit, parse, read_json, text_problem
from handlers.openapi import CreateApproval, RedeemToken, ReportResult, document
from handlers.openapi_parts import API
from handlers.replies import answer_tap, reply

routes = web.RouteTableDef()

# ---------------------------------------------------------------- Telegram


class MalformedApprovalButton(Filter):
    """callback_data that claims to be a vote but does not unpack (a forged or stale client)."""

    async def __call__(self, query: CallbackQuery) -> bool:
        return bool(query.data) and str(query.data).startswith("ap:")


async def vote_by_button(
    query: CallbackQuery, callback_data: ApprovalVote, session: AsyncSession, runtime: Runtime
) -> AnswerCallbackQuery:
    tap = tap_of(query, callback_data)
    if tap is None:
        return query.answer("This button is not valid.", show_alert=True)
    return await press_vote(query.id, tap, session, runtime)


def tap_of(query: CallbackQuery, button: ApprovalVote) -> approvals.Tap | None:
    """The tap of a vote button's callback query (None without the message it was under)."""
    msg = query.message
    if msg is None:
        return None
    return approvals.Tap(
        ref=button.ref,
        vote=button.vote,
        tag=button.tag,
        chat_id=msg.chat.id,
        message_id=msg.message_id,
        user_id=query.from_user.id,
        user_name=query.from_user.username or query.from_user.first_name,
    )


async def press_vote(
    query_id: str, tap: approvals.Tap, session: AsyncSession, runtime: Runtime
) -> AnswerCallbackQuery:
    """A vote or withdraw button pressed: counted (or refused) and answered with a toast."""
    return await answer_tap(query_id, _count(tap, session, runtime))


async def _count(tap: approvals.Tap, session: AsyncSession, runtime: Runtime) -> str:
    if tap.vote == approvals.WITHDRAW:
        return await approvals.withdraw(runtime, session, tap)
    return (await approvals.vote(runtime, session, tap)).toast


async def refuse_malformed_button(
    query: CallbackQuery, session: AsyncSession, runtime: Runtime
) -> AnswerCallbackQuery:
    msg = query.message
    err = await approvals.refuse_malformed(
        runtime,
        session,
        chat_id=msg.chat.id if msg else 0,
        message_id=msg.message_id if msg else 0,
        user_id=query.from_user.id,
    )
    return query.answer(err.message, show_alert=True)


async def show_pending(message: Message, session: AsyncSession, runtime: Runtime) -> None:
    if message.chat.type == "private" and message.from_user is not None:
        text = await approvals.pending_privately(runtime, session, message.from_user.id)
    else:
        text = await approvals.pending_text(runtime, session, message.chat.id)
    await reply(session, message, text)


async def show_status(
    message: Message, command: CommandObject, session: AsyncSession, runtime: Runtime
) -> None:
    text = await approvals.status_text(runtime, session, message.chat.id, command.args or "")
    await reply(session, message, text)


async def show_whoami(message: Message, session: AsyncSession, runtime: Runtime) -> None:
    sender = message.from_user
    if sender is None or message.sender_chat is not None:
        text = "You are posting as a channel or anonymous admin: votes need your own account."
    else:
        text = approvals.whoami_text(runtime, sender.id, sender.first_name)
    await reply(session, message, text)


def make_router() -> Router:
    """This module's Telegram handlers; a fresh router per app (a router has one parent)."""
    router = Router(name=__name__)
    router.callback_query.register(vote_by_button, ApprovalVote.filter())
    router.callback_query.register(refuse_malformed_button, MalformedApprovalButton())
    router.message.register(show_pending, Command("pending"))
    router.message.register(show_status, Command("status"))
    router.message.register(show_whoami, Command("whoami"))
    return router


# ---------------------------------------------------------------- HTTP


def _request_id(request: web.Request) -> uuid.UUID:
    try:
        return uuid.UUID(request.match_info["id"])
    except ValueError:
        fail(404, "not_found", "no such approval request")


def _time(value: Any) -> Any:
    return value.isoformat() if value is not None else None


def approval_json(rt: Runtime, d: approvals.Details) -> dict[str, Any]:
    r = d.request
    ignored = set(d.outcome.ignored)
    out: dict[str, Any] = {
        "id": str(r.id),
        "status": r.status,
        "team": rt.team_name(r.team_id),
        "action": r.action,
        "target": r.target,
        "description": r.description,
        "reason": r.reason,
        "risk_level": r.risk_level,
        "required_approvals": d.outcome.required,
        "reject_threshold": d.outcome.reject_threshold,
        "approvals": len(d.outcome.approvals),
        "rejects": len(d.outcome.rejects),
        "requested_by": r.requested_by,
        "requested_by_telegram_id": r.requester_telegram_id,
        "fingerprint": r.fingerprint,
        "incident_id": r.incident_id,
        "hit_count": r.hit_count,
        "last_seen_at": _time(r.last_seen_at),
        "metadata": r.metadata,
        "blast_radius": r.blast_radius,
        "dry_run_checks": r.dry_run_checks,
        "callback_url": r.callback_url,
        "created_at": _time(r.created_at),
        "expires_at": _time(r.expires_at),
        "decided_at": _time(r.decided_at),
        "decided_by": r.decided_by or [],
        "votes": [
            {
                "voter_telegram_id": v.voter_telegram_id,
                "voter_name": v.voter_name,
                "decision": v.decision,
                "reason": v.reason,
                "at": _time(v.created_at),
                "counted": v.voter_telegram_id not in ignored,
            }
            for v in d.votes
        ],
        "result": None
        if r.result_at is None
        else {"success": r.result_success, "detail": r.result_detail, "at": _time(r.result_at)},
        "decision_reason": d.outcome.reason,
        "action_pattern": r.action_pattern,
        "trust_score": r.trust_score,
        "auto_rule": r.auto_rule,
        "deny_rule": d.outcome.deny_rule,
        "break_glass": r.break_glass_reason is not None,
        "revoked_at": _time(r.revoked_at),
    }
    if r.status == "approved" and d.token is not None:
        out["approval_token"] = d.token.token
        out["token_expires_at"] = _time(d.token.expires_at)
        out["token_redeemed"] = d.token.redeemed_at is not None
    return out


@routes.post(f"{API}/approvals")
async def create_approval(request: web.Request) -> web.Response:
    rt = request.app[RUNTIME]
    caller = authenticate(request, scope="approvals:create")
    team = caller.team
    await rt.creation_limits.take(caller.key)
    data = await read_json(request)
    body = parse(CreateApproval, data)
    key = request.headers.get("Idempotency-Key")
    if key is not None and not 1 <= len(key) <= 256:
        fail(422, "validation_error", "Idempotency-Key: 1-256 characters", field="Idempotency-Key")
    if key is not None and (problem := text_problem(key)) is not None:
        # aiohttp hands undecodable header bytes over as lone surrogates.
        fail(422, "validation_error", f"Idempotency-Key: {problem}", field="Idempotency-Key")
    new = approvals.NewRequest(
        action=body.action,
        target=body.target,
        risk_level=RiskLevel(body.risk_level),
        requested_by=body.requested_by,
        requested_by_telegram_id=body.requested_by_telegram_id,
        description=body.description,
        fingerprint=body.fingerprint,
        incident_id=body.incident_id,
        metadata=body.metadata,
        blast_radius=body.blast_radius,
        dry_run_checks=body.dry_run_checks,
        expires_in=body.expires_in,
        callback_url=body.callback_url,
        action_pattern=body.action_pattern,
        reason=body.reason,
    )
    req, created = await approvals.create_request(
        rt,
        team,
        new,
        idempotency_key=key,
        body_sha256=approvals.body_digest(data) if key is not None else None,
    )
    details = await approvals.get_request(rt, team, req.id)
    return web.json_response(approval_json(rt, details), status=201 if created else 200)


# A page stops early past this many bytes of rows (the rest follow by `next`): rows are
# bounded one by one, but a hundred of the largest would still make a huge response.
PAGE_MAX_BYTES = 1024 * 1024


@routes.get(f"{API}/approvals")
async def list_approvals(request: web.Request) -> web.Response:
    rt = request.app[RUNTIME]
    team = authenticate(request, scope="approvals:read").team
    status = request.query.get("status")
    if status is not None and status not in approvals.STATUSES:
        fail(
            422,
            "validation_error",
            f"status: one of {', '.join(approvals.STATUSES)}",
            field="status",
        )
    page = await approvals.list_page(
        rt, team, status, limit=page_limit(request), cursor=request.query.get("cursor")
    )
    rows: list[str] = []
    size = 0
    for d in page.items:
        row = json.dumps(approval_json(rt, d))
        size += len(row)
        if rows and size > PAGE_MAX_BYTES:
            break
        rows.append(row)
    more = page.more or len(rows) < len(page.items)
    after = approvals.cursor_of(page.items[len(rows) - 1].request) if more else None
    body = f'{{"approvals": [{", ".join(rows)}], "next": {json.dumps(after)}}}'
    return web.Response(text=body, content_type="application/json")


@routes.get(f"{API}/approvals/{{id}}")
async def get_approval(request: web.Request) -> web.Response:
    rt = request.app[RUNTIME]
    team = authenticate(request, scope="approvals:read").team
    details = await approvals.get_request(rt, team, _request_id(request))
    return web.json_response(approval_json(rt, details))


@routes.post(f"{API}/approvals/{{id}}/cancel")
async def cancel_approval(request: web.Request) -> web.Response:
    rt = request.app[RUNTIME]
    caller = authenticate(request, scope="approvals:cancel")
    details = await approvals.cancel_request(
        rt, caller.team, _request_id(request), actor=caller.actor
    )
    return web.json_response(approval_json(rt, details))


@routes.post(f"{API}/approvals/{{id}}/result")
async def report_result(request: web.Request) -> web.Response:
    rt = request.app[RUNTIME]
    caller = authenticate(request, scope="results:write")
    body = parse(ReportResult, await read_json(request))
    details = await approvals.report_result(
        rt, caller.team, _request_id(request), body.success, body.detail, actor=caller.actor
    )
    return web.json_response(approval_json(rt, details))


@routes.post(f"{API}/tokens/redeem")
async def redeem_token(request: web.Request) -> web.Response:
    rt = request.app[RUNTIME]
    caller = authenticate(request, scope="tokens:redeem")
    body = parse(RedeemToken, await read_json(request))
    done = await approvals.redeem_token(
        rt,
        caller.team,
        body.token,
        actor=caller.actor,
        action=body.action,
        target=body.target,
    )
    r = done.request
    return web.json_response(
        {
            "id": str(r.id),
            "action": r.action,
            "target": r.target,
            "risk_level": r.risk_level,
            "approvers": list(done.approvers),
            "jti": str(done.jti),
            "break_glass": done.break_glass,
        }
    )


@routes.get(f"{API}/openapi.json")
async def openapi(request: web.Request) -> web.Response:
    return web.json_response(document())
