"""Approval tokens: every way a token can be wrong is refused; redemption works exactly once."""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import pytest
from pydantic import SecretStr

from bot.settings import Settings
from bot.tokens import TOKEN_TYPE, InvalidToken, TokenService, key_id
from tests.e2e.flows import card, create, sql, tap
from tests.support import ALICE, BOB, OTHER_API_KEY, TOKEN_SECRET, Harness, QuorumFactory

KEY = "k" * 40
OLD_KEY = "o" * 40


def service(secret: str = KEY, previous: tuple[str, ...] = ()) -> TokenService:
    return TokenService(
        Settings(
            token_secret=SecretStr(secret),
            token_previous_secrets=[SecretStr(p) for p in previous],
            token_ttl_seconds=300,
        )
    )


def mint(svc: TokenService, now: datetime | None = None, **over: Any) -> str:
    args: dict[str, Any] = {
        "request_id": uuid.UUID(int=7),
        "action": "restart",
        "target": "prod/api",
        "payload_hash": "a" * 64,
        "approvers": [ALICE, BOB],
        "risk_level": "critical",
        "request_expires_at": datetime.now(UTC) + timedelta(hours=1),
        "now": now,
    }
    args.update(over)
    return svc.mint(**args).token


def claims_of(token: str) -> dict[str, Any]:
    return dict(jwt.decode(token, options={"verify_signature": False}))


def forge(claims: dict[str, Any], key: str = KEY, **headers: Any) -> str:
    hdr = {"typ": TOKEN_TYPE, "kid": key_id(key.encode()), **headers}
    return jwt.encode(claims, key, algorithm="HS256", headers=hdr)


def b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def test_valid_token_verifies_and_carries_every_claim() -> None:
    svc = service()
    token = mint(svc)
    claims = svc.verify(token)
    assert claims.request_id == uuid.UUID(int=7)
    assert claims.approvers == (ALICE, BOB)
    header = jwt.get_unverified_header(token)
    assert header == {"alg": "HS256", "typ": TOKEN_TYPE, "kid": key_id(KEY.encode())}
    body = claims_of(token)
    assert set(body) == {
        "iss", "aud", "sub", "jti", "iat", "nbf", "exp", "action", "target",
        "payload_sha256", "approvers", "risk_level",
    }  # fmt: skip
    assert body["exp"] - body["iat"] == 300


def test_exp_never_past_request_expiry() -> None:
    svc = service()
    soon = datetime.now(UTC) + timedelta(seconds=42)
    body = claims_of(mint(svc, request_expires_at=soon))
    assert body["exp"] == int(soon.timestamp())


def _refused(svc: TokenService, token: str, words: str) -> None:
    with pytest.raises(InvalidToken) as info:
        svc.verify(token)
    assert words in str(info.value)
    assert token not in str(info.value)


def test_alg_none_and_other_algorithms_are_refused() -> None:
    svc = service()
    body = claims_of(mint(svc))
    none = b64({"alg": "none", "typ": TOKEN_TYPE, "kid": svc.kid}) + "." + b64(body) + "."
    _refused(svc, none, "HS256")
    hs512 = jwt.encode(
        body, KEY * 2, algorithm="HS512", headers={"typ": TOKEN_TYPE, "kid": svc.kid}
    )
    _refused(svc, hs512, "HS256")
    # An RS256 header over an HMAC signature (the classic key-confusion attack).
    head = b64({"alg": "RS256", "typ": TOKEN_TYPE, "kid": svc.kid})
    _refused(svc, head + "." + b64(body) + ".c2ln", "HS256")


