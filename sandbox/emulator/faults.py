"""Injected faults: rules that make matching Bot API calls fail as Telegram sometimes does."""

from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass

from sandbox.emulator.errors import JSON, ApiError, too_many_requests
from sandbox.emulator.params import get_opt_int

NOT_MODIFIED = (
    "Bad Request: message is not modified: specified new message content and reply markup "
    "are exactly the same as a current content and reply markup of the message"
)
QUERY_TOO_OLD = "Bad Request: query is too old and response timeout expired or query ID is invalid"
FAULT_KINDS = frozenset(
    {
        "server_error",
        "timeout",
        "hold",
        "reset",
        "kicked",
        "migrate",
        "not_modified",
        "not_found",
        "too_many_requests",
        "callback_too_old",
        "bad_request",
    }
)


# What each kind does to a matching call:
#   timeout  carried out, answered `delay` s later (the client may give up: unknown outcome)
#   hold     held up to `delay` s before it is carried out; a client that goes away meanwhile
#            (killed, timed out) leaves it never carried out, as a call that never reached
#            Telegram; one still there then gets it carried out and answered
#   reset    the connection dropped, nothing carried out
#   the rest fail as Telegram does (server_error, kicked, migrate, not_modified, ...)


@dataclass
class FaultRule:
    kind: str
    method: str = "*"
    chat_id: int | None = None
    count: int = 1
    after: int = 0
    status: int | None = None
    delay: float = 10.0
    retry_after: int = 5
    description: str | None = None
    seen: int = 0

    def to_json(self) -> JSON:
        return {k: v for k, v in dataclasses.asdict(self).items() if k != "seen" and v is not None}


def chat_id_of(params: JSON) -> int | None:
    with contextlib.suppress(ApiError):
        return get_opt_int(params, "chat_id")
    return None


def match_fault(faults: list[FaultRule], method: str, params: JSON) -> FaultRule | None:
    """The first rule this call triggers, counted (a spent rule is removed); or None."""
    lower = method.lower()
    chat_id: int | None = None
    chat_known = False
    for rule in faults:
        if rule.method != "*" and rule.method != lower:
            continue
        if rule.chat_id is not None:
            if not chat_known:
                chat_known = True
                chat_id = chat_id_of(params)
            if chat_id != rule.chat_id:
                continue
        rule.seen += 1
        if rule.seen <= rule.after:
            continue
        rule.count -= 1
        if rule.count <= 0:
            faults.remove(rule)
        return rule
    return None


def simple_fault_error(fault: FaultRule) -> ApiError:
    """The error of a fault that changes no state (all but kicked and migrate)."""
    kind = fault.kind
    if kind == "server_error":
        status = fault.status or 500
        desc = fault.description or ("Bad Gateway" if status == 502 else "Internal Server Error")
        return ApiError(status, desc)
    if kind == "not_modified":
        return ApiError(400, NOT_MODIFIED)
    if kind == "not_found":
        desc = "Bad Request: message to edit not found"
        if fault.method == "deletemessage":
            desc = "Bad Request: message to delete not found"
        return ApiError(400, fault.description or desc)
    if kind == "too_many_requests":
        return too_many_requests(max(1, int(fault.retry_after)))
    if kind == "callback_too_old":
        return ApiError(400, QUERY_TOO_OLD)
    if kind == "bad_request":
        desc = fault.description or "Bad Request"
        if not desc.startswith("Bad Request"):
            desc = f"Bad Request: {desc}"
        return ApiError(fault.status or 400, desc)
    return ApiError(500, f"Internal Server Error: unknown fault {kind}")
