"""Opaque page cursors: a position (a few strings) in URL-safe base64, checked on the way in."""

from __future__ import annotations

import base64
import binascii

from bot.errors import Invalid

_SEP = "|"


def encode(*parts: str) -> str:
    raw = _SEP.join(parts).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode(cursor: str, n: int) -> list[str]:
    """The `n` parts `encode` packed; Invalid (naming `cursor`) for anything else."""
    try:
        parts = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode().split(_SEP)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        parts = []
    if not cursor or len(parts) != n or not all(parts):
        raise Invalid("cursor", "not a cursor from a previous page's `next`")
    return parts
