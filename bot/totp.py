"""TOTP step-up (RFC 6238, SHA-1, 6 digits, 30 s): secrets made, sealed with a key derived
from QUORUM_TOKEN_SECRET's rotation set, and codes checked in constant time."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import struct
from collections.abc import Sequence
from datetime import datetime
from urllib.parse import quote

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from bot.tokens import key_id

STEP_SECONDS = 30
DIGITS = 6
WINDOW = 1  # steps either side: a phone's clock may be off by up to 30 s
MAX_FAILURES = 5
LOCK_SECONDS = 15 * 60
ISSUER = "Quorum"


class SealError(Exception):
    """A stored secret that no key of the rotation set opens."""


def _seal_key(secret: bytes) -> bytes:
    # A key of its own, so sealing can never double as signing tokens or buttons.
    return hmac.new(secret, b"quorum-totp-seal-v1", hashlib.sha256).digest()


class Sealer:
    """Seals with the current QUORUM_TOKEN_SECRET's derived key; opens with it or a previous
    one (named by its key id), so a rotation keeps enrolled secrets readable."""

    def __init__(self, current: str, previous: Sequence[str] = ()) -> None:
        raw = [current.encode(), *(p.encode() for p in previous)]
        self._keys = {key_id(_seal_key(r)): _seal_key(r) for r in reversed(raw)}
        self.kid = key_id(_seal_key(raw[0]))

    def seal(self, plain: bytes, telegram_id: int) -> tuple[str, bytes]:
        nonce = secrets.token_bytes(12)
        aad = str(telegram_id).encode()  # a sealed secret cannot be moved to another person
        return self.kid, nonce + AESGCM(self._keys[self.kid]).encrypt(nonce, plain, aad)

    def open(self, kid: str, sealed: bytes, telegram_id: int) -> bytes:
        key = self._keys.get(kid)
        if key is None:
            raise SealError("sealed with a key no longer in QUORUM_TOKEN_PREVIOUS_SECRETS")
        try:
            return AESGCM(key).decrypt(sealed[:12], sealed[12:], str(telegram_id).encode())
        except Exception:
            raise SealError("the sealed secret does not open") from None


def new_secret() -> bytes:
    return secrets.token_bytes(20)


def otpauth_uri(secret: bytes, account: str) -> str:
    b32 = base64.b32encode(secret).decode().rstrip("=")
    label = quote(f"{ISSUER}:{account}", safe=":")
    return (
        f"otpauth://totp/{label}?secret={b32}&issuer={ISSUER}&digits={DIGITS}&period={STEP_SECONDS}"
    )


def code_at(secret: bytes, step: int) -> str:
    """The RFC 4226 code of one time step."""
    digest = hmac.new(secret, struct.pack(">Q", step), hashlib.sha1).digest()
    offset = digest[-1] & 0x0F
    value = struct.unpack(">I", digest[offset : offset + 4])[0] & 0x7FFFFFFF
    return str(value % 10**DIGITS).zfill(DIGITS)


def verify(secret: bytes, code: str, now: datetime) -> bool:
    """Whether `code` is the code of now's step or one beside it (compared in constant time)."""
    given = code.strip().replace(" ", "")
    step = int(now.timestamp()) // STEP_SECONDS
    matches = [
        hmac.compare_digest(code_at(secret, step + d).encode(), given.encode())
        for d in range(-WINDOW, WINDOW + 1)
    ]
    return len(given) == DIGITS and given.isdigit() and any(matches)