def test_wrong_key_unknown_kid_and_retired_key() -> None:
    svc = service()
    body = claims_of(mint(svc))
    # Right kid, wrong key: the signature fails.
    wrong = jwt.encode(
        body, "w" * 40, algorithm="HS256", headers={"typ": TOKEN_TYPE, "kid": svc.kid}
    )
    _refused(svc, wrong, "signature")
    _refused(svc, forge(body, key="x" * 40), "unknown key")
    # Another environment's key: unknown kid too.
    _refused(svc, mint(service("e" * 40)), "unknown key")
    # Rotation: the old key still verifies while it is listed, not after.
    old_token = mint(service(OLD_KEY))
    assert service(KEY, (OLD_KEY,)).verify(old_token).request_id == uuid.UUID(int=7)
    _refused(service(KEY), old_token, "unknown key")


def test_wrong_audience_issuer_and_type() -> None:
    svc = service()
    body = claims_of(mint(svc))
    _refused(svc, forge({**body, "aud": "someone-else"}), "audience")
    _refused(svc, forge({**body, "iss": "mallory"}), "issuer")
    _refused(svc, forge(body, typ="JWT"), "type")


def test_tampered_payload_and_truncated_token() -> None:
    svc = service()
    token = mint(svc)
    head, payload, sig = token.split(".")
    body = claims_of(token)
    body["target"] = "prod/everything"
    _refused(svc, f"{head}.{b64(body)}.{sig}", "signature")
    flipped = ("A" if sig[0] != "A" else "B") + sig[1:]
    _refused(svc, f"{head}.{payload}.{flipped}", "signature")
    for cut in (1, 4, 5, 20):
        _refused(svc, token[:-cut], "token")
    _refused(svc, f"{head}.{payload}", "malformed")
    _refused(svc, "garbage", "malformed")


@pytest.mark.parametrize("claim", ["exp", "jti", "nbf", "iat", "sub", "payload_sha256", "aud"])
def test_missing_claims_are_refused(claim: str) -> None:
    svc = service()
    body = claims_of(mint(svc))
    del body[claim]
    with pytest.raises(InvalidToken):
        svc.verify(forge(body))


def test_expired_and_not_yet_valid_with_leeway() -> None:
    svc = service()
    now = datetime.now(UTC)
    # Expired 20 s ago: refused, exp has no leeway (tests/unit/test_token_expiry.py).
    _refused(svc, mint(svc, now=now - timedelta(seconds=320)), "expired")
    _refused(svc, mint(svc, now=now - timedelta(seconds=400)), "expired")
    # Issued 20 s in the future (clock skew): accepted; 2 minutes ahead: not yet valid.
    svc.verify(mint(svc, now=now + timedelta(seconds=20)))
    _refused(svc, mint(svc, now=now + timedelta(minutes=2)), "not valid yet")


def test_wrong_claim_shapes_are_refused() -> None:
    svc = service()
    body = claims_of(mint(svc))
    _refused(svc, forge({**body, "approvers": "alice"}), "shape")
    _refused(svc, forge({**body, "sub": "not-a-uuid"}), "shape")


# ---------------------------------------------------------------- redemption over HTTP


async def approved_token(h: Harness, **over: Any) -> tuple[str, str]:
    req = await create(h, **over)
    msg = await card(h, req["id"])
    answer = await tap(h, msg, ALICE)
    _status, got = await h.api("GET", f"/api/v1/approvals/{req['id']}")
    assert got["status"] == "approved", (answer, got, await sql(h, "SELECT * FROM audit_log"))
    return req["id"], got["approval_token"]


async def redeem(h: Harness, token: str, key: str | None = None) -> tuple[int, Any]:
    if key is None:
        return await h.api("POST", "/api/v1/tokens/redeem", {"token": token})
    return await h.api("POST", "/api/v1/tokens/redeem", {"token": token}, key=key)


async def test_concurrent_redemptions_exactly_one_succeeds(quorum: Harness) -> None:
    _, token = await approved_token(quorum)
    results = await asyncio.gather(*(redeem(quorum, token) for _ in range(10)))
    statuses = sorted(s for s, _ in results)
    assert statuses == [200] + [409] * 9, results
    rows = await sql(quorum, "SELECT count(*) AS n FROM token_redemptions")
    assert rows[0]["n"] == 1


