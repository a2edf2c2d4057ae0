"""Building blocks shared by the OpenAPI document's parts: refs, responses, bodies, parameters."""

from __future__ import annotations

from typing import Any

API = "/api/v1"

# limit and cursor, as every paginated list takes them.
PAGE_PARAMS: list[dict[str, Any]] = [
    {
        "name": "limit",
        "in": "query",
        "required": False,
        "schema": {"type": "integer", "minimum": 1, "maximum": 100, "default": 50},
    },
    {
        "name": "cursor",
        "in": "query",
        "required": False,
        "description": "the `next` of the previous page, as it was",
        "schema": {"type": "string", "minLength": 1},
    },
]


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def json_of(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def errors(*codes: int) -> dict[str, Any]:
    text = {
        400: "malformed JSON",
        401: "no or unknown API key",
        403: "insufficient_scope: the API key lacks the scope this route needs",
        404: "no such request for this key's team",
        409: "conflict (see error.code)",
        413: "body over the size limit",
        415: "not application/json",
        422: "validation error naming the field",
        503: "storage unavailable: retry after Retry-After seconds",
    }
    out = {str(c): json_of(ref("Error"), text[c]) for c in codes}
    if 503 in codes:
        out["503"]["headers"] = {
            "Retry-After": {"description": "seconds", "schema": {"type": "integer"}}
        }
    return out


def body(name: str) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": ref(name)}}}


def query(name: str, schema: dict[str, Any], description: str = "") -> dict[str, Any]:
    param = {"name": name, "in": "query", "required": False, "schema": schema}
    return {**param, "description": description} if description else param
