"""Hypothesis over POST /api/v1/approvals: whatever JSON comes in, the answer is never a 5xx."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from http.client import HTTPConnection
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support import API_KEY, Harness


@dataclass(frozen=True)
class Raw:
    """A JSON fragment written as is: what json.dumps will not produce."""

    text: str

    def __repr__(self) -> str:
        return f"Raw({self.text[:20]!r}… {len(self.text)} characters)"


ODD_CHARS = st.sampled_from(["\x00", "\ud800", "\udfff", "\udc80", "\u2028", "\ufeff", "é", "😀"])
TEXT = st.lists(st.one_of(st.characters(), ODD_CHARS), max_size=12).map("".join)
RAW = st.one_of(
    st.integers(4290, 5000).map(lambda n: Raw("7" * n)),  # over the int-string limit or not
    st.sampled_from(["NaN", "Infinity", "-Infinity", "1e999", "-0", "1E400", "0.1e-400"]).map(Raw),
    st.integers(1, 1200).map(lambda n: Raw("[" * n + "0" + "]" * n)),
    st.integers(1, 60).map(lambda n: Raw('{"a":' * n + "null" + "}" * n)),
)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(-(2**80), 2**80),
    st.floats(allow_nan=True, allow_infinity=True),
    TEXT,
    RAW,
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(TEXT, inner, max_size=4)),
    max_leaves=12,
)
FIELDS = [
    "action",
    "target",
    "risk_level",
    "requested_by",
    "requested_by_telegram_id",
    "description",
    "fingerprint",
    "incident_id",
    "metadata",
    "blast_radius",
    "dry_run_checks",
    "expires_in",
    "callback_url",
]
VALID: dict[str, Any] = {
    "action": "restart",
    "target": "prod/api",
    "risk_level": "low",
    "requested_by": "ci",
}
# Mostly a valid body with a few fields replaced, so that the creation path itself runs.
BODIES = st.one_of(
    st.dictionaries(st.sampled_from(FIELDS), VALUES, max_size=4).map(lambda d: {**VALID, **d}),
    st.dictionaries(
        st.sampled_from(["metadata", "blast_radius"]), st.dictionaries(TEXT, VALUES)
    ).map(lambda d: {**VALID, **d}),
    VALUES,
)


def encode(value: Any) -> str:
    if isinstance(value, Raw):
        return value.text
    if isinstance(value, dict):
        return "{" + ",".join(f"{encode(k)}:{encode(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(encode(v) for v in value) + "]"
    # ensure_ascii writes a lone surrogate as its \\u escape, as an attacker would.
    return json.dumps(value, allow_nan=True)


def post(host: str, port: int, body: bytes, idempotency_key: str | None) -> tuple[int, str]:
    headers = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"}
    if idempotency_key is not None:
        headers["Idempotency-Key"] = idempotency_key
    conn = HTTPConnection(host, port, timeout=20)
    try:
        conn.request("POST", "/api/v1/approvals", body=body, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read().decode()
    finally:
        conn.close()


# Hypothesis flags use of the global `random` during generation; that is Quorum's own event
# loop (backoff jitter) running in the main thread meanwhile, not the strategies.
@pytest.mark.filterwarnings("ignore:Do not use the `random` module")
async def test_no_body_gets_a_5xx(quorum: Harness) -> None:
    host, port = quorum.url.removeprefix("http://").split(":")
    seen: list[int] = []

    @settings(
        max_examples=150,
        deadline=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )
    @given(body=BODIES, keyed=st.booleans())
    def check(body: Any, keyed: bool) -> None:
        text = encode(body)
        key = f"fuzz-{len(seen)}" if keyed else None
        status, answer = post(host, int(port), text.encode(), key)
        seen.append(status)
        assert status < 500, (status, answer, text[:500])
        assert json.loads(answer)["error" if status >= 400 else "id"], answer

    # Blocking HTTP in a thread: the event loop keeps serving Quorum meanwhile.
    await asyncio.to_thread(check)
    # The examples reached every stage: refusals of the body and creations.
    assert {400, 422} <= set(seen) and ({200, 201} & set(seen)), sorted(set(seen))
