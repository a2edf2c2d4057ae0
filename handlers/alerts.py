"""Alert intake (Alertmanager, Grafana, generic JSON), alert card buttons and alert commands."""

from __future__ import annotations

import hashlib
import logging
from collections import OrderedDict
from datetime import datetime
from typing import Any, Literal

from aiogram import Router
from aiogram.filters import Command, CommandObject
from aiogram.methods import AnswerCallbackQuery
from aiogram.types import CallbackQuery, Message
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator
from sqlalchemy.ext.asyncio import AsyncSession

from bot import alerts as service
from bot.buttons import AlertAction
from bot.fingerprints import derive_fingerprint, real_time, web_url
from bot.policy import Team
from bot.rendering import esc
from bot.runtime import RUNTIME, Runtime
from handlers.api import ApiError, authenticate, fail, parse, read_json, unprocessable
from storage.alerts import IncomingAlert
from storage.outbox import enqueue_text

log = logging.getLogger(__name__)

router = Router(name=__name__)
routes = web.RouteTableDef()

MAX_ALERTS = 10_000
Status = Literal["firing", "resolved"]
Scalar = str | int | float | bool


class _Body(BaseModel):
    # Sources add fields over time; unknown ones are ignored, known ones are checked.
    model_config = ConfigDict(extra="ignore")


class AlertmanagerAlert(_Body):
    status: Status
    labels: dict[str, str]
    annotations: dict[str, str] = Field(default_factory=dict)
    startsAt: datetime | None = None
    endsAt: datetime | None = None
    generatorURL: str = ""
    fingerprint: str = Field(default="", max_length=256)


class AlertmanagerBody(_Body):
    version: str = "4"
    groupKey: str = ""
    truncatedAlerts: int = Field(default=0, ge=0)
    status: Status | None = None
    receiver: str = ""
    groupLabels: dict[str, str] = Field(default_factory=dict)
    commonLabels: dict[str, str] = Field(default_factory=dict)
    commonAnnotations: dict[str, str] = Field(default_factory=dict)
    externalURL: str = ""
    alerts: list[AlertmanagerAlert] = Field(max_length=MAX_ALERTS)


class GrafanaAlert(AlertmanagerAlert):
    labels: dict[str, str] = Field(default_factory=dict)
    values: dict[str, float | int | None] | None = None
    valueString: str = ""
    silenceURL: str = ""
    dashboardURL: str = ""
    panelURL: str = ""


class GrafanaBody(AlertmanagerBody):
    alerts: list[GrafanaAlert] = Field(max_length=MAX_ALERTS)  # type: ignore[assignment]
    title: str = ""
    state: str = ""
    message: str = ""
    orgId: int | None = None


class GenericAlert(_Body):
    fingerprint: str | None = Field(default=None, min_length=1, max_length=256)
    status: Status = "firing"
    title: str | None = Field(default=None, max_length=4000)
    severity: str | None = Field(default=None, max_length=32)
    labels: dict[str, Scalar] = Field(default_factory=dict)
    annotations: dict[str, Scalar] = Field(default_factory=dict)
    starts_at: datetime | None = None
    ends_at: datetime | None = None
    source: str = Field(default="generic", min_length=1, max_length=32)
    url: str | None = Field(default=None, max_length=2048)
    incident_id: str | None = Field(default=None, max_length=256)

    @field_validator("title")
    @classmethod
    def _title(cls, v: str | None) -> str | None:
        if v is not None and not v.strip():
            raise ValueError("must not be empty")
        return v


_GENERIC_LIST = TypeAdapter(list[GenericAlert])


def _clean(values: dict[str, Any]) -> dict[str, str]:
    return {
        str(k): v if isinstance(v, str) else str(v).lower() if isinstance(v, bool) else str(v)
        for k, v in values.items()
    }


def _pick(labels: dict[str, str], annotations: dict[str, str], *keys: str) -> str | None:
    for key in keys:
        value = labels.get(key) or annotations.get(key)
        if value:
            return value[:256]
    return None


def from_alertmanager(body: AlertmanagerBody, source: str = "alertmanager") -> list[IncomingAlert]:
    context: dict[str, Any] = {"group_key": body.groupKey[:300]}
    if body.truncatedAlerts:
        context["truncated_alerts"] = body.truncatedAlerts
    out = []
    for a in body.alerts:
        labels = a.labels
        ctx = dict(context)
        url = web_url(a.generatorURL)
        title = labels.get("alertname") or a.annotations.get("summary") or "alert"
        if isinstance(a, GrafanaAlert):
            url = web_url(a.panelURL) or web_url(a.dashboardURL) or url
            if a.valueString:
                ctx["value"] = a.valueString[:1000]
            elif a.values:
                ctx["value"] = ", ".join(f"{k}={v}" for k, v in list(a.values.items())[:20])
            if isinstance(body, GrafanaBody) and not labels.get("alertname") and body.title:
                title = body.title
        out.append(
            IncomingAlert(
                fingerprint=a.fingerprint or derive_fingerprint(labels),
                status=a.status,
                source=source,
                title=title[:2000],
                severity=(labels.get("severity") or None) and labels["severity"][:32],
                labels=labels,
                annotations=a.annotations,
                url=url,
                incident_id=_pick(labels, a.annotations, "incident_id", "incident"),
                starts_at=real_time(a.startsAt),
                ends_at=real_time(a.endsAt),
                context=ctx,
            )
        )
    return out


