"""Signed inline buttons: short callback_data whose HMAC tag binds it to one chat.

callback_data is at most 64 bytes and comes from the client, so it can be forged: it carries
only a reference, an action and a tag, and the server re-derives the tag before acting.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import uuid
from collections.abc import Sequence
from typing import Any

from aiogram.filters.callback_data import CallbackData

TAG_BYTES = 12  # 16 base64url characters: forging one is 2^-96 per try


class ApprovalVote(CallbackData, prefix="ap"):
    ref: str  # the request id, 22 characters of base64url
    vote: str  # "a" approve, "r" reject
    tag: str


class AlertAction(CallbackData, prefix="al"):
    ref: str  # the alert id
    act: str  # "ack", "s1", "s4", "s24", "res"
    tag: str


class IncidentAction(CallbackData, prefix="in"):
    ref: str  # the incident id, INC-YYYYMMDD-XXXXXX
    act: str  # see bot.incidents.card.ACTIONS
    tag: str


class DeclareIncident(CallbackData, prefix="di"):
    ref: str  # the alert id
    tag: str


class TrustReset(CallbackData, prefix="tr"):
    ref: str  # the first 12 bytes of the pattern's SHA-256, base64url (patterns can be long)
    tag: str


class PolicyAction(CallbackData, prefix="pe"):
    ref: str  # the request id
    act: str  # "rv" revoke an auto-approval
    tag: str


def uuid_ref(value: uuid.UUID) -> str:
    return base64.urlsafe_b64encode(value.bytes).rstrip(b"=").decode()


def ref_uuid(ref: str) -> uuid.UUID:
    """Raises ValueError for anything that is not one of our references."""
    if len(ref) != 22:
        raise ValueError("bad reference")
    return uuid.UUID(bytes=base64.urlsafe_b64decode(ref + "=="))


def _button_key(secret: str) -> bytes:
    # A key of its own, so a button tag can never serve as anything else.
    return hmac.new(secret.encode(), b"quorum-buttons-v1", hashlib.sha256).digest()


def _tag(key: bytes, prefix: str, ref: str, action: str, chat_id: int) -> str:
    msg = f"{prefix}\x1f{ref}\x1f{action}\x1f{chat_id}".encode()
    digest = hmac.new(key, msg, hashlib.sha256).digest()[:TAG_BYTES]
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


class ButtonSigner:
    """Tags with the current secret; checks against it and the previous ones, so the buttons of
    cards posted before a rotation (QUORUM_TOKEN_PREVIOUS_SECRETS) keep working."""

    def __init__(self, secret: str, previous: Sequence[str] = ()) -> None:
        self._key = _button_key(secret)
        self._keys = (self._key, *(_button_key(old) for old in previous))

    def tag(self, prefix: str, ref: str, action: str, chat_id: int) -> str:
        return _tag(self._key, prefix, ref, action, chat_id)

    def check(self, prefix: str, ref: str, action: str, chat_id: int, tag: str) -> bool:
        given = tag.encode("utf-8", "replace")
        # Every key is tried, so the time taken says nothing about which one matched.
        matches = [
            hmac.compare_digest(_tag(key, prefix, ref, action, chat_id).encode(), given)
            for key in self._keys
        ]
        return any(matches)

    def approval_button(self, request_id: uuid.UUID, vote: str, chat_id: int) -> str:
        ref = uuid_ref(request_id)
        return ApprovalVote(ref=ref, vote=vote, tag=self.tag("ap", ref, vote, chat_id)).pack()

    def trust_button(self, ref: str, chat_id: int) -> str:
        return TrustReset(ref=ref, tag=self.tag("tr", ref, "0", chat_id)).pack()

    def policy_button(self, request_id: uuid.UUID, act: str, chat_id: int) -> str:
        ref = uuid_ref(request_id)
        return PolicyAction(ref=ref, act=act, tag=self.tag("pe", ref, act, chat_id)).pack()

    def alert_button(self, alert_id: int, act: str, chat_id: int) -> str:
        ref = str(alert_id)
        return AlertAction(ref=ref, act=act, tag=self.tag("al", ref, act, chat_id)).pack()

    def incident_button(self, incident_id: str, act: str, chat_id: int) -> str:
        tag = self.tag("in", incident_id, act, chat_id)
        return IncidentAction(ref=incident_id, act=act, tag=tag).pack()

    def declare_button(self, alert_id: int, chat_id: int) -> str:
        ref = str(alert_id)
        return DeclareIncident(ref=ref, tag=self.tag("di", ref, "dec", chat_id)).pack()


def keyboard(rows: list[list[tuple[str, str]]]) -> dict[str, Any]:
    """An inline keyboard as the Bot API's JSON (stored on the message row as is)."""
    return {
        "inline_keyboard": [
            [{"text": text, "callback_data": data} for text, data in row] for row in rows
        ]
    }
