"""Shared HTTP API plumbing: JSON errors, API-key authentication, strict JSON bodies."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, NoReturn, TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError
from sqlalchemy.exc import SQLAlchemyError

from bot import errors
from bot.policy import Team, api_actor
from bot.runtime import RUNTIME

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ApiError(web.HTTPException):
    """An HTTP error whose body is {"error": {"code", "message"}}."""

    def __init__(self, status: int, code: str, message: str, **extra: Any) -> None:
        self.status_code = status
        body = {"error": {"code": code, "message": message, **extra}}
        super().__init__(text=json.dumps(body), content_type="application/json")


def fail(status: int, code: str, message: str, **extra: Any) -> NoReturn:
    raise ApiError(status, code, message, **extra)


_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    429: "too_many_requests",
}


# The one table from domain errors to HTTP: the most specific class in an error's MRO wins.
HTTP_STATUS: dict[type[errors.QuorumError], int] = {
    errors.QuorumError: 400,
    errors.Refused: 400,
    errors.NotFound: 404,
    errors.Conflict: 409,
    errors.Invalid: 422,
    errors.TokenRefused: 401,
}


def domain_error(exc: errors.QuorumError) -> web.Response:
    """The JSON answer for a domain error, by `HTTP_STATUS`."""
    status = next(HTTP_STATUS[c] for c in type(exc).__mro__ if c in HTTP_STATUS)
    body: dict[str, Any] = {"code": exc.code, "message": exc.message}
    if isinstance(exc, errors.Invalid):
        body["field"] = exc.field
    return web.json_response({"error": body}, status=status)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError:
        raise
    except errors.QuorumError as exc:
        return domain_error(exc)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = _CODES.get(exc.status, "error")
        message = exc.reason if exc.status != 413 else "request body is too large"
        return web.json_response({"error": {"code": code, "message": message}}, status=exc.status)
    except (SQLAlchemyError, OSError, TimeoutError):
        log.exception("storage unavailable while serving %s %s", request.method, request.path)
        return web.json_response(
            {"error": {"code": "unavailable", "message": "storage unavailable, retry later"}},
            status=503,
            headers={"Retry-After": "5"},
        )


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is calling the API: the team owning the bearer key, and the key's name."""

    team: Team
    key_name: str

    @property
    def actor(self) -> str:
        """The audit actor for what this caller does (`api:<key name>`)."""
        return api_actor(self.key_name)


def authenticate(request: web.Request) -> Caller:
    """The caller behind the bearer key; 401 for none or an unknown one."""
    header = request.headers.get("Authorization", "")
    scheme, _, key = header.partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        fail(401, "unauthorized", "send Authorization: Bearer <api key>")
    owner = request.app[RUNTIME].policy.api_key_owner(key.strip())
    if owner is None:
        fail(401, "unauthorized", "unknown API key")
    return Caller(*owner)


async def read_json(request: web.Request) -> Any:
    """The parsed body; 415 for another content type, 400 for bad UTF-8 or JSON, 413 if big."""
    ctype = request.content_type
    if ctype not in ("application/json", "") and not ctype.endswith("+json"):
        fail(415, "unsupported_media_type", "send Content-Type: application/json")
    raw = await request.read()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        fail(400, "invalid_utf8", "body is not valid UTF-8")
    try:
        return json.loads(text)
    except RecursionError:
        fail(400, "invalid_json", "JSON is nested too deeply")
    except json.JSONDecodeError as exc:
        fail(
            400, "invalid_json", f"invalid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        )


Model = TypeVar("Model", bound=BaseModel)


def unprocessable(exc: ValidationError) -> NoReturn:
    """422 naming the first offending field, with the first few problems listed."""
    problems = [
        {
            "field": ".".join(str(p) for p in e["loc"]) or "(body)",
            "message": str(e["msg"]).removeprefix("Value error, "),
        }
        for e in exc.errors()[:10]
    ]
    first = problems[0]
    fail(
        422,
        "validation_error",
        f"{first['field']}: {first['message']}",
        field=first["field"],
        problems=problems,
    )


def parse(model: type[Model], data: Any) -> Model:
    """Validate a JSON body against a pydantic model (422 on failure)."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        unprocessable(exc)
