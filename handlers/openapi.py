"""The HTTP API's request bodies (pydantic) and its OpenAPI 3 document built from them."""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from pydantic.json_schema import models_json_schema

from bot.alerts.sources import MAX_ALERTS, AlertmanagerBody, GenericAlert, GrafanaBody
from bot.policy import SCOPES, Scope
from handlers.openapi_audit import AUDIT_SCHEMAS, AUDIT_SCOPES, audit_paths
from handlers.openapi_incidents import (
    INCIDENT_BODIES,
    INCIDENT_SCHEMAS,
    INCIDENT_SCOPES,
    incident_paths,
)
from handlers.openapi_parts import API, PAGE_PARAMS, body, errors, json_of, ref
from handlers.openapi_trust import TRUST_SCHEMAS, TRUST_SCOPES, trust_paths

CREATE_EXAMPLE: dict[str, Any] = {
    "action": "restart deployment",
    "target": "prod/payments-api",
    "risk_level": "critical",
    "requested_by": "deploy-bot",
    "description": "Rolling restart after config change",
    "fingerprint": "payments-restart",
    "metadata": {"ticket": "OPS-1234"},
    "blast_radius": {"pods": 12},
    "dry_run_checks": ["kubectl diff: ok"],
    "expires_in": 1800,
}


# Caps on each free-form JSON field: every list row carries them, so they bound list pages too.
FREE_FORM_MAX_BYTES = 16 * 1024  # compact UTF-8 JSON
FREE_FORM_MAX_DEPTH = 32  # the field itself is the first level
FREE_FORM_MAX_KEYS = 256  # in any one object


