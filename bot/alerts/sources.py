"""What Alertmanager, Grafana and generic JSON senders post, and its mapping to IncomingAlert."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, field_validator

from bot.errors import Invalid
from bot.fingerprints import derive_fingerprint, real_time, web_url
from storage.alerts import IncomingAlert

MAX_ALERTS = 10_000
Status = Literal["firing", "resolved"]
Scalar = str | int | float | bool
Kind = Literal["alertmanager", "grafana", "generic"]


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

    @field_validator("source")
    @classmethod
    def _source(cls, v: str) -> str:
        # These name alerts whose labels Alertmanager itself sent: a Silence mirrors them there.
        if v.lower() in ("alertmanager", "grafana"):
            raise ValueError(f"{v!r} is reserved for the /alertmanager and /grafana endpoints")
        return v

    @field_validator("title")
    @classmethod
    def _title(cls, v: str | None) -> str | None:
        if v is not None and not v.strip():
            raise ValueError("must not be empty")
        return v


_GENERIC_LIST = TypeAdapter(list[GenericAlert])


def read_alerts(kind: Kind, data: Any) -> list[IncomingAlert]:
    """A parsed JSON body of this source as alerts; raises pydantic's ValidationError or Invalid."""
    if kind == "grafana":
        return from_alertmanager(GrafanaBody.model_validate(data), "grafana")
    if kind == "alertmanager":
        return from_alertmanager(AlertmanagerBody.model_validate(data))
    if not isinstance(data, list):
        return from_generic([GenericAlert.model_validate(data)])
    if len(data) > MAX_ALERTS:
        raise Invalid("(body)", f"at most {MAX_ALERTS} alerts")
    return from_generic(_GENERIC_LIST.validate_python(data))


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


def _grafana_extras(
    body: AlertmanagerBody, a: GrafanaAlert, url: str | None, title: str, ctx: dict[str, Any]
) -> tuple[str | None, str]:
    """Grafana's panel link, value and rule title; the value goes into `ctx`."""
    url = web_url(a.panelURL) or web_url(a.dashboardURL) or url
    if a.valueString:
        ctx["value"] = a.valueString[:1000]
    elif a.values:
        ctx["value"] = ", ".join(f"{k}={v}" for k, v in list(a.values.items())[:20])
    if isinstance(body, GrafanaBody) and not a.labels.get("alertname") and body.title:
        title = body.title
    return url, title


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
            url, title = _grafana_extras(body, a, url, title, ctx)
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
            raise Invalid(f"{i}.title", "give a title or an alertname label")
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
