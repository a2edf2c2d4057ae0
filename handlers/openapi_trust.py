"""The trust routes' part of the OpenAPI document: per-pattern trust, listed and reset."""

from __future__ import annotations

from typing import Any

from bot.policy import Scope
from handlers.openapi_parts import API, PAGE_PARAMS, errors, json_of, ref

TRUST_SCHEMAS: dict[str, Any] = {
    "Trust": {
        "type": "object",
        "required": ["pattern", "score"],
        "properties": {
            "pattern": {"type": "string"},
            "score": {"type": "integer"},
            "total_approvals": {"type": "integer"},
            "total_rejections": {"type": "integer"},
            "last_approver": {"type": ["string", "null"]},
            "last_approved_at": {"type": ["string", "null"], "format": "date-time"},
            "last_rejecter": {"type": ["string", "null"]},
            "last_rejected_at": {"type": ["string", "null"], "format": "date-time"},
            "updated_at": {"type": "string", "format": "date-time"},
        },
    },
    "TrustPage": {
        "type": "object",
        "required": ["trust", "next"],
        "properties": {
            "trust": {"type": "array", "items": {"$ref": "#/components/schemas/Trust"}},
            "next": {"type": ["string", "null"], "description": "cursor for the next page"},
        },
    },
}

TRUST_SCOPES: dict[str, Scope] = {
    "listTrust": "approvals:read",
    "resetTrust": "trust:reset",
}


def trust_paths() -> dict[str, Any]:
    """Trust per action pattern: the list, and a reset by hand."""
    return {
        f"{API}/trust": {
            "get": {
                "operationId": "listTrust",
                "summary": "This team's action patterns and their trust, by pattern",
                "parameters": [*PAGE_PARAMS],
                "responses": {
                    "200": json_of(ref("TrustPage"), "a page of at most `limit` patterns"),
                    **errors(401, 422, 503),
                },
            }
        },
        f"{API}/trust/{{pattern}}/reset": {
            "post": {
                "operationId": "resetTrust",
                "summary": "Reset one pattern's score to 0 (audited)",
                "parameters": [
                    {
                        "name": "pattern",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string"},
                    }
                ],
                "responses": {
                    "200": json_of(ref("Trust"), "reset"),
                    **errors(401, 404, 422, 503),
                },
            }
        },
    }
