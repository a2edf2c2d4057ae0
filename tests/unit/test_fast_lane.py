"""The vote buttons' fast lane reads the same tap as aiogram's models, or leaves the update to
them: never a tap aiogram would read differently or refuse."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from aiogram import Bot
from aiogram.types import Update
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from bot.approvals import Tap
from bot.buttons import ApprovalVote
from bot.inbound import lean_update
from handlers.approvals import tap_of
from handlers.taps import read_tap

BOT = Bot("987654322:" + "C" * 35)
DATA = ApprovalVote(ref="A" * 22, vote="a", tag="B" * 16).pack()


def tap_update() -> dict[str, Any]:
    """A tap as Telegram (and the emulator) delivers it: the whole card comes back with it."""
    return {
        "update_id": 5,
        "callback_query": {
            "id": "4200000000000007919",
            "from": {"id": 700001, "is_bot": False, "first_name": "Ann", "username": "ann"},
            "message": {
                "message_id": 55,
                "date": 1_700_000_000,
                "chat": {"id": -1003000000001, "type": "supergroup", "title": "ops"},
                "from": {"id": 987654322, "is_bot": True, "first_name": "quorum"},
                "text": "<b>restart</b> api",
                "reply_markup": {"inline_keyboard": [[{"text": "✅", "callback_data": DATA}]]},
            },
            "chat_instance": "93000000048",
            "data": DATA,
        },
    }


def aiogram_tap(update: dict[str, Any]) -> tuple[str, Tap] | None:
    """What the dispatcher's path (handlers.approvals.vote_by_button) reads of the update."""
    try:
        parsed = Update.model_validate(lean_update(update), context={"bot": BOT})
    except ValidationError:
        return None
    query = parsed.callback_query
    if query is None or query.data is None:
        return None
    try:
        button = ApprovalVote.unpack(query.data)
    except (TypeError, ValueError):
        return None
    tap = tap_of(query, button)
    return None if tap is None else (query.id, tap)


def with_change(path: tuple[str, ...], value: object) -> dict[str, Any]:
    return apply(tap_update(), path, value)


DROP = object()


def test_a_real_tap_takes_the_fast_lane_and_reads_as_aiogram_does() -> None:
    fast = read_tap(tap_update())
    assert fast is not None
    assert fast == aiogram_tap(tap_update())
    assert fast[1] == Tap("A" * 22, "a", "B" * 16, -1003000000001, 55, 700001, "ann")


def test_without_a_username_the_first_name_is_the_name() -> None:
    fast = read_tap(with_change(("callback_query", "from", "username"), DROP))
    assert fast is not None and fast[1].user_name == "Ann"
    assert fast == aiogram_tap(with_change(("callback_query", "from", "username"), DROP))


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("callback_query", "from", "id"), True),  # a bool is no id, though Python says int
        (("callback_query", "from", "id"), "700001"),  # pydantic would coerce; we leave it
        (("callback_query", "from", "id"), 2**63),  # beyond bigint
        (("callback_query", "from", "is_bot"), DROP),
        (("callback_query", "from", "username"), 5),
        (("callback_query", "message", "chat", "id"), 1.5),
        (("callback_query", "message", "chat", "type"), DROP),
        (("callback_query", "message", "date"), DROP),
        (("callback_query", "message"), DROP),  # an inline message's button
        (("callback_query", "chat_instance"), DROP),
        (("callback_query", "data"), "al:x:ack:tag"),  # another kind of button
        (("callback_query", "data"), DATA + ":extra"),  # does not unpack
        (("callback_query", "data"), None),  # a game's button
        (("message",), {"message_id": 1}),  # an update carrying two things
    ],
)
def test_anything_unusual_is_left_to_the_dispatcher(path: tuple[str, ...], value: object) -> None:
    assert read_tap(with_change(path, value)) is None


PATHS = [
    ("update_id",),
    ("edited_message",),
    ("callback_query", "id"),
    ("callback_query", "data"),
    ("callback_query", "chat_instance"),
    ("callback_query", "inline_message_id"),
    ("callback_query", "from"),
    ("callback_query", "from", "id"),
    ("callback_query", "from", "is_bot"),
    ("callback_query", "from", "first_name"),
    ("callback_query", "from", "username"),
    ("callback_query", "message"),
    ("callback_query", "message", "message_id"),
    ("callback_query", "message", "date"),
    ("callback_query", "message", "chat"),
    ("callback_query", "message", "chat", "id"),
    ("callback_query", "message", "chat", "type"),
    ("callback_query", "message", "chat", "title"),
    ("callback_query", "message", "chat", "photo"),
    ("callback_query", "message", "from"),
    ("callback_query", "message", "from", "id"),
    ("callback_query", "message", "message_thread_id"),
    ("callback_query", "from", "last_name"),
    ("callback_query", "from", "is_premium"),
    ("callback_query", "from", "language_code"),
]
VALUES = st.one_of(
    st.just(DROP),
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False),
    st.text(max_size=8),
    st.sampled_from([DATA, "ap::a:", "ap:x:y", "ap:a:b:c", "ap:" + "é" * 3 + ":a:t"]),
    st.just({}),
    st.just([]),
)


@settings(max_examples=400, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(PATHS), VALUES), max_size=3))
def test_the_fast_lane_never_reads_a_tap_aiogram_would_not(
    changes: list[tuple[tuple[str, ...], object]],
) -> None:
    update = tap_update()
    for path, value in changes:
        update = apply(update, path, value)
    fast = read_tap(update)
    if fast is not None:
        assert fast == aiogram_tap(update)


def apply(update: dict[str, Any], path: tuple[str, ...], value: object) -> dict[str, Any]:
    """`update` with the field at `path` set to `value` (or dropped), unless an earlier change
    removed or replaced one of its parents."""
    changed = copy.deepcopy(update)
    *parents, key = path
    node: Any = changed
    for p in parents:
        node = node.get(p) if isinstance(node, dict) else None
    if not isinstance(node, dict):
        return changed
    if value is DROP:
        node.pop(key, None)
    else:
        node[key] = value
    return changed