def _free_form_problem(value: Any) -> str | None:
    """Why a free-form JSON value is over the caps, if it is."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if not isinstance(node, (dict, list)):
            continue
        if depth > FREE_FORM_MAX_DEPTH:
            return f"nested more than {FREE_FORM_MAX_DEPTH} levels deep"
        if isinstance(node, dict) and len(node) > FREE_FORM_MAX_KEYS:
            return f"an object has more than {FREE_FORM_MAX_KEYS} keys"
        stack.extend((v, depth + 1) for v in (node.values() if isinstance(node, dict) else node))
    size = len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode())
    if size > FREE_FORM_MAX_BYTES:
        return f"{size} bytes as JSON, more than {FREE_FORM_MAX_BYTES}"
    return None


def _bounded(value: Any) -> Any:
    problem = _free_form_problem(value)
    if problem is not None:
        raise ValueError(problem)
    return value


_CAPS = (
    f"free-form JSON: at most {FREE_FORM_MAX_BYTES} bytes serialised, "
    f"{FREE_FORM_MAX_DEPTH} levels deep and {FREE_FORM_MAX_KEYS} keys in any object"
)
FreeFormObject = Annotated[
    dict[str, Any],
    AfterValidator(_bounded),
    Field(description=_CAPS, json_schema_extra={"maxProperties": FREE_FORM_MAX_KEYS}),
]
FreeFormList = Annotated[list[Any], AfterValidator(_bounded), Field(description=_CAPS)]


class _Body(BaseModel):
    # Strict: "5" is not a number and true is not 1; unknown fields are refused by name.
    model_config = ConfigDict(extra="forbid", strict=True)


class CreateApproval(_Body):
    model_config = ConfigDict(json_schema_extra={"examples": [CREATE_EXAMPLE]})
    action: str = Field(min_length=1, max_length=65536)
    target: str = Field(min_length=1, max_length=65536)
    risk_level: Literal["low", "medium", "high", "critical"]
    requested_by: str = Field(min_length=1, max_length=65536)
    requested_by_telegram_id: int | None = Field(default=None, gt=0, lt=2**52)
    description: str | None = Field(default=None, max_length=65536)
    reason: str | None = Field(
        default=None,
        max_length=1000,
        description="why it is needed (e.g. a ticket id); the level's require_reason and "
        "reason_pattern may demand one (422 reason_required / reason_invalid)",
    )
    fingerprint: str | None = Field(default=None, min_length=1, max_length=256)
    incident_id: str | None = Field(default=None, min_length=1, max_length=256)
    metadata: FreeFormObject | None = None
    blast_radius: FreeFormObject | None = None
    dry_run_checks: FreeFormList | None = None
    expires_in: int | None = Field(
        default=None, ge=60, le=30 * 86400, description="seconds; capped by the policy's ttl"
    )
    action_pattern: str | None = Field(
        default=None,
        min_length=1,
        max_length=512,
        description="the pattern this request's trust is kept under; unset: derived by the "
        "team's trust_key (the action, or action:target with ids and numbers masked to *)",
    )
    callback_url: str | None = Field(
        default=None,
        max_length=2048,
        pattern=r"^https?://",
        description="must match one of the team's callback_url_prefixes by scheme, host, "
        "port and path; no user@host; redirects are not followed",
    )


class ReportResult(_Body):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"success": True, "detail": "restarted 12/12 pods"}]}
    )
    success: bool
    detail: str = Field(default="", max_length=4096)


class RedeemToken(_Body):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"token": "eyJhbGciOi…"},
                {
                    "token": "eyJhbGciOi…",
                    "action": "restart deployment",
                    "target": "prod/payments-api",
                },
            ]
        }
    )
    token: str = Field(min_length=1, max_length=8192)
    action: str | None = Field(
        default=None,
        min_length=1,
        max_length=65536,
        description="what the executor is about to run; 409 action_mismatch unless approved",
    )
    target: str | None = Field(
        default=None,
        min_length=1,
        max_length=65536,
        description="where it is about to run it; 409 action_mismatch unless approved",
    )


REQUEST_BODIES: dict[str, type[BaseModel]] = {
    "CreateApproval": CreateApproval,
    "ReportResult": ReportResult,
    "RedeemToken": RedeemToken,
    **INCIDENT_BODIES,
}
# Alert bodies are the models bot.alerts.sources validates with.
ALERT_BODIES: tuple[type[BaseModel], ...] = (AlertmanagerBody, GrafanaBody, GenericAlert)

_ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {
                "code": {"type": "string"},
                "message": {"type": "string"},
                "field": {"type": "string"},
                "problems": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            "field": {"type": "string"},
                            "message": {"type": "string"},
                        },
                    },
                },
            },
        }
    },
}

_VOTE = {
    "type": "object",
    "properties": {
        "voter_telegram_id": {"type": "integer"},
        "voter_name": {"type": "string"},
        "decision": {"type": "string", "enum": ["approve", "reject"]},
        "reason": {
            "type": ["string", "null"],
            "description": "a rejecter's reason, given by replying to the bot's question",
        },
        "at": {"type": "string", "format": "date-time"},
        "counted": {"type": "boolean"},
    },
}

_STATUS_ENUM = ["pending", "approved", "rejected", "expired", "cancelled"]

_APPROVAL = {
    "type": "object",
    "required": ["id", "status", "required_approvals", "expires_at", "hit_count"],
    "properties": {
        "id": {"type": "string", "format": "uuid"},
        "status": {"type": "string", "enum": _STATUS_ENUM},
        "team": {"type": "string"},
        "action": {"type": "string"},
        "target": {"type": "string"},
        "description": {"type": ["string", "null"]},
        "reason": {"type": ["string", "null"]},
        "risk_level": {"type": "string", "enum": ["low", "medium", "high", "critical"]},
        "required_approvals": {"type": "integer"},
        "reject_threshold": {"type": "integer"},
        "approvals": {"type": "integer"},
        "rejects": {"type": "integer"},
        "requested_by": {"type": "string"},
        "requested_by_telegram_id": {"type": ["integer", "null"]},
        "fingerprint": {"type": ["string", "null"]},
        "incident_id": {"type": ["string", "null"]},
        "hit_count": {"type": "integer"},
        "last_seen_at": {"type": "string", "format": "date-time"},
        "metadata": {"type": ["object", "null"]},
        "blast_radius": {"type": ["object", "null"]},
        "dry_run_checks": {"type": ["array", "null"]},
        "callback_url": {"type": ["string", "null"]},
        "created_at": {"type": "string", "format": "date-time"},
        "expires_at": {"type": "string", "format": "date-time"},
        "decided_at": {"type": ["string", "null"], "format": "date-time"},
        "decided_by": {"type": "array", "items": {"type": "object"}},
        "votes": {"type": "array", "items": {"$ref": "#/components/schemas/Vote"}},
        "result": {"type": ["object", "null"]},
        "approval_token": {
            "type": "string",
            "description": "HS256 JWT, present once approved; redeem it exactly once",
        },
        "token_expires_at": {"type": "string", "format": "date-time"},
        "token_redeemed": {"type": "boolean"},
        "decision_reason": {
            "type": "string",
            "description": "why it stands as it does, in words (the policy engine's decision)",
        },
        "action_pattern": {"type": ["string", "null"]},
        "trust_score": {"type": "integer", "description": "the pattern's score at creation"},
        "auto_rule": {"type": ["string", "null"]},
        "deny_rule": {"type": ["string", "null"]},
        "break_glass": {"type": "boolean"},
        "revoked_at": {"type": ["string", "null"], "format": "date-time"},
    },
}

_REDEEMED = {
    "type": "object",
    "required": ["id", "action", "target", "approvers"],
    "properties": {
        "id": {"type": "string", "format": "uuid"},
        "action": {"type": "string"},
        "target": {"type": "string"},
        "risk_level": {"type": "string"},
        "approvers": {"type": "array", "items": {"type": "integer"}},
        "jti": {"type": "string", "format": "uuid"},
        "break_glass": {"type": "boolean", "description": "approved by one person's break-glass"},
    },
}


_ID_PARAM = {
    "name": "id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "format": "uuid"},
}


_LIST_PARAMS = [
    {
        "name": "status",
        "in": "query",
        "required": False,
        "schema": {"type": "string", "enum": _STATUS_ENUM},
    },
    *PAGE_PARAMS,
]

_PAGE = {
    "type": "object",
    "required": ["approvals", "next"],
    "properties": {
        "approvals": {"type": "array", "items": ref("Approval")},
        "next": {
            "type": ["string", "null"],
            "description": "cursor for the next page; null on the last one",
        },
    },
}

_INGESTED = {
    "type": "object",
    "properties": {
        "status": {"type": "string"},
        "received": {"type": "integer"},
        "new": {"type": "integer"},
        "repeats": {"type": "integer"},
        "resolved": {"type": "integer"},
        "silenced": {"type": "integer"},
    },
}


def _alert_intake(operation: str, summary: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {
        "post": {
            "operationId": operation,
            "summary": summary,
            "requestBody": {"required": True, "content": {"application/json": {"schema": schema}}},
            "responses": {
                "200": json_of(ref("AlertsIngested"), "stored; cards posted or updated"),
                **errors(400, 401, 413, 415, 422, 503),
            },
        }
    }


_GENERIC_ALERTS = {
    "anyOf": [
        ref("GenericAlert"),
        {"type": "array", "items": ref("GenericAlert"), "maxItems": MAX_ALERTS},
    ]
}

# What a created request's id leads to: lets a client (and a stateful fuzzer) follow on.
_LINKS = {
    name: {"operationId": operation, "parameters": {"id": "$response.body#/id"}}
    for name, operation in (
        ("GetApproval", "getApproval"),
        ("CancelApproval", "cancelApproval"),
        ("ReportResult", "reportResult"),
    )
}


def _with_links(response: dict[str, Any]) -> dict[str, Any]:
    return {**response, "links": _LINKS}


# The API-key scope each operation needs (the routes pass the same to `authenticate`).
OPERATION_SCOPES: dict[str, Scope] = {
    "createApproval": "approvals:create",
    "listApprovals": "approvals:read",
    "getApproval": "approvals:read",
    "cancelApproval": "approvals:cancel",
    "reportResult": "results:write",
    "redeemToken": "tokens:redeem",
    "ingestAlerts": "alerts:write",
    "ingestAlertmanager": "alerts:write",
    "ingestGrafana": "alerts:write",
    **INCIDENT_SCOPES,
    **TRUST_SCOPES,
    **AUDIT_SCOPES,
}

_SECURITY_TEXT = (
    "An API key from the team's `api_keys` in the policy file. A key may be limited to "
    f"some of the scopes {', '.join(SCOPES)} (`scopes = [...]`); a key without `scopes` "
    "holds all of them but audit:read. A route whose scope the key lacks answers 403 "
    "insufficient_scope. approvals:read includes an approved request's approval_token."
)


def _scoped(paths: dict[str, Any]) -> dict[str, Any]:
    """Each authenticated operation with the scope it needs named, and its 403."""
    for item in paths.values():
        for op in item.values():
            scope = OPERATION_SCOPES.get(op["operationId"])
            if scope is not None:
                op["description"] = f"Needs the API-key scope `{scope}`."
                op["responses"].update(errors(403))
    return paths


def _approval_paths(common: dict[str, Any]) -> dict[str, Any]:
    """The approval requests' operations."""
    return {
        f"{API}/approvals": {
            "post": {
                "operationId": "createApproval",
                "summary": "Ask for approval (idempotent with Idempotency-Key)",
                "parameters": [
                    {
                        "name": "Idempotency-Key",
                        "in": "header",
                        "required": False,
                        "schema": {"type": "string", "maxLength": 256},
                    }
                ],
                "requestBody": body("CreateApproval"),
                "responses": {
                    "201": _with_links(json_of(ref("Approval"), "created; cards posted")),
                    "200": _with_links(
                        json_of(
                            ref("Approval"),
                            "same Idempotency-Key, or merged (same fingerprint and ask)",
                        )
                    ),
                    **common,
                    **errors(409),
                    "422": json_of(
                        ref("Error"),
                        "validation error naming the field, or unreachable_quorum: too "
                        "few approvers besides the requester could vote on this level",
                    ),
                },
            },
            "get": {
                "operationId": "listApprovals",
                "summary": "This team's requests, newest first, a page at a time",
                "parameters": _LIST_PARAMS,
                "responses": {
                    "200": json_of(
                        ref("ApprovalPage"),
                        "a page of at most `limit` requests (fewer past 1 MiB); "
                        "`next` fetches the rest",
                    ),
                    **errors(401, 422, 503),
                },
            },
        },
        f"{API}/approvals/{{id}}": {
            "get": {
                "operationId": "getApproval",
                "parameters": [_ID_PARAM],
                "responses": {
                    "200": json_of(ref("Approval"), "the request, its votes and token"),
                    **errors(401, 404, 503),
                },
            }
        },
        f"{API}/approvals/{{id}}/cancel": {
            "post": {
                "operationId": "cancelApproval",
                "parameters": [_ID_PARAM],
                "responses": {
                    "200": json_of(ref("Approval"), "cancelled"),
                    **errors(401, 404, 409, 503),
                },
            }
        },
        f"{API}/approvals/{{id}}/result": {
            "post": {
                "operationId": "reportResult",
                "parameters": [_ID_PARAM],
                "requestBody": body("ReportResult"),
                "responses": {
                    "200": json_of(ref("Approval"), "recorded; card updated"),
                    **common,
                    **errors(404, 409),
                },
            }
        },
    }


