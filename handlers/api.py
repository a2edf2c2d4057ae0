"""Shared HTTP API plumbing: JSON errors, API-key authentication, strict JSON bodies."""

from __future__ import annotations

import json
import logging
import math
import re
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, NoReturn, TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

from bot import errors
from bot.outages import storage_outage
from bot.policy import ApiKey, Scope, Team, api_actor
from bot.runtime import RUNTIME

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ApiError(web.HTTPException):
    """An HTTP error whose body is {"error": {"code", "message"}}."""

    def __init__(self, status: int, code: str, message: str, **extra: Any) -> None:
        self.status_code = status
        self.message = message
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
    errors.UnreachableQuorum: 422,
    errors.TokenRefused: 401,
    errors.InsufficientScope: 403,
    errors.RateLimited: 429,
    errors.TooManyPending: 429,
}


def domain_error(exc: errors.QuorumError) -> web.Response:
    """The JSON answer for a domain error, by `HTTP_STATUS`."""
    status = next(HTTP_STATUS[c] for c in type(exc).__mro__ if c in HTTP_STATUS)
    body: dict[str, Any] = {"code": exc.code, "message": exc.message}
    headers = None
    if isinstance(exc, errors.Invalid):
        body["field"] = exc.field
    if isinstance(exc, errors.RateLimited):
        body["retry_after"] = exc.retry_after
        headers = {"Retry-After": str(exc.retry_after)}
    return web.json_response({"error": body}, status=status, headers=headers)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        declared = request.content_length
        if declared is not None and declared > request.client_max_size:
            # Refused on its Content-Length, before a byte of it is read (aiohttp alone reads
            # up to the limit first).
            raise web.HTTPRequestEntityTooLarge(request.client_max_size, declared)
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
        allow = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
        return web.json_response(
            {"error": {"code": code, "message": message}}, status=exc.status, headers=allow
        )
    except Exception as exc:
        if storage_outage(exc):
            log.exception("storage unavailable while serving %s %s", request.method, request.path)
            return web.json_response(
                {"error": {"code": "unavailable", "message": "storage unavailable, retry later"}},
                status=503,
                headers={"Retry-After": "5"},
            )
        # Not an outage: a 503 would have the client retry a request that can never succeed.
        log.exception("internal error while serving %s %s", request.method, request.path)
        return web.json_response(
            {"error": {"code": "internal_error", "message": "internal error"}}, status=500
        )


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is calling the API: the team owning the bearer key, and the key's policy entry."""

    team: Team
    key: ApiKey

    @property
    def key_name(self) -> str:
        return self.key.name

    @property
    def actor(self) -> str:
        """The audit actor for what this caller does (`api:<key name>`)."""
        return api_actor(self.key.name)


def authenticate(request: web.Request, *, scope: Scope) -> Caller:
    """The caller behind the bearer key, allowed `scope`: 401 for no key or an unknown one,
    403 insufficient_scope for a key without that scope."""
    header = request.headers.get("Authorization", "")
    scheme, _, key = header.partition(" ")
    if scheme.lower() != "bearer" or not key.strip() or text_problem(key):
        fail(401, "unauthorized", "send Authorization: Bearer <api key>")
    found = request.app[RUNTIME].policy.api_key(key.strip())
    if found is None:
        fail(401, "unauthorized", "unknown API key")
    team, entry = found
    if scope not in entry.scopes:
        raise errors.InsufficientScope(scope)
    return Caller(team, entry)


MAX_DEPTH = 32  # containers nested inside any one field of a body
_SURROGATE = re.compile(r"[\ud800-\udfff]")


def text_problem(text: str) -> str | None:
    """Why a string cannot be stored (PostgreSQL text and jsonb refuse both), if it cannot."""
    if "\x00" in text:
        return "contains a NUL character (\\u0000), which cannot be stored"
    if _SURROGATE.search(text) is not None:
        return "contains a lone surrogate (\\ud800-\\udfff), which is not valid Unicode"
    return None


def _field(path: tuple[str, ...]) -> str:
    # Keys on the path were checked before their values: clean, only clipped here.
    if not path:
        return "(body)"
    return ".".join(p[:64] for p in path[:8]) + (".…" if len(path) > 8 else "")


