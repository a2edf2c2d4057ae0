"""Bot API parameter readers: Telegram's lenient coercion and its error texts."""

from __future__ import annotations

import json
from typing import Any, cast

from sandbox.emulator.errors import JSON, ApiError


def get_int(p: JSON, key: str, *, required: bool = True, default: int | None = None) -> int:
    """An integer parameter; ints, integral floats, bools and numeric strings are accepted."""
    value = p.get(key)
    if value is None or value == "":
        if required:
            raise ApiError(400, f"Bad Request: {key} is empty")
        return cast(int, default)
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            pass
    if key == "chat_id":
        raise ApiError(400, "Bad Request: chat not found")
    raise ApiError(400, f"Bad Request: invalid {key} specified")


def get_opt_int(p: JSON, key: str) -> int | None:
    """An optional integer parameter (absent or empty gives None)."""
    value = p.get(key)
    if value is None or value == "":
        return None
    return get_int(p, key)


def get_float(p: JSON, key: str, default: float) -> float:
    """A float parameter, `default` when absent or empty."""
    value = p.get(key)
    if value is None or value == "":
        return default
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ApiError(400, f"Bad Request: invalid {key} specified") from None


def get_str(p: JSON, key: str) -> str | None:
    """A string parameter; other values are stringified."""
    value = p.get(key)
    if value is None:
        return None
    if isinstance(value, str):
        return value
    return str(value)


def get_bool(p: JSON, key: str) -> bool:
    """A boolean parameter; form-encoded strings "true", "1" and "yes" are true."""
    value = p.get(key)
    if isinstance(value, str):
        return value.strip().lower() in {"true", "1", "yes"}
    return bool(value)


def get_json(p: JSON, key: str) -> Any:
    """A JSON-serialised parameter (form bodies carry objects as strings)."""
    value = p.get(key)
    if isinstance(value, str):
        if value == "":
            return None
        try:
            return json.loads(value)
        except ValueError:
            raise ApiError(400, f"Bad Request: can't parse {key} JSON object") from None
    return value