def _token_and_alert_paths(common: dict[str, Any]) -> dict[str, Any]:
    """Redeeming a token, the alert intakes, and this document."""
    return {
        f"{API}/tokens/redeem": {
            "post": {
                "operationId": "redeemToken",
                "requestBody": body("RedeemToken"),
                "responses": {
                    "200": json_of(ref("Redeemed"), "valid; consumed now"),
                    **common,
                    **errors(404),
                    "409": json_of(
                        ref("Error"),
                        "token_replayed (already redeemed), or action_mismatch (the "
                        "given action or target is not what was approved; the token "
                        "stays unredeemed)",
                    ),
                },
            }
        },
        f"{API}/alerts": _alert_intake(
            "ingestAlerts", "Generic JSON alerts: one or a list", _GENERIC_ALERTS
        ),
        f"{API}/alerts/alertmanager": _alert_intake(
            "ingestAlertmanager",
            "Prometheus Alertmanager webhook",
            ref("AlertmanagerBody"),
        ),
        f"{API}/alerts/grafana": _alert_intake(
            "ingestGrafana", "Grafana webhook", ref("GrafanaBody")
        ),
        f"{API}/openapi.json": {
            "get": {
                "operationId": "openapi",
                "security": [],
                "responses": {"200": {"description": "this document"}},
            }
        },
    }


