"""The vote buttons' fast lane: a tap read straight from the update's JSON, ahead of aiogram."""

from __future__ import annotations

import types
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any, Union, get_args, get_origin

from aiogram.methods import AnswerCallbackQuery
from aiogram.types import CallbackQuery, Chat, User
from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncSession

from bot import approvals
from bot.buttons import ApprovalVote
from bot.runtime import Runtime
from handlers.approvals import press_vote
from handlers.replies import toast

BIGINT = 2**63


@dataclass(frozen=True, slots=True)
class Shape:
    """What an aiogram model takes of a JSON object, as far as this lane checks it."""

    plain: dict[str, type]  # the fields of one JSON type (str, int or bool) by key
    required: frozenset[str]
    other: frozenset[str]  # the model's other fields (nested objects, lists, dates)

    @classmethod
    def of(cls, model: type[BaseModel]) -> Shape:
        plain: dict[str, type] = {}
        required, other = set(), set()
        for name, field in model.model_fields.items():
            key = field.alias or name
            if field.is_required():
                required.add(key)
            kinds = [field.annotation]
            if get_origin(field.annotation) in (Union, types.UnionType):
                kinds = [k for k in get_args(field.annotation) if k is not type(None)]
            if len(kinds) == 1 and kinds[0] in (str, int, bool):
                plain[key] = kinds[0]
            else:
                other.add(key)
        return cls(plain, frozenset(required), frozenset(other))

    def takes(self, value: object, nested: frozenset[str] = frozenset()) -> bool:
        """`value` is a JSON object the model takes as it is: every required key present, every
        plain field of its type (an int within bigint, as the database stores ids), and no
        other field of the model but the `nested` ones, which the caller checks."""
        if type(value) is not dict or not self.required <= value.keys():
            return False
        for key, found in value.items():
            kind = self.plain.get(key)
            if kind is None:
                refused = key in self.other and key not in nested
            else:
                out_of_range = isinstance(found, int) and not -BIGINT <= found < BIGINT
                refused = type(found) is not kind or out_of_range
            if refused:
                return False
        return True


_USER = Shape.of(User)
_CHAT = Shape.of(Chat)
_QUERY = Shape.of(CallbackQuery)
# The tapped message as bot.inbound.lean_update leaves it for aiogram, whose date is a Unix
# time (a Message, or an InaccessibleMessage with date 0).
_MESSAGE = Shape(
    {"message_id": int, "date": int, "message_thread_id": int},
    frozenset({"message_id", "date", "chat"}),
    frozenset({"chat", "from"}),
)
_UPDATE = Shape({"update_id": int}, frozenset({"update_id", "callback_query"}), frozenset())


def read_tap(update: dict[str, Any]) -> tuple[str, approvals.Tap] | None:
    """The callback query id and the tap of a well-formed vote-button update; None for any
    other update, or anything unusual in a tap (a field aiogram would refuse or read otherwise,
    callback_data that does not unpack). What it reads is what vote_by_button reads of
    aiogram's models (tests/unit/test_fast_lane.py holds the two to the same tap)."""
    query = update.get("callback_query")
    if len(update) != 2 or not _UPDATE.takes(update, frozenset({"callback_query"})):
        return None
    if not _QUERY.takes(query, frozenset({"from", "message"})):
        return None
    assert isinstance(query, dict)
    sender, msg = query["from"], query.get("message")
    if not (_USER.takes(sender) and _MESSAGE.takes(msg, frozenset({"chat", "from"}))):
        return None
    assert isinstance(msg, dict)
    if not (_CHAT.takes(msg["chat"]) and ("from" not in msg or _USER.takes(msg["from"]))):
        return None
    data = query.get("data")
    if type(data) is not str:
        return None
    # ApprovalVote.unpack without building its model: three plain string fields.
    prefix, *parts = data.split(ApprovalVote.__separator__)
    if prefix != ApprovalVote.__prefix__ or len(parts) != len(ApprovalVote.model_fields):
        return None
    ref, vote, tag = parts
    tap = approvals.Tap(
        ref=ref,
        vote=vote,
        tag=tag,
        chat_id=msg["chat"]["id"],
        message_id=msg["message_id"],
        user_id=sender["id"],
        user_name=sender.get("username") or sender["first_name"],
    )
    return query["id"], tap


def press_vote_fast(
    update: dict[str, Any], session: AsyncSession, runtime: Runtime
) -> Awaitable[AnswerCallbackQuery] | None:
    """The lane itself (bot.inbound.FastLane): validating the Update model and dispatching it
    through the routers cost more CPU than the vote's SQL (bench.votes). Taps `read_tap` does
    not take go through aiogram as any update does."""
    found = read_tap(update)
    return None if found is None else press_vote(*found, session, runtime)


def count_vote_plainly(
    update: dict[str, Any], body: str, runtime: Runtime
) -> Awaitable[AnswerCallbackQuery | None] | None:
    """The plain lane (bot.inbound.PlainLane): an approval tap counted by one statement before
    any session is opened (bot.approvals.count_plainly); None for any update it cannot take."""
    found = read_tap(update)
    if found is None:
        return None
    return _count_plainly(found[0], found[1], update["update_id"], body, runtime)


async def _count_plainly(
    query_id: str, tap: approvals.Tap, update_id: int, body: str, runtime: Runtime
) -> AnswerCallbackQuery | None:
    counted = await approvals.count_plainly(runtime, update_id, body, tap)
    return None if counted is None else toast(query_id, counted.toast)
