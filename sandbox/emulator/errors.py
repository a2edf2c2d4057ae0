"""The emulator's failures: Bot API errors, control API errors, and the JSON they travel in."""

from __future__ import annotations

from typing import Any

JSON = dict[str, Any]


class ApiError(Exception):
    """A Bot API call fails: answered as ``{"ok": false, "error_code", "description"}``."""

    def __init__(self, status: int, description: str, parameters: JSON | None = None) -> None:
        super().__init__(description)
        self.status = status
        self.description = description
        self.parameters = parameters


class ControlError(Exception):
    """A control API call fails: answered as ``{"ok": false, "error": message}``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def error_body(exc: ApiError) -> JSON:
    """The Bot API's error object for `exc`."""
    body: JSON = {"ok": False, "error_code": exc.status, "description": exc.description}
    if exc.parameters:
        body["parameters"] = exc.parameters
    return body


def too_many_requests(retry_after: int) -> ApiError:
    """Telegram's 429 with the seconds to wait in both the text and the parameters."""
    return ApiError(
        429, f"Too Many Requests: retry after {retry_after}", {"retry_after": retry_after}
    )
