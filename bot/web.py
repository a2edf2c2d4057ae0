"""Web view sign-in: one-time links answered to /web, and the sessions they start.

A link carries (telegram id, expiry, nonce) signed with a key derived from the HS256 secret;
its nonce is spent in Redis on first use. A session is a random cookie whose SHA-256 keys a
Redis entry holding the Telegram id; the teams it may see are read from the current policy on
every request, so removing an approver from the policy ends their view at once.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass

from bot.errors import TokenRefused
from bot.policy import Approver, Team
from bot.runtime import Runtime
from storage import audit, keys
from storage.db import transaction

LINK_SECONDS = 600
COOKIE = "quorum_session"


@dataclass(frozen=True, slots=True)
class Viewer:
    """A signed-in person and the teams where the policy makes them an approver."""

    telegram_id: int
    name: str
    teams: tuple[Team, ...]

    def team(self, name: str) -> Team | None:
        return next((t for t in self.teams if t.name == name), None)


def approver_teams(rt: Runtime, telegram_id: int) -> tuple[tuple[Team, Approver], ...]:
    return tuple(
        (team, team.approvers[telegram_id])
        for team in rt.policy.teams.values()
        if telegram_id in team.approvers
    )


def _link_key(rt: Runtime) -> bytes:
    secret = rt.settings.token_secret.get_secret_value().encode()
    return hmac.new(secret, b"quorum-web-link/v1", hashlib.sha256).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def sign_in_link(rt: Runtime, telegram_id: int, now: float | None = None) -> str:
    """The URL answered to /web: valid LINK_SECONDS, once."""
    expires = int((now if now is not None else time.time()) + LINK_SECONDS)
    payload = f"{telegram_id}.{expires}.{secrets.token_urlsafe(12)}".encode()
    mac = hmac.new(_link_key(rt), payload, hashlib.sha256).digest()
    return f"{rt.settings.web_base_url}/ui/login?t={_b64(payload)}.{_b64(mac)}"


def _read_link(rt: Runtime, token: str) -> tuple[int, str]:
    """(telegram id, nonce) of a valid, unexpired link token; TokenRefused otherwise."""
    try:
        payload_text, _, mac_text = token.partition(".")
        payload, mac = _unb64(payload_text), _unb64(mac_text)
    except (ValueError, binascii.Error):
        raise TokenRefused("this sign-in link is not valid") from None
    good = hmac.new(_link_key(rt), payload, hashlib.sha256).digest()
    if not hmac.compare_digest(good, mac):
        raise TokenRefused("this sign-in link is not valid")
    who, expires, nonce = payload.decode().split(".", 2)
    if int(expires) <= time.time():
        raise TokenRefused("this sign-in link has expired: send /web again")
    return int(who), nonce


async def redeem_link(rt: Runtime, token: str) -> str:
    """Spend a link and start a session; the session cookie's value."""
    telegram_id, nonce = _read_link(rt, token)
    if not approver_teams(rt, telegram_id):
        raise TokenRefused("you are not an approver in any team")
    first = await rt.redis.set(keys.web_link_used(nonce), "1", nx=True, ex=LINK_SECONDS + 60)
    if not first:
        raise TokenRefused("this sign-in link was used already: send /web again")
    cookie = secrets.token_urlsafe(32)
    await rt.redis.set(
        keys.web_session(hashlib.sha256(cookie.encode()).hexdigest()),
        json.dumps({"telegram_id": telegram_id}),
        ex=rt.settings.web_session_seconds,
    )
    name = approver_teams(rt, telegram_id)[0][1].name
    async with transaction(rt.sessions) as session:
        await audit.record(session, "web.signed_in", actor=name, actor_telegram_id=telegram_id)
    return cookie


async def viewer(rt: Runtime, cookie: str | None) -> Viewer | None:
    """Who the session cookie belongs to, if it is a live session of a current approver."""
    if not cookie or len(cookie) > 128:
        return None
    raw = await rt.redis.get(keys.web_session(hashlib.sha256(cookie.encode()).hexdigest()))
    if raw is None:
        return None
    telegram_id = int(json.loads(raw)["telegram_id"])
    found = approver_teams(rt, telegram_id)
    if not found:
        return None
    return Viewer(telegram_id, found[0][1].name, tuple(team for team, _ in found))


async def sign_out(rt: Runtime, cookie: str | None) -> None:
    if cookie and len(cookie) <= 128:
        await rt.redis.delete(keys.web_session(hashlib.sha256(cookie.encode()).hexdigest()))