def json_problem(value: Any) -> tuple[str, str] | None:
    """The first value of a parsed JSON body that cannot be stored: (field path, problem).

    No NUL and no lone surrogate in any string or key, finite numbers only (Python's json
    reads NaN, Infinity and 1e999), and at most MAX_DEPTH levels of nesting inside a field.
    """
    stack: list[tuple[Any, tuple[str, ...]]] = [(value, ())]
    while stack:
        node, path = stack.pop()
        problem = None
        if isinstance(node, str):
            problem = text_problem(node)
        elif isinstance(node, float) and not math.isfinite(node):
            problem = "numbers must be finite (NaN and Infinity are not JSON)"
        elif isinstance(node, (dict, list)) and len(path) > MAX_DEPTH:
            problem = f"nested more than {MAX_DEPTH} levels deep"
        elif isinstance(node, dict):
            for key in node:
                if (bad := text_problem(key)) is not None:
                    return _field(path), f"a key {bad}"
            stack.extend((v, (*path, k)) for k, v in reversed(node.items()))
        elif isinstance(node, list):
            stack.extend((v, (*path, str(i))) for i, v in reversed(list(enumerate(node))))
        if problem is not None:
            return _field(path), problem
    return None


# What can make a parsed body unstorable can only come from these in its JSON text: a NUL or
# a surrogate arrives as a \u escape (raw ones are not valid JSON or UTF-8), non-finite numbers
# as NaN, Infinity or a large exponent. Most bodies have none, and for them a walk over the
# containers alone settles the depth: on a 100-alert Alertmanager body the full walk cost
# 2.5 ms beside json.loads' 0.5 ms (a tenth of the alert intake's CPU in bench.alerts).
_SUSPECT = re.compile(r"\\u0000|\\u[dD][89a-fA-F]|NaN|Infinity|[eE][-+]?\d{3}")


def _containers_within(value: Any, depth: int) -> bool:
    """Whether no dict or list sits deeper than `depth` fields below the body."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        node, level = stack.pop()
        children = node.values() if isinstance(node, dict) else node
        for child in children:
            if isinstance(child, (dict, list)):
                if level + 1 > depth:
                    return False
                stack.append((child, level + 1))
    return True


def check_storable(data: Any, text: str | None = None) -> None:
    """422 naming the first value of a body that cannot be stored; `text`, the JSON the body
    was parsed from, lets a plainly clean body skip the full walk."""
    if (
        text is not None
        and isinstance(data, (dict, list))
        and _SUSPECT.search(text) is None
        and _containers_within(data, MAX_DEPTH)
    ):
        return
    found = json_problem(data)
    if found is not None:
        field, problem = found
        fail(422, "validation_error", f"{field}: {problem}", field=field)


async def read_json(request: web.Request) -> Any:
    """The parsed body, every value storable (see json_problem); 415 for another content
    type, 400 for bad UTF-8 or JSON, 413 if big, 422 for a value that cannot be stored."""
    ctype = request.content_type
    if ctype not in ("application/json", "") and not ctype.endswith("+json"):
        fail(415, "unsupported_media_type", "send Content-Type: application/json")
    raw = await request.read()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        fail(400, "invalid_utf8", "body is not valid UTF-8")
    try:
        data = json.loads(text)
    except RecursionError:
        # So deep the parser gave up: the same answer as the walk gives a little less deep.
        message = f"(body): nested more than {MAX_DEPTH} levels deep"
        fail(422, "validation_error", message, field="(body)")
    except json.JSONDecodeError as exc:
        fail(
            400, "invalid_json", f"invalid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        )
    except ValueError:
        # Python refuses to convert longer integer literals (CVE-2020-10735).
        limit = sys.get_int_max_str_digits()
        fail(400, "invalid_json", f"invalid JSON: an integer has more than {limit} digits")
    check_storable(data, text)
    return data


PAGE_SIZE = 50  # a list route's page without `limit`
PAGE_MAX = 100


def page_limit(request: web.Request, default: int = PAGE_SIZE, maximum: int = PAGE_MAX) -> int:
    """A list route's `limit` query parameter: 1 to `maximum`, `default` when absent."""
    text = request.query.get("limit")
    if text is None:
        return default
    # Length first: int() refuses very long digit strings with an error of its own.
    if not (text.isascii() and text.isdigit() and len(text) <= 3) or not (
        1 <= int(text) <= maximum
    ):
        fail(422, "validation_error", f"limit: an integer from 1 to {maximum}", field="limit")
    return int(text)


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
