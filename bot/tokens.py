"""HS256 approval tokens: minted once per approved request, bound to the exact payload."""

from __future__ import annotations

import hashlib
import json
import math
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt

from bot.settings import Settings

TOKEN_TYPE = "quorum-approval+jwt"
ALGORITHM = "HS256"
# Clock skew allowed on nbf and iat only: exp is exact (a token must never outlive it).
LEEWAY_SECONDS = 30
REQUIRED_CLAIMS = (
    "iss",
    "aud",
    "sub",
    "jti",
    "iat",
    "nbf",
    "exp",
    "action",
    "target",
    "payload_sha256",
    "approvers",
    "risk_level",
)


class InvalidToken(Exception):
    """The token does not verify; the message says why and never contains the token."""


def key_id(key: bytes) -> str:
    """A public name for a key that reveals nothing about it."""
    return hashlib.sha256(b"kid:" + key).hexdigest()[:16]


def payload_sha256(
    *,
    action: str,
    target: str,
    risk_level: str,
    team: str,
    metadata: Mapping[str, Any] | None,
    blast_radius: Mapping[str, Any] | None,
    dry_run_checks: list[Any] | None,
    description: str | None,
) -> str:
    """SHA-256 of the canonical JSON of what was approved (sorted keys, no spaces, UTF-8)."""
    canonical = json.dumps(
        {
            "action": action,
            "target": target,
            "risk_level": risk_level,
            "team": team,
            "metadata": metadata,
            "blast_radius": blast_radius,
            "dry_run_checks": dry_run_checks,
            "description": description,
        },
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Minted:
    token: str
    jti: uuid.UUID
    kid: str
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class Claims:
    request_id: uuid.UUID
    jti: uuid.UUID
    action: str
    target: str
    payload_sha256: str
    approvers: tuple[int, ...]
    risk_level: str
    expires_at: datetime
    break_glass: bool = False


class TokenService:
    """One key signs (QUORUM_TOKEN_SECRET); it and the previous keys verify."""

    def __init__(self, settings: Settings) -> None:
        signing = settings.token_secret.get_secret_value().encode()
        self._signing_key = signing
        self._kid = key_id(signing)
        self._keys = {self._kid: signing}
        for old in settings.token_previous_secrets:
            raw = old.get_secret_value().encode()
            self._keys.setdefault(key_id(raw), raw)
        self.issuer = settings.token_issuer
        self.audience = settings.token_audience
        self.ttl = timedelta(seconds=settings.token_ttl_seconds)

    @property
    def kid(self) -> str:
        return self._kid

    def mint(
        self,
        *,
        request_id: uuid.UUID,
        action: str,
        target: str,
        payload_hash: str,
        approvers: list[int],
        risk_level: str,
        request_expires_at: datetime,
        now: datetime | None = None,
        break_glass: bool = False,
    ) -> Minted:
        now = now or datetime.now(UTC)
        expires = min(now + self.ttl, request_expires_at)
        jti = uuid.uuid4()
        claims = {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": str(request_id),
            "jti": str(jti),
            "iat": int(now.timestamp()),
            "nbf": int(now.timestamp()),
            "exp": int(expires.timestamp()),
            "action": action,
            "target": target,
            "payload_sha256": payload_hash,
            "approvers": approvers,
            "risk_level": risk_level,
        }
        if break_glass:
            claims["break_glass"] = True  # approved by one person's emergency, not a quorum
        token = jwt.encode(
            claims,
            self._signing_key,
            algorithm=ALGORITHM,
            headers={"typ": TOKEN_TYPE, "kid": self._kid},
        )
        return Minted(token, jti, self._kid, datetime.fromtimestamp(int(expires.timestamp()), UTC))

    def verify(self, token: str, *, now: datetime | None = None) -> Claims:
        """Check header, signature and every claim; raises InvalidToken with the reason.

        Expired at or past exp by `now` (this process's clock unless given), with no leeway:
        PyJWT's leeway would apply to exp as well, so exp is checked here.
        """
        if not isinstance(token, str) or token.count(".") != 2 or len(token) > 8192:
            raise InvalidToken("malformed token")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise InvalidToken("malformed token (bad base64url or JSON)") from None
        if header.get("alg") != ALGORITHM:
            raise InvalidToken("token algorithm must be HS256")
        if header.get("typ") != TOKEN_TYPE:
            raise InvalidToken(f"token type must be {TOKEN_TYPE}")
        kid = header.get("kid")
        key = self._keys.get(kid) if isinstance(kid, str) else None
        if key is None:
            raise InvalidToken("token signed with an unknown key (kid)")
        try:
            data = jwt.decode(
                token,
                key,
                algorithms=[ALGORITHM],
                audience=self.audience,
                issuer=self.issuer,
                leeway=LEEWAY_SECONDS,
                options={"require": list(REQUIRED_CLAIMS), "verify_exp": False},
            )
        except jwt.ImmatureSignatureError:
            raise InvalidToken("token is not valid yet (nbf/iat in the future)") from None
        except jwt.InvalidAudienceError:
            raise InvalidToken("token audience is wrong") from None
        except jwt.InvalidIssuerError:
            raise InvalidToken("token issuer is wrong") from None
        except jwt.MissingRequiredClaimError as exc:
            raise InvalidToken(f"token lacks the {exc.claim} claim") from None
        except jwt.InvalidSignatureError:
            raise InvalidToken("token signature does not verify") from None
        except jwt.PyJWTError as exc:
            raise InvalidToken(f"token is invalid ({type(exc).__name__})") from None
        claims = _claims(data)
        if (now or datetime.now(UTC)) >= claims.expires_at:
            raise InvalidToken("token has expired")
        return claims


def _claims(data: Mapping[str, Any]) -> Claims:
    try:
        approvers = data["approvers"]
        if not isinstance(approvers, list) or not all(
            isinstance(a, int) and not isinstance(a, bool) for a in approvers
        ):
            raise ValueError("approvers")
        for name in ("action", "target", "payload_sha256", "risk_level"):
            if not isinstance(data[name], str):
                raise ValueError(name)
        exp = data["exp"]
        if not isinstance(exp, int | float) or isinstance(exp, bool) or not math.isfinite(exp):
            raise ValueError("exp")
        return Claims(
            request_id=uuid.UUID(str(data["sub"])),
            jti=uuid.UUID(str(data["jti"])),
            action=data["action"],
            target=data["target"],
            payload_sha256=data["payload_sha256"],
            approvers=tuple(approvers),
            risk_level=data["risk_level"],
            expires_at=datetime.fromtimestamp(exp, UTC),
            break_glass=data.get("break_glass") is True,
        )
    except (ValueError, TypeError, OverflowError, OSError) as exc:
        raise InvalidToken(f"token claim has the wrong shape ({exc})") from None
