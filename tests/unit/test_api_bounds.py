"""Caps on free-form JSON fields and the list cursor, as pure functions."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from bot.approvals.requests import read_cursor
from bot.errors import Invalid
from handlers.openapi import CreateApproval

BODY = {"action": "a", "target": "b", "risk_level": "low", "requested_by": "c"}


def lists(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize(
    ("field", "value", "words"),
    [
        ("metadata", {"x": "y" * 16_400}, "bytes as JSON"),
        ("metadata", {"x": "é" * 8_200}, "bytes as JSON"),  # bytes, not characters
        ("blast_radius", {str(i): i for i in range(257)}, "more than 256 keys"),
        ("blast_radius", {"deep": {str(i): i for i in range(257)}}, "more than 256 keys"),
        ("dry_run_checks", [{str(i): i for i in range(257)}], "more than 256 keys"),
        ("dry_run_checks", lists(33), "32 levels"),
        ("metadata", {"deep": lists(32)}, "32 levels"),
    ],
)
def test_over_a_cap_names_the_field(field: str, value: Any, words: str) -> None:
    with pytest.raises(ValidationError) as caught:
        CreateApproval.model_validate({**BODY, field: value})
    error = caught.value.errors()[0]
    assert error["loc"] == (field,)
    assert words in error["msg"]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("metadata", {"x": "y" * 16_000}),
        ("blast_radius", {str(i): i for i in range(256)}),
        ("dry_run_checks", lists(32)),  # the field itself is the outermost list
        ("metadata", {"deep": lists(31)}),
    ],
)
def test_at_the_caps_is_accepted(field: str, value: Any) -> None:
    assert getattr(CreateApproval.model_validate({**BODY, field: value}), field) == value


def test_a_cursor_names_a_position() -> None:
    import base64

    at, ident = datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC), uuid.uuid4()
    cursor = base64.urlsafe_b64encode(f"{at.isoformat()}|{ident}".encode()).decode().rstrip("=")
    assert read_cursor(cursor) == (at, ident)


@given(st.text(max_size=200))
def test_any_other_text_is_invalid_cursor_or_a_position(text: str) -> None:
    field = None
    try:
        at, ident = read_cursor(text)
    except Invalid as exc:
        field = exc.field
    else:
        assert at.tzinfo is not None and isinstance(ident, uuid.UUID)
    assert field in (None, "cursor")