def from_generic(items: list[GenericAlert]) -> list[IncomingAlert]:
    out = []
    for i, a in enumerate(items):
        labels = _clean(a.labels)
        annotations = _clean(a.annotations)
        title = a.title or labels.get("alertname") or annotations.get("summary")
        if not title:
            fail(422, "validation_error", f"{i}.title: give a title or an alertname label")
        identity = labels or {"__title__": title}
        out.append(
            IncomingAlert(
                fingerprint=a.fingerprint or derive_fingerprint(identity),
                status=a.status,
                source=a.source,
                title=title[:2000],
                severity=a.severity or (labels.get("severity") or "")[:32] or None,
                labels=labels,
                annotations=annotations,
                url=web_url(a.url),
                incident_id=a.incident_id or _pick(labels, annotations, "incident_id"),
                starts_at=real_time(a.starts_at),
                ends_at=real_time(a.ends_at),
            )
        )
    return out


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


def _log_rejected(team: Team, path: str, data: Any, exc: ApiError) -> None:
    group = data.get("groupKey") if isinstance(data, dict) else None
    ident = str(group) if group else f"{exc.status}:{exc.text}"
    key = hashlib.sha256(f"{team.name}\x1f{path}\x1f{ident}".encode()).hexdigest()
    if _rejected.first(key):
        log.warning(
            "rejected alerts for team %s on %s (group %r): %s %s",
            team.name,
            path,
            str(group)[:200] if group else None,
            exc.status,
            (exc.text or "")[:300],
        )


async def _receive(request: web.Request, kind: str) -> web.Response:
    team = authenticate(request)
    rt = request.app[RUNTIME]
    data: Any = None
    try:
        data = await read_json(request)
        if kind == "generic":
            if isinstance(data, list):
                if len(data) > MAX_ALERTS:
                    fail(422, "validation_error", f"(body): at most {MAX_ALERTS} alerts")
                try:
                    items = _GENERIC_LIST.validate_python(data)
                except ValidationError as exc:
                    unprocessable(exc)
            else:
                items = [parse(GenericAlert, data)]
            alerts = from_generic(items)
        elif kind == "grafana":
            alerts = from_alertmanager(parse(GrafanaBody, data), "grafana")
        else:
            alerts = from_alertmanager(parse(AlertmanagerBody, data))
    except ApiError as exc:
        _log_rejected(team, request.path, data, exc)
        raise
    result = await service.ingest(rt, team, alerts)
    return web.json_response(
        {
            "status": "ok",
            "received": result.received,
            "new": result.new,
            "repeats": result.repeats,
            "resolved": result.resolved,
            "silenced": result.silenced,
        }
    )


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


@router.callback_query(AlertAction.filter())
async def press_alert_button(
    callback: CallbackQuery, callback_data: AlertAction, session: AsyncSession, runtime: Runtime
) -> AnswerCallbackQuery:
    msg = callback.message
    try:
        if msg is None:
            raise service.ForgedButton
        toast = await service.press_button(
            runtime,
            session,
            ref=callback_data.ref,
            act=callback_data.act,
            tag=callback_data.tag,
            chat_id=msg.chat.id,
            message_id=msg.message_id,
            user_id=callback.from_user.id,
        )
    except service.AlertError as exc:
        return callback.answer(str(exc)[:200], show_alert=True)
    return callback.answer(toast[:200])


async def _reply(session: AsyncSession, message: Message, text_html: str) -> None:
    await enqueue_text(session, message.chat.id, text_html, reply_to=message.message_id)


@router.message(Command("alerts"))
async def show_alerts(message: Message, session: AsyncSession, runtime: Runtime) -> None:
    try:
        text = await service.list_firing(runtime, session, message.chat.id)
    except service.AlertError as exc:
        text = esc(str(exc))
    await _reply(session, message, text)


@router.message(Command("silences"))
async def show_silences(message: Message, session: AsyncSession, runtime: Runtime) -> None:
    try:
        text = await service.list_silences(runtime, session, message.chat.id)
    except service.AlertError as exc:
        text = esc(str(exc))
    await _reply(session, message, text)


@router.message(Command("unsilence"))
async def remove_silence(
    message: Message, command: CommandObject, session: AsyncSession, runtime: Runtime
) -> None:
    sender = message.from_user
    try:
        if sender is None or message.sender_chat is not None:
            raise service.AlertError("Post as yourself to remove a silence.")
        text = await service.unsilence(
            runtime,
            session,
            chat_id=message.chat.id,
            user_id=sender.id,
            ref=command.args or "",
        )
    except service.AlertError as exc:
        text = esc(str(exc))
    await _reply(session, message, text)
