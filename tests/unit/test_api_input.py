"""The HTTP API's input rules as pure functions: storable JSON, outage or not, the document."""

from __future__ import annotations

import json
import math
from typing import Any

import asyncpg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import exc as sa_exc

from bot.outages import storage_outage
from handlers.api import MAX_DEPTH, ApiError, check_storable, json_problem, text_problem
from handlers.openapi import document


def deep(levels: int) -> Any:
    value: Any = 1
    for _ in range(levels):
        value = {"a": value}
    return value


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"a": "text", "b": [1, 2.5, None, True], "c": {"d": "é😀"}}, None),
        ({"a": "x\x00y"}, ("a", "NUL")),
        ({"a\x00": 1}, ("(body)", "a key contains a NUL")),
        ({"m": {"k\ud800": 1}}, ("m", "a key contains a lone surrogate")),
        ({"m": ["ok", "\udfff"]}, ("m.1", "surrogate")),
        ({"n": float("nan")}, ("n", "finite")),
        ({"n": [float("inf")]}, ("n.0", "finite")),
        ({"n": -float("inf")}, ("n", "finite")),
        ({"n": 10**4000}, None),  # long but finite: storable
        ({"m": deep(MAX_DEPTH)}, None),
        ({"m": deep(MAX_DEPTH + 1)}, ("m.a.a.a.a.a.a.a.…", f"more than {MAX_DEPTH} levels")),
        ([{"labels": {"x": "\x00"}}], ("0.labels.x", "NUL")),
        ("\x00", ("(body)", "NUL")),
        # The first problem in document order is the one named.
        ({"a": "\x00", "b": float("nan")}, ("a", "NUL")),
    ],
)
def test_json_problem_table(body: Any, expected: tuple[str, str] | None) -> None:
    found = json_problem(body)
    if expected is None:
        assert found is None
    else:
        assert found is not None
        assert found[0] == expected[0] and expected[1] in found[1], found


def test_problem_paths_never_echo_the_bad_text() -> None:
    # A bad key is named by its parent's path: the answer never carries the bad text.
    found = json_problem({"m": {"bad\ud800key": {"x": "\x00"}}})
    assert found == (
        "m",
        "a key contains a lone surrogate (\\ud800-\\udfff), which is not valid Unicode",
    )
    json.dumps(found, ensure_ascii=False).encode()  # safe to put in a UTF-8 answer
    found = json_problem({"k" * 100: "\x00"})
    assert found is not None and found[0] == "k" * 64


def test_text_problem() -> None:
    assert text_problem("plain, é, 😀, \u2028") is None
    assert "NUL" in (text_problem("\x00") or "")
    assert "surrogate" in (text_problem("k\udc80") or "")


def dbapi_error(orig: Exception, **kw: Any) -> sa_exc.DBAPIError:
    return sa_exc.DBAPIError("SELECT 1", None, orig, **kw)


class PgError(Exception):
    def __init__(self, sqlstate: str) -> None:
        super().__init__(sqlstate)
        self.sqlstate = sqlstate


@pytest.mark.parametrize(
    ("exc", "outage"),
    [
        (ConnectionRefusedError(), True),
        (TimeoutError(), True),
        (sa_exc.TimeoutError("pool"), True),
        (sa_exc.OperationalError("SELECT 1", None, Exception("gone")), True),
        (sa_exc.InterfaceError("SELECT 1", None, Exception("connection is closed")), True),
        (dbapi_error(Exception("reset"), connection_invalidated=True), True),
        (dbapi_error(PgError("08006")), True),  # connection failure
        (dbapi_error(PgError("57P01")), True),  # admin shutdown
        (dbapi_error(PgError("55000")), True),  # database not accepting connections
        (dbapi_error(PgError("53300")), True),  # too many connections
        (dbapi_error(PgError("40001")), True),  # serialization failure
        (dbapi_error(PgError("22021")), False),  # NUL / bad encoding: the value, not an outage
        (dbapi_error(PgError("22P02")), False),  # invalid input syntax
        (dbapi_error(PgError("54001")), False),  # stack depth
        (dbapi_error(PgError("23505")), False),  # unique violation
        (
            sa_exc.StatementError(
                "x", "SELECT 1", None, UnicodeEncodeError("utf-8", "", 0, 1, "x")
            ),
            False,
        ),
        (ValueError("bug"), False),
    ],
)
def test_only_connection_and_operational_errors_are_outages(exc: Exception, outage: bool) -> None:
    assert storage_outage(exc) is outage


def test_asyncpg_error_classes_carry_their_sqlstate() -> None:
    # The classification reads sqlstate off the driver's error; asyncpg defines it per class.
    assert asyncpg.exceptions.CharacterNotInRepertoireError.sqlstate == "22021"
    assert asyncpg.exceptions.AdminShutdownError.sqlstate == "57P01"


def test_every_route_that_touches_storage_documents_503() -> None:
    doc = document()
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            responses = op["responses"]
            if path.endswith("/openapi.json"):
                assert "503" not in responses
                continue
            assert "503" in responses, (method, path)
            assert "Retry-After" in responses["503"]["headers"], (method, path)


_STRINGS = st.text(max_size=8) | st.sampled_from(
    ["\x00", "a\x00", "\ud800", "x\udfff", "\ud83d\ude00"]
)
_JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()  # NaN and infinities included: json.dumps writes them as NaN / Infinity
    | st.sampled_from([math.nan, math.inf, -math.inf, 1e308, 2.5e-300])
    | _STRINGS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_STRINGS, inner, max_size=4),
    max_leaves=40,
)


@given(body=_JSON_VALUES | st.builds(deep, st.integers(0, 40)))
@settings(max_examples=400, deadline=None)
def test_the_fast_path_refuses_exactly_what_the_full_walk_refuses(body: Any) -> None:
    for text in (json.dumps(body), json.dumps(body, ensure_ascii=False)):
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            continue  # a body is decoded from UTF-8 first: it never holds a raw lone surrogate
        parsed = json.loads(text)  # what the route sees (an escaped pair is one character)
        refused_by_walk = json_problem(parsed) is not None
        try:
            check_storable(parsed, text)
        except ApiError:
            refused = True
        else:
            refused = False
        assert refused == refused_by_walk, (body, text)
