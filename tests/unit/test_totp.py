"""TOTP step-up's pure parts: RFC 6238 codes, the window, sealing under key rotation."""

from __future__ import annotations

from datetime import UTC, datetime
from urllib.parse import parse_qs, urlsplit

import pytest

from bot.totp import Sealer, SealError, code_at, new_secret, otpauth_uri, verify

RFC_SECRET = b"12345678901234567890"


@pytest.mark.parametrize(
    ("unix", "code"),
    # RFC 6238 appendix B (SHA-1), the last 6 of its 8 digits.
    [(59, "287082"), (1111111109, "081804"), (1234567890, "005924"), (2000000000, "279037")],
)
def test_rfc_6238_vectors(unix: int, code: str) -> None:
    assert code_at(RFC_SECRET, unix // 30) == code
    assert verify(RFC_SECRET, code, datetime.fromtimestamp(unix, UTC))


def test_window_is_one_step_either_side() -> None:
    now = datetime.fromtimestamp(1234567890, UTC)
    step = 1234567890 // 30
    assert verify(RFC_SECRET, code_at(RFC_SECRET, step - 1), now)
    assert verify(RFC_SECRET, code_at(RFC_SECRET, step + 1), now)
    assert not verify(RFC_SECRET, code_at(RFC_SECRET, step + 2), now)
    assert not verify(RFC_SECRET, "", now) and not verify(RFC_SECRET, "12345a", now)


def test_sealed_secrets_open_after_rotation_and_only_for_their_owner() -> None:
    old = Sealer("old-secret-0123456789abcdef-0123456789")
    kid, sealed = old.seal(b"s3cret", 1001)
    rotated = Sealer(
        "new-secret-0123456789abcdef-0123456789", ["old-secret-0123456789abcdef-0123456789"]
    )
    assert rotated.open(kid, sealed, 1001) == b"s3cret"
    with pytest.raises(SealError):
        rotated.open(kid, sealed, 1002)
    with pytest.raises(SealError):
        Sealer("new-secret-0123456789abcdef-0123456789").open(kid, sealed, 1001)
    assert rotated.seal(b"x", 1)[0] != kid  # new secrets are sealed with the new key


def test_otpauth_uri() -> None:
    secret = new_secret()
    parts = urlsplit(otpauth_uri(secret, "alice"))
    query = parse_qs(parts.query)
    assert (parts.scheme, parts.netloc, parts.path) == ("otpauth", "totp", "/Quorum:alice")
    assert query["issuer"] == ["Quorum"] and len(query["secret"][0]) == 32
