"""Redeeming refuses a token at or past its exp, or once its request's expires_at has passed
by the database's clock."""

from __future__ import annotations

import time

import jwt

from bot.tokens import TOKEN_TYPE, key_id
from tests.e2e.flows import approved, sql
from tests.support import TOKEN_SECRET, Harness


def with_exp(token: str, exp: int) -> str:
    """The same token re-signed with the test secret and another exp."""
    claims = {**jwt.decode(token, options={"verify_signature": False}), "exp": exp}
    headers = {"typ": TOKEN_TYPE, "kid": key_id(TOKEN_SECRET.encode())}
    return jwt.encode(claims, TOKEN_SECRET, algorithm="HS256", headers=headers)


async def refused_as_expired(h: Harness, token: str) -> None:
    status, data = await h.api("POST", "/api/v1/tokens/redeem", {"token": token})
    assert status == 401, data
    assert data["error"]["code"] == "invalid_token" and "expired" in data["error"]["message"]
    rows = await sql(h, "SELECT count(*) AS n FROM token_redemptions")
    assert rows[0]["n"] == 0
    reasons = await sql(
        h, "SELECT detail->>'reason' AS reason FROM audit_log WHERE event = 'token.invalid'"
    )
    assert any("expired" in (r["reason"] or "") for r in reasons), reasons


async def test_token_redeemed_20_s_after_its_exp_is_refused(quorum: Harness) -> None:
    _rid, token = await approved(quorum)
    await refused_as_expired(quorum, with_exp(token, int(time.time()) - 20))
    # The genuine token (exp still ahead) is fine: the refusal consumed nothing.
    status, data = await quorum.api("POST", "/api/v1/tokens/redeem", {"token": token})
    assert status == 200, data


async def test_token_refused_once_its_request_expired_by_the_database_clock(
    quorum: Harness,
) -> None:
    rid, token = await approved(quorum)
    # The request's deadline passes (by the database's clock) while the token's exp is ahead.
    await sql(
        quorum,
        "UPDATE approval_requests SET expires_at = now() - interval '1 second' WHERE id = $1",
        rid,
    )
    await refused_as_expired(quorum, token)
    # Refused for good, not mistaken for a replay on a retry.
    await refused_as_expired(quorum, token)
