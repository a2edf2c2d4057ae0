"""Bot API calls from outbox rows: the method object, its text fitted, errors made safe to log."""

from __future__ import annotations

import re
from typing import Any, cast

import aiogram.methods
from aiogram.methods import TelegramMethod
from aiogram.methods.base import Response
from aiogram.types import ForceReply, InlineKeyboardMarkup

from bot.rendering import fit_html, fit_plain

_TOKEN_RE = re.compile(r"\d{3,20}:[A-Za-z0-9_-]{30,}")
# pydantic caches parametrized generic models only weakly, so aiogram's Response[T], built to
# parse every answer, is rebuilt (milliseconds of CPU) after each garbage collection unless
# something holds it; at full send rate that was a tenth of this process's time.
_RESPONSE_TYPES: dict[type[TelegramMethod[Any]], Any] = {}


def build_method(method: str, payload: dict[str, Any]) -> TelegramMethod[Any]:
    """An aiogram method object from an outbox row's method name and JSON payload."""
    cls = getattr(aiogram.methods, method[0].upper() + method[1:])
    if not (isinstance(cls, type) and issubclass(cls, TelegramMethod)):
        raise TypeError(f"{method} is not a Bot API method")
    result: TelegramMethod[Any] = cls(**payload)
    return result


def sanitize(text: str, token: str = "") -> str:
    """Error text fit to store or log: the bot token (aiogram puts it in URLs) is masked."""
    if token:
        text = text.replace(token, "<token>")
    return _TOKEN_RE.sub("<token>", text)[:1000]


def fit_payload(method: str, payload: dict[str, Any]) -> dict[str, Any]:
    text = payload.get("text")
    if method not in {"sendMessage", "editMessageText"} or not isinstance(text, str):
        return payload
    html_mode = str(payload.get("parse_mode") or "").lower() == "html"
    fitted = fit_html(text) if html_mode else fit_plain(text)
    return payload if fitted is text else {**payload, "text": fitted}


def hold_response_type(method: TelegramMethod[Any]) -> None:
    """Keep the answer's Response[T] model alive (see _RESPONSE_TYPES)."""
    if type(method) not in _RESPONSE_TYPES:
        _RESPONSE_TYPES[type(method)] = cast(Any, Response)[method.__returning__]


def reply_markup_model(raw: dict[str, Any] | None) -> InlineKeyboardMarkup | ForceReply | None:
    """A stored reply_markup as aiogram's model: an inline keyboard, or a ForceReply."""
    if not raw:
        return None
    if raw.get("force_reply"):
        return ForceReply.model_validate(raw)
    return InlineKeyboardMarkup.model_validate(raw)


def inline_only(markup: InlineKeyboardMarkup | ForceReply | None) -> InlineKeyboardMarkup | None:
    # An edit takes only an inline keyboard; a question's ForceReply stays as it was sent.
    return markup if isinstance(markup, InlineKeyboardMarkup) else None


def topic_gone(description: str) -> bool:
    """Telegram's answers for a forum topic that was deleted or closed."""
    return "message thread not found" in description or "topic_closed" in description
