"""Token expiry is exact: no leeway on exp (a little on nbf/iat for clock skew)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import jwt
import pytest
from pydantic import SecretStr

from bot.settings import Settings
from bot.tokens import TOKEN_TYPE, InvalidToken, TokenService, key_id

KEY = "k" * 40


def service() -> TokenService:
    return TokenService(Settings(token_secret=SecretStr(KEY), token_ttl_seconds=300))


def mint(svc: TokenService, now: datetime) -> str:
    return svc.mint(
        request_id=uuid.UUID(int=7),
        action="restart",
        target="prod/api",
        payload_hash="a" * 64,
        approvers=[1],
        risk_level="low",
        request_expires_at=now + timedelta(hours=1),
        now=now,
    ).token


def resign(token: str, **claims: object) -> str:
    body = {**jwt.decode(token, options={"verify_signature": False}), **claims}
    headers = {"typ": TOKEN_TYPE, "kid": key_id(KEY.encode())}
    return jwt.encode(body, KEY, algorithm="HS256", headers=headers)


@pytest.mark.parametrize("seconds_past_exp", [1, 20, 29, 300])
def test_a_token_past_its_exp_is_refused(seconds_past_exp: int) -> None:
    svc = service()
    now = datetime.now(UTC)
    token = mint(svc, now - timedelta(seconds=300 + seconds_past_exp))
    with pytest.raises(InvalidToken, match="expired"):
        svc.verify(token)


def test_exp_is_compared_exactly_with_the_given_clock() -> None:
    svc = service()
    now = datetime.now(UTC).replace(microsecond=0)
    token = mint(svc, now)
    exp = now + timedelta(seconds=300)
    assert svc.verify(token, now=exp - timedelta(milliseconds=1)).expires_at == exp
    with pytest.raises(InvalidToken, match="expired"):
        svc.verify(token, now=exp)


def test_nbf_and_iat_keep_a_small_leeway() -> None:
    svc = service()
    now = datetime.now(UTC)
    svc.verify(mint(svc, now + timedelta(seconds=20)))  # issuer's clock 20 s ahead
    with pytest.raises(InvalidToken, match="not valid yet"):
        svc.verify(mint(svc, now + timedelta(minutes=2)))


def test_exp_of_the_wrong_type_is_refused() -> None:
    svc = service()
    token = mint(svc, datetime.now(UTC))
    with pytest.raises(InvalidToken):
        svc.verify(resign(token, exp="tomorrow"))
    with pytest.raises(InvalidToken):
        svc.verify(resign(token, exp=True))
