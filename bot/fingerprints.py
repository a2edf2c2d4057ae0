"""Alert identity and the small normalisations every alert source shares."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from datetime import UTC, datetime

FINGERPRINT_CHARS = 16
# Alertmanager sends 0001-01-01T00:00:00Z for "no end yet".
_EPOCH = datetime(1970, 1, 2, tzinfo=UTC)


def derive_fingerprint(labels: Mapping[str, str]) -> str:
    """sha256 over the sorted labels, first 16 hex characters (stable across sources)."""
    canonical = json.dumps(sorted(labels.items()), ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:FINGERPRINT_CHARS]


def real_time(value: datetime | None) -> datetime | None:
    """None for a missing or zero time; naive times are taken as UTC."""
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    if value < _EPOCH:
        return None
    return value


def web_url(value: str | None) -> str | None:
    """Only plain http(s) links make it onto a card (no tg://, javascript: and the like)."""
    if not value:
        return None
    value = value.strip()
    if not value.lower().startswith(("http://", "https://")) or len(value) > 2048:
        return None
    if any(c.isspace() for c in value):
        return None
    return value
