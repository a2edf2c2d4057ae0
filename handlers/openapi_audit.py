"""The audit routes' part of the OpenAPI document: chained rows and signed checkpoints."""

from __future__ import annotations

from typing import Any

from bot.policy import Scope
from handlers.openapi_parts import API, PAGE_PARAMS, errors, json_of, query, ref

_HEX = {"type": ["string", "null"], "pattern": "^[0-9a-f]{64}$"}

AUDIT_SCHEMAS: dict[str, Any] = {
    "AuditEntry": {
        "type": "object",
        "description": "one audit row; seq, prev_hash and hash are null until the sealer chains it",
        "properties": {
            "seq": {"type": ["integer", "null"]},
            "id": {"type": "integer"},
            "at": {"type": "string", "format": "date-time"},
            "event": {"type": "string"},
            "actor": {"type": ["string", "null"]},
            "actor_telegram_id": {"type": ["integer", "null"]},
            "team_id": {"type": ["integer", "null"]},
            "approval_id": {"type": ["string", "null"], "format": "uuid"},
            "alert_id": {"type": ["integer", "null"]},
            "chat_id": {"type": ["integer", "null"]},
            "detail": {"type": "object"},
            "xid": {"type": "integer"},
            "prev_hash": _HEX,
            "hash": _HEX,
        },
    },
    "AuditPage": {
        "type": "object",
        "required": ["entries", "next"],
        "properties": {
            "entries": {"type": "array", "items": ref("AuditEntry")},
            "next": {"type": ["string", "null"], "description": "the following page's cursor"},
        },
    },
    "AuditCheckpoint": {
        "type": "object",
        "description": (
            "a signed chain head (Ed25519 over quorum-audit-checkpoint/v1, seq, hash, at)"
        ),
        "properties": {
            "seq": {"type": "integer"},
            "hash": _HEX,
            "at": {"type": "string", "format": "date-time"},
            "key_id": {"type": "string"},
            "signature": {"type": "string", "contentEncoding": "base64"},
        },
    },
}

AUDIT_SCOPES: dict[str, Scope] = {
    "listAudit": "audit:read",
    "latestAuditCheckpoint": "audit:read",
}


def audit_paths() -> dict[str, Any]:
    """The audit log's read-only operations."""
    when = {"type": "string", "format": "date-time"}
    return {
        f"{API}/audit": {
            "get": {
                "operationId": "listAudit",
                "summary": "This team's audit rows with their chain hashes, newest first",
                "parameters": [
                    query("event", {"type": "string", "minLength": 1, "maxLength": 64}),
                    query("actor", {"type": "string", "minLength": 1, "maxLength": 256}),
                    query("approval_id", {"type": "string", "format": "uuid"}),
                    query("since", when, "rows at or after this time"),
                    query("until", when, "rows before this time"),
                    *PAGE_PARAMS,
                ],
                "responses": {
                    "200": json_of(ref("AuditPage"), "a page of at most `limit` rows"),
                    **errors(401, 422, 503),
                },
            }
        },
        f"{API}/audit/checkpoints/latest": {
            "get": {
                "operationId": "latestAuditCheckpoint",
                "summary": "The newest signed checkpoint of the audit chain",
                "responses": {
                    "200": json_of(ref("AuditCheckpoint"), "the checkpoint"),
                    "404": json_of(ref("Error"), "no checkpoint signed yet"),
                    **errors(401, 503),
                },
            }
        },
    }
