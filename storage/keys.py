"""Redis connection and every key Quorum writes, in one place."""

from __future__ import annotations

import logging
import uuid

from redis.asyncio import Redis
from redis.backoff import NoBackoff
from redis.retry import Retry

log = logging.getLogger(__name__)

PREFIX = "quorum:"


def connect(url: str) -> Redis:
    """A client for the Redis at `url`.

    Explicit timeouts and no silent command retries: redis-py retries by default, and a
    retried SET NX can make a first use of a token look like a replay.
    """
    return Redis.from_url(
        url,
        socket_timeout=0.5,
        socket_connect_timeout=0.5,
        retry=Retry(NoBackoff(), 0),
        retry_on_timeout=False,
        health_check_interval=10,
    )


def token_used(jti: uuid.UUID | str) -> str:
    return f"{PREFIX}jti:{jti}"


def pace_bot() -> str:
    return f"{PREFIX}pace:bot"


def pace_chat(chat_id: int) -> str:
    return f"{PREFIX}pace:chat:{chat_id}"


def pace_group(chat_id: int) -> str:
    return f"{PREFIX}pace:group:{chat_id}"


def pause(scope: str) -> str:
    """Until when a 429 paused a scope ('bot' or a chat id)."""
    return f"{PREFIX}pause:{scope}"


def lock(name: str) -> str:
    return f"{PREFIX}lock:{name}"


def approval_rate(key_id: str) -> str:
    """The token bucket of approval requests one API key may create (by its hash, never the
    key)."""
    return f"{PREFIX}rate:approvals:{key_id}"


def web_link_used(nonce: str) -> str:
    """A web sign-in link's nonce once used (single use, kept until the link expires)."""
    return f"{PREFIX}web:link:{nonce}"


def web_session(digest: str) -> str:
    """A web session, by the SHA-256 of its cookie (never the cookie itself)."""
    return f"{PREFIX}web:session:{digest}"