def document() -> dict[str, Any]:
    """The OpenAPI 3.1 document; request schemas come from the models the handlers validate."""
    _, defs = models_json_schema(
        [(model, "validation") for model in (*REQUEST_BODIES.values(), *ALERT_BODIES)],
        ref_template="#/components/schemas/{model}",
    )
    schemas: dict[str, Any] = dict(defs["$defs"])
    schemas.update(
        Error=_ERROR,
        Approval=_APPROVAL,
        ApprovalPage=_PAGE,
        Vote=_VOTE,
        Redeemed=_REDEEMED,
        AlertsIngested=_INGESTED,
        **INCIDENT_SCHEMAS,
        **TRUST_SCHEMAS,
        **AUDIT_SCHEMAS,
    )
    common = errors(400, 401, 413, 415, 422, 503)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Quorum",
            "version": "1",
            "description": "Ask for approval in Telegram; redeem the approval token once.",
        },
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "apiKey": {"type": "http", "scheme": "bearer", "description": _SECURITY_TEXT}
            },
        },
        "security": [{"apiKey": []}],
        "paths": _scoped(
            {
                **_approval_paths(common),
                **trust_paths(),
                **incident_paths(common),
                **_token_and_alert_paths(common),
                **audit_paths(),
            }
        ),
    }
