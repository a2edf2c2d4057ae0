"""Alert intake routes (Alertmanager, Grafana, generic JSON), card buttons and alert commands."""

from __future__ import annotations

import hashlib
import logging
from collections import OrderedDict
from dataclasses import asdict
from typing import Any

from aiogram import Router
from aiogram.filters import Command, CommandObject
from aiogram.methods import AnswerCallbackQuery
from aiogram.types import CallbackQuery, Message
from aiohttp import web
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from bot import alerts as service
from bot.alerts.sources import Kind
from bot.buttons import AlertAction
from bot.errors import ForgedButton, Invalid
from bot.policy import Team
from bot.runtime import RUNTIME, Runtime
from handlers.api import ApiError, authenticate, domain_error, read_json, unprocessable
from handlers.replies import answer_tap, reply_with
from storage.alerts import IncomingAlert

log = logging.getLogger(__name__)

routes = web.RouteTableDef()


class _RejectLog:
    """Log a rejected body once per group (Alertmanager re-sends it every group_interval)."""

    def __init__(self, size: int = 2048) -> None:
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._size = size

    def first(self, key: str) -> bool:
        if key in self._seen:
            self._seen.move_to_end(key)
            return False
        self._seen[key] = None
        if len(self._seen) > self._size:
            self._seen.popitem(last=False)
        return True


_rejected = _RejectLog()


def _log_rejected(team: Team, path: str, data: Any, exc: ApiError | Invalid) -> None:
    answer = exc if isinstance(exc, ApiError) else domain_error(exc)
    group = data.get("groupKey") if isinstance(data, dict) else None
    ident = str(group) if group else f"{answer.status}:{answer.text}"
    key = hashlib.sha256(f"{team.name}\x1f{path}\x1f{ident}".encode()).hexdigest()
    if _rejected.first(key):
        log.warning(
            "rejected alerts for team %s on %s (group %r): %s %s",
            team.name,
            path,
            str(group)[:200] if group else None,
            answer.status,
            (answer.text or "")[:300],
        )


def _read_alerts(kind: Kind, data: Any) -> list[IncomingAlert]:
    try:
        return service.read_alerts(kind, data)
    except ValidationError as exc:
        unprocessable(exc)


async def _receive(request: web.Request, kind: Kind) -> web.Response:
    team = authenticate(request, scope="alerts:write").team
    data: Any = None
    try:
        data = await read_json(request)
        alerts = _read_alerts(kind, data)
    except (ApiError, Invalid) as exc:
        _log_rejected(team, request.path, data, exc)
        raise
    result = await service.ingest(request.app[RUNTIME], team, alerts, kind=kind)
    return web.json_response({"status": "ok", **asdict(result)})


@routes.post("/api/v1/alerts/alertmanager")
async def receive_alertmanager(request: web.Request) -> web.Response:
    return await _receive(request, "alertmanager")


@routes.post("/api/v1/alerts/grafana")
async def receive_grafana(request: web.Request) -> web.Response:
    return await _receive(request, "grafana")


@routes.post("/api/v1/alerts")
async def receive_generic(request: web.Request) -> web.Response:
    return await _receive(request, "generic")


# --------------------------------------------------------------------------- Telegram


async def press_alert_button(
    callback: CallbackQuery, callback_data: AlertAction, session: AsyncSession, runtime: Runtime
) -> AnswerCallbackQuery:
    msg = callback.message
    if msg is None:
        return callback.answer(ForgedButton().message, show_alert=True)
    tap = service.AlertTap(
        ref=callback_data.ref,
        act=callback_data.act,
        tag=callback_data.tag,
        chat_id=msg.chat.id,
        message_id=msg.message_id,
        user_id=callback.from_user.id,
    )
    return await answer_tap(callback.id, service.press_button(runtime, session, tap))


async def show_alerts(message: Message, session: AsyncSession, runtime: Runtime) -> None:
    await reply_with(session, message, service.list_firing(runtime, session, message.chat.id))


async def show_silences(message: Message, session: AsyncSession, runtime: Runtime) -> None:
    await reply_with(session, message, service.list_silences(runtime, session, message.chat.id))


async def remove_silence(
    message: Message, command: CommandObject, session: AsyncSession, runtime: Runtime
) -> None:
    sender = message.from_user
    # None: posted on behalf of a channel or the group, not by a person.
    user_id = sender.id if sender is not None and message.sender_chat is None else None
    await reply_with(
        session,
        message,
        service.unsilence(
            runtime,
            session,
            chat_id=message.chat.id,
            user_id=user_id,
            ref=command.args or "",
        ),
    )


def make_router() -> Router:
    """This module's Telegram handlers; a fresh router per app (a router has one parent)."""
    router = Router(name=__name__)
    router.callback_query.register(press_alert_button, AlertAction.filter())
    router.message.register(show_alerts, Command("alerts"))
    router.message.register(show_silences, Command("silences"))
    router.message.register(remove_silence, Command("unsilence"))
    return router
