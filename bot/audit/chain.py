"""The chain's pure rules: each row's canonical encoding and hash, and checkpoint signatures.

A row's hash is SHA-256 over the previous row's hash (32 zero bytes before seq 1) followed by
the row's canonical encoding: UTF-8 JSON, keys sorted, no whitespace, non-ASCII kept as is,
of {seq, id, xid, at, event, actor, actor_telegram_id, team_id, approval_id, alert_id,
chat_id, detail}; `at` is ISO 8601 in UTC with microseconds (2026-11-27T13:55:00.123456+00:00),
`approval_id` the UUID's text, absent values null. A checkpoint signs, with Ed25519, the
UTF-8 text "quorum-audit-checkpoint/v1\\nseq=<seq>\\nhash=<hex>\\nat=<ISO time>\\n".
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from bot.settings import ed25519_key
from storage.audit import AuditRow, CheckpointRecord

GENESIS = bytes(32)


def canonical(row: AuditRow, seq: int) -> bytes:
    """The bytes a row's hash covers (besides the previous hash), with `seq` as its place."""
    fields: dict[str, Any] = {
        "seq": seq,
        "id": row.id,
        "xid": row.xid,
        "at": row.at.astimezone(UTC).isoformat(timespec="microseconds"),
        "event": row.event,
        "actor": row.actor,
        "actor_telegram_id": row.actor_telegram_id,
        "team_id": row.team_id,
        "approval_id": None if row.approval_id is None else str(row.approval_id),
        "alert_id": row.alert_id,
        "chat_id": row.chat_id,
        "detail": row.detail,
    }
    return json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def link(prev_hash: bytes, row: AuditRow, seq: int) -> bytes:
    """The hash of `row` at `seq` after a row hashing to `prev_hash`."""
    return hashlib.sha256(prev_hash + canonical(row, seq)).digest()


def chain(
    prev_hash: bytes, first_seq: int, rows: list[AuditRow]
) -> list[tuple[int, int, bytes, bytes]]:
    """(id, seq, prev_hash, hash) for `rows` appended after a head hashing to `prev_hash`."""
    links = []
    for seq, row in enumerate(rows, start=first_seq):
        digest = link(prev_hash, row, seq)
        links.append((row.id, seq, prev_hash, digest))
        prev_hash = digest
    return links


# ---------------------------------------------------------------- checkpoints


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A signed chain head, as stored, posted and given to `quorum audit verify --checkpoint`."""

    seq: int
    hash: bytes
    signed_at: datetime
    key_id: str
    signature: bytes

    def message(self) -> bytes:
        return checkpoint_message(self.seq, self.hash, self.signed_at)

    def to_json(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "hash": self.hash.hex(),
            "at": self.signed_at.astimezone(UTC).isoformat(timespec="microseconds"),
            "key_id": self.key_id,
            "signature": b64(self.signature),
        }

    @classmethod
    def of(cls, stored: CheckpointRecord) -> Checkpoint:
        return cls(stored.seq, stored.hash, stored.signed_at, stored.key_id, stored.signature)

    @classmethod
    def from_json(cls, data: Any) -> Checkpoint:
        """ValueError naming what is wrong with a checkpoint document."""
        if not isinstance(data, dict):
            raise ValueError("a checkpoint is a JSON object")
        try:
            seq, at = data["seq"], datetime.fromisoformat(data["at"])
            digest = bytes.fromhex(data["hash"])
            signature = base64.b64decode(data["signature"], validate=True)
            key_id = str(data["key_id"])
        except (KeyError, TypeError, ValueError, binascii.Error) as exc:
            raise ValueError(f"not a checkpoint ({type(exc).__name__}: {exc})") from None
        if not isinstance(seq, int) or seq < 1 or len(digest) != 32 or at.tzinfo is None:
            raise ValueError("not a checkpoint (seq, hash or at out of shape)")
        return cls(seq, digest, at, key_id, signature)


def checkpoint_message(seq: int, digest: bytes, signed_at: datetime) -> bytes:
    at = signed_at.astimezone(UTC).isoformat(timespec="microseconds")
    return f"quorum-audit-checkpoint/v1\nseq={seq}\nhash={digest.hex()}\nat={at}\n".encode()


def load_private_key(text: str) -> Ed25519PrivateKey:
    """The key as QUORUM_AUDIT_SIGNING_KEY holds it; ValueError if it is not one."""
    return ed25519_key(text)


def new_private_key() -> str:
    """A fresh key in the form `load_private_key` reads."""
    from cryptography.hazmat.primitives.serialization import NoEncryption, PrivateFormat

    seed = Ed25519PrivateKey.generate().private_bytes(
        Encoding.Raw, PrivateFormat.Raw, NoEncryption()
    )
    return b64(seed)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def public_bytes(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def load_public_key(text: str) -> Ed25519PublicKey:
    """A public key as `quorum audit public-key` prints it (base64 of 32 bytes)."""
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except binascii.Error:
        raise ValueError("not base64") from None
    if len(raw) != 32:
        raise ValueError("must be base64 of 32 bytes (an Ed25519 public key)")
    return Ed25519PublicKey.from_public_bytes(raw)


def key_id(key: Ed25519PublicKey) -> str:
    """A short name for a public key: the first 8 bytes of its SHA-256, in hex."""
    return hashlib.sha256(public_bytes(key)).hexdigest()[:16]


def sign(key: Ed25519PrivateKey, seq: int, digest: bytes, signed_at: datetime) -> Checkpoint:
    signature = key.sign(checkpoint_message(seq, digest, signed_at))
    return Checkpoint(seq, digest, signed_at, key_id(key.public_key()), signature)


def signature_valid(key: Ed25519PublicKey, checkpoint: Checkpoint) -> bool:
    try:
        key.verify(checkpoint.signature, checkpoint.message())
    except InvalidSignature:
        return False
    return True