async def test_replay_after_redis_flushall_is_refused_by_postgresql(quorum: Harness) -> None:
    _rid, token = await approved_token(quorum)
    assert (await redeem(quorum, token))[0] == 200
    await quorum.app.runtime.redis.flushdb()  # whichever Redis the app uses, in-process too
    status, data = await redeem(quorum, token)
    assert status == 409 and data["error"]["code"] == "token_replayed"
    rows = await sql(
        quorum,
        "SELECT detail->>'gate' AS gate FROM audit_log WHERE event = 'token.replay'",
    )
    assert [r["gate"] for r in rows] == ["postgresql"]


async def test_redeem_refusals_over_http(quorum: Harness) -> None:
    rid, token = await approved_token(quorum)
    status, data = await redeem(quorum, token[:-3] + "AAA")
    assert status == 401 and data["error"]["code"] == "invalid_token"
    assert token not in json.dumps(data)
    status, data = await redeem(quorum, token, key=OTHER_API_KEY)
    assert status == 404
    # A validly signed token whose claims do not match the stored request (same key).
    svc = TokenService(quorum.settings)
    body = claims_of(token)
    forged = svc.mint(
        request_id=uuid.UUID(rid),
        action=body["action"],
        target="prod/everything",
        payload_hash=body["payload_sha256"],
        approvers=[ALICE],
        risk_level=body["risk_level"],
        request_expires_at=datetime.now(UTC) + timedelta(minutes=5),
    ).token
    status, data = await redeem(quorum, forged)
    assert status == 401 and "not issued" in data["error"]["message"]
    # The genuine token is still unused after all that.
    assert (await redeem(quorum, token))[0] == 200
    events = [r["event"] for r in await sql(quorum, "SELECT event FROM audit_log")]
    assert events.count("token.invalid") == 2
    assert TOKEN_SECRET


async def test_a_genuine_jti_with_another_action_target_or_hash_is_refused_by_comparison(
    quorum: Harness,
) -> None:
    # The token's own jti and sub pass the "issued by this Quorum" gate; the re-signed claims
    # (the real key: a leaked secret, or a bug minting the wrong payload) ask for something
    # else, and the comparison with the stored token and the request refuses each.
    rid, token = await approved_token(quorum)
    genuine = claims_of(token)
    tampered = {
        "action": {"action": "DROP TABLE payments"},
        "target": {"target": "prod/everything"},
        "risk_level": {"risk_level": "low" if genuine["risk_level"] != "low" else "high"},
        "payload hash": {"payload_sha256": "0" * 64},
    }
    for what, change in tampered.items():
        status, data = await redeem(quorum, forge({**genuine, **change}, TOKEN_SECRET))
        assert status == 401, (what, data)
        assert data["error"]["message"] == "token does not match the approved request", what
    rows = await sql(
        quorum,
        "SELECT detail->>'reason' AS reason, detail->>'jti' AS jti FROM audit_log"
        " WHERE event = 'token.invalid' AND approval_id = $1::uuid",
        rid,
    )
    assert [(r["reason"], r["jti"]) for r in rows] == [
        ("token does not match the approved request", genuine["jti"])
    ] * len(tampered)
    assert (await redeem(quorum, token))[0] == 200  # the genuine token was never consumed


async def test_redeem_with_redis_down_falls_back_to_postgresql(make_quorum: QuorumFactory) -> None:
    h = await make_quorum()
    _, token = await approved_token(h)
    # Point the running process at a closed port: Redis errors, PostgreSQL decides.
    from storage import keys

    real = h.app.runtime.redis
    h.app.runtime.redis = keys.connect("redis://127.0.0.1:1/0")
    try:
        assert (await redeem(h, token))[0] == 200
        status, data = await redeem(h, token)
        assert status == 409 and data["error"]["code"] == "token_replayed"
    finally:
        await h.app.runtime.redis.aclose()
        h.app.runtime.redis = real
