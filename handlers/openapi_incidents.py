"""The incident routes' request bodies and their part of the OpenAPI document."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from bot.incidents.rules import SEVERITIES, STATUSES
from bot.policy import Scope
from handlers.openapi_parts import API, PAGE_PARAMS, body, errors, json_of

Severity = Literal["P0", "P1", "P2", "P3"]
Service = Annotated[str, Field(min_length=1, max_length=64)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class CreateIncident(_Body):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"title": "Payments 5xx", "severity": "P1", "services": ["payments"]}]
        }
    )
    title: str = Field(min_length=1, max_length=200)
    severity: Severity
    alert_ids: list[Annotated[int, Field(gt=0, lt=2**63)]] | None = Field(
        default=None, max_length=100, description="the team's alerts to attach"
    )
    services: list[Service] | None = Field(default=None, max_length=20)


class ChangeStatus(_Body):
    model_config = ConfigDict(json_schema_extra={"examples": [{"status": "mitigating"}]})
    status: Literal["investigating", "mitigating", "resolved", "closed", "escalated"] = Field(
        description="escalated is a flag with a time: it leaves the status as it is"
    )


class ChangeCommander(_Body):
    model_config = ConfigDict(json_schema_extra={"examples": [{"telegram_id": 1001}]})
    telegram_id: int = Field(gt=0, lt=2**52, description="one of the team's approvers")


class CreateMaintenance(_Body):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "matchers": {"service": "payments"},
                    "starts_at": "2026-11-28T22:00:00Z",
                    "ends_at": "2026-11-29T00:00:00Z",
                    "comment": "database upgrade",
                }
            ]
        }
    )
    matchers: dict[str, Annotated[str, Field(min_length=1, max_length=256)]] = Field(
        min_length=1, max_length=20, description="label name -> value, all must match"
    )
    starts_at: Annotated[AwareDatetime, Field(strict=False)]
    ends_at: Annotated[AwareDatetime, Field(strict=False)]
    comment: str = Field(default="", max_length=500)


INCIDENT_BODIES: dict[str, type[BaseModel]] = {
    "CreateMaintenance": CreateMaintenance,
    "CreateIncident": CreateIncident,
    "ChangeStatus": ChangeStatus,
    "ChangeCommander": ChangeCommander,
}

_TIME = {"type": "string", "format": "date-time"}
_MAYBE_TIME = {"type": ["string", "null"], "format": "date-time"}

INCIDENT_SCHEMAS: dict[str, Any] = {
    "Maintenance": {
        "type": "object",
        "required": ["id", "matchers", "starts_at", "ends_at"],
        "properties": {
            "id": {"type": "integer"},
            "matchers": {"type": "object"},
            "starts_at": _TIME,
            "ends_at": _TIME,
            "comment": {"type": "string"},
            "alertmanager": {"type": "boolean", "description": "mirrored there as a silence"},
        },
    },
    "Incident": {
        "type": "object",
        "required": ["id", "status", "severity", "title", "created_at"],
        "properties": {
            "id": {"type": "string", "pattern": r"^INC-\d{8}-[A-Z0-9]{6}$"},
            "team": {"type": "string"},
            "title": {"type": "string"},
            "severity": {"type": "string", "enum": list(SEVERITIES)},
            "status": {"type": "string", "enum": list(STATUSES)},
            "escalated_at": _MAYBE_TIME,
            "commander": {"type": ["object", "null"]},
            "services": {"type": "array", "items": {"type": "string"}},
            "group_labels": {"type": "object"},
            "declared_by": {"type": "string"},
            "alerts": {"type": "object"},
            "approvals": {"type": "array", "items": {"type": "object"}},
            "created_at": _TIME,
            "acknowledged_at": _MAYBE_TIME,
            "resolved_at": _MAYBE_TIME,
            "closed_at": _MAYBE_TIME,
        },
    },
    "IncidentPage": {
        "type": "object",
        "required": ["incidents", "next"],
        "properties": {
            "incidents": {"type": "array", "items": {"$ref": "#/components/schemas/Incident"}},
            "next": {"type": ["string", "null"]},
        },
    },
    "TimelinePage": {
        "type": "object",
        "required": ["events", "next"],
        "properties": {
            "events": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["at", "kind", "actor", "text"],
                    "properties": {
                        "at": _TIME,
                        "kind": {"type": "string"},
                        "actor": {"type": ["string", "null"]},
                        "text": {"type": "string"},
                        "count": {"type": "integer"},
                        "alert_id": {"type": ["integer", "null"]},
                        "approval_id": {"type": ["string", "null"]},
                    },
                },
            },
            "next": {"type": ["string", "null"]},
        },
    },
}

_ID = {
    "name": "id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": r"^INC-\d{8}-[A-Z0-9]{6}$"},
}
_STATUS_PARAM = {
    "name": "status",
    "in": "query",
    "required": False,
    "description": "`open` for investigating and mitigating",
    "schema": {"type": "string", "enum": [*STATUSES, "open"]},
}

INCIDENT_SCOPES: dict[str, Scope] = {
    "createMaintenance": "incidents:write",
    "createIncident": "incidents:write",
    "listIncidents": "incidents:read",
    "getIncident": "incidents:read",
    "changeIncidentStatus": "incidents:write",
    "changeIncidentCommander": "incidents:write",
    "getIncidentTimeline": "incidents:read",
    "getIncidentPostmortem": "incidents:read",
}


def incident_paths(common: dict[str, Any]) -> dict[str, Any]:
    """The incident operations; `common` is the main document's errors of a route with a body."""
    incident = {"$ref": "#/components/schemas/Incident"}

    def change(operation: str, model: str, what: str) -> dict[str, Any]:
        return {
            "post": {
                "operationId": operation,
                "parameters": [_ID],
                "requestBody": body(model),
                "responses": {
                    "200": json_of(incident, what),
                    **common,
                    **errors(404, 409),
                },
            }
        }

    return {
        f"{API}/maintenance": {
            "post": {
                "operationId": "createMaintenance",
                "summary": "Open a maintenance window: matching alerts are stored, not posted",
                "requestBody": body("CreateMaintenance"),
                "responses": {
                    "201": json_of({"$ref": "#/components/schemas/Maintenance"}, "stored"),
                    **common,
                },
            }
        },
        f"{API}/incidents": {
            "post": {
                "operationId": "createIncident",
                "summary": "Declare an incident (its card is posted and pinned)",
                "requestBody": body("CreateIncident"),
                "responses": {"201": json_of(incident, "declared"), **common},
            },
            "get": {
                "operationId": "listIncidents",
                "summary": "This team's incidents, newest first, a page at a time",
                "parameters": [_STATUS_PARAM, *PAGE_PARAMS],
                "responses": {
                    "200": json_of({"$ref": "#/components/schemas/IncidentPage"}, "a page"),
                    **errors(401, 422, 503),
                },
            },
        },
        f"{API}/incidents/{{id}}": {
            "get": {
                "operationId": "getIncident",
                "parameters": [_ID],
                "responses": {"200": json_of(incident, "the incident"), **errors(401, 404, 503)},
            }
        },
        f"{API}/incidents/{{id}}/status": change(
            "changeIncidentStatus", "ChangeStatus", "moved on (or flagged escalated)"
        ),
        f"{API}/incidents/{{id}}/commander": change(
            "changeIncidentCommander", "ChangeCommander", "in command now"
        ),
        f"{API}/incidents/{{id}}/timeline": {
            "get": {
                "operationId": "getIncidentTimeline",
                "parameters": [_ID, *PAGE_PARAMS],
                "responses": {
                    "200": json_of(
                        {"$ref": "#/components/schemas/TimelinePage"}, "oldest line first"
                    ),
                    **errors(401, 404, 422, 503),
                },
            }
        },
        f"{API}/incidents/{{id}}/postmortem.md": {
            "get": {
                "operationId": "getIncidentPostmortem",
                "parameters": [_ID],
                "responses": {
                    "200": {
                        "description": "a Markdown draft",
                        "content": {"text/markdown": {"schema": {"type": "string"}}},
                    },
                    **errors(401, 404, 503),
                },
            }
        },
    }
