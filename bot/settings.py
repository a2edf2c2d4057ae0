"""Process settings from QUORUM_* environment variables (and .env), validated at start."""

from __future__ import annotations

import base64
import binascii
import re
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# Telegram's setWebhook: secret_token is 1-256 characters of A-Z a-z 0-9 _ -.
_SECRET_RE = re.compile(r"^[A-Za-z0-9_-]{1,256}$")
# BotFather tokens: numeric bot id, colon, 35 url-safe characters (we accept 30+).
_TOKEN_RE = re.compile(r"^\d{1,20}:[A-Za-z0-9_-]{30,}$")
# A listener on one of these takes the port on every address of the machine.
_ANY_ADDRESS = frozenset({"", "0.0.0.0", "::"})  # noqa: S104 (compared, never bound)


def _hosts_overlap(first: str, second: str) -> bool:
    """Whether listeners on the two hosts and one port clash."""
    return first == second or first in _ANY_ADDRESS or second in _ANY_ADDRESS


# The values .env.example ships with. They are published, so a deployment still using one is
# misconfigured; kept here because the example file is not installed with Quorum (a unit test
# keeps the two in step).
EXAMPLE_VALUES: dict[str, str] = {
    "telegram_token": "123456789:replace-with-the-token-from-botfather",
    "webhook_url": "https://quorum.example.com/telegram/webhook",
    "webhook_secret": "replace_with_a_long_random_secret",
    "database_url": "postgresql://quorum:password@127.0.0.1:5432/quorum",
    "token_secret": "replace-with-at-least-32-random-bytes-0123456789",
}


def known_zone(name: str) -> bool:
    """Whether `name` is an IANA timezone this machine knows."""
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return True


def ed25519_key(text: str) -> Ed25519PrivateKey:
    """An Ed25519 private key from base64 of its 32-byte seed; ValueError if it is not one."""
    try:
        seed = base64.b64decode(text.strip(), validate=True)
    except binascii.Error:
        raise ValueError("not base64") from None
    if len(seed) != 32:
        raise ValueError("must be base64 of 32 bytes (an Ed25519 private key)")
    return Ed25519PrivateKey.from_private_bytes(seed)


class ConfigError(Exception):
    """A setting or the policy file is unusable; the message names what and why."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="QUORUM_", env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    telegram_token: SecretStr = SecretStr("")
    telegram_api_url: str = "https://api.telegram.org"
    telegram_mode: Literal["webhook", "polling"] = "polling"
    webhook_url: str = ""
    webhook_secret: SecretStr = SecretStr("")
    # setWebhook's max_connections: updates Telegram delivers at once (1-100; Telegram's
    # default is 40). Replicas behind one webhook share them.
    webhook_max_connections: int = Field(default=40, ge=1, le=100)
    database_url: str = ""
    redis_url: str = ""
    token_secret: SecretStr = SecretStr("")
    # Older HS256 keys that still verify tokens during a rotation (JSON list); the first
    # QUORUM_TOKEN_SECRET signs. A key's kid is derived from its hash, never the key itself.
    token_previous_secrets: list[SecretStr] = Field(default_factory=list)
    token_ttl_seconds: int = Field(default=300, ge=10, le=86400)
    token_issuer: str = "quorum"
    token_audience: str = "quorum-executor"
    policy_file: Path = Path("policy.toml")
    http_host: str = "127.0.0.1"
    http_port: int = Field(default=8080, ge=0, le=65535)
    # Set: /metrics and /readyz move off the public listener to this one (0: any free port).
    metrics_port: int | None = Field(default=None, ge=0, le=65535)
    metrics_host: str = "127.0.0.1"
    timezone: str = "UTC"
    data_dir: Path = Path(".quorum")
    alert_edit_interval_seconds: float = Field(default=10.0, ge=0)
    # Storm mode: a chat whose outbox holds more than this many seconds of its send budget
    # gathers new alert groups into one digest card, until it has stayed under budget for
    # storm_calm_seconds.
    storm_backlog_seconds: float = Field(default=10.0, gt=0)
    storm_calm_seconds: float = Field(default=60.0, ge=0)
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    # Bounded database waits: a held row lock or a slow statement ends the unit of work with
    # an error (the webhook's 503, the API's 503) instead of holding a request open.
    db_lock_timeout_ms: int = Field(default=5000, ge=1)
    db_statement_timeout_ms: int = Field(default=15000, ge=1)
    # Connections one process keeps (and half as many more under a burst): replicas times
    # 1.5 x this must stay under the server's max_connections.
    db_pool_size: int = Field(default=30, ge=1)
    # Outbox pacing, shared by every process through Redis; defaults are Telegram's limits.
    pace_bot_per_second: float = Field(default=30.0, gt=0)
    pace_chat_per_second: float = Field(default=1.0, gt=0)
    pace_chat_burst: int = Field(default=3, ge=1)
    pace_group_per_minute: int = Field(default=20, ge=1)
    pace_group_window_seconds: float = Field(default=60.0, gt=0)
    # Outbox faults: backoff base (doubling, capped at 16x), tries before a dead letter.
    outbox_retry_base_seconds: float = Field(default=1.0, gt=0)
    outbox_max_attempts: int = Field(default=6, ge=1)
    outbox_call_timeout_seconds: float = Field(default=10.0, gt=0)
    outbox_claim_lease_seconds: float = Field(default=30.0, ge=1)
    outbox_concurrency: int = Field(default=32, ge=1)
    # The audit chain: Ed25519 key signing checkpoints (base64 of the 32-byte seed, from
    # `quorum audit new-key`); unset, the chain is sealed but no checkpoint is signed.
    audit_signing_key: SecretStr = SecretStr("")
    audit_checkpoint_seconds: float = Field(default=300.0, ge=1)
    audit_seal_interval_seconds: float = Field(default=1.0, gt=0)
    # Set: each checkpoint is also posted there, a copy outside the database.
    audit_chat_id: int | None = None
    # Where people reach the web view (/web links point there); unset: the webhook URL's
    # origin, else http://QUORUM_HTTP_HOST:QUORUM_HTTP_PORT.
    public_url: str = ""
    web_session_seconds: int = Field(default=8 * 3600, ge=60, le=7 * 86400)
    log_level: str = "INFO"
    # text for people, json (one object per line) for log shippers.
    log_format: Literal["text", "json"] = "text"

    @field_validator("telegram_token")
    @classmethod
    def _token_shape(cls, v: SecretStr) -> SecretStr:
        if v.get_secret_value() and not _TOKEN_RE.match(v.get_secret_value()):
            raise ValueError("must look like 123456789:AA... (as BotFather prints it)")
        return v

    @field_validator("token_secret")
    @classmethod
    def _key_length(cls, v: SecretStr) -> SecretStr:
        if v.get_secret_value() and len(v.get_secret_value().encode()) < 32:
            raise ValueError("HS256 key must be at least 32 bytes")
        return v

    @field_validator("audit_signing_key")
    @classmethod
    def _audit_key(cls, v: SecretStr) -> SecretStr:
        if v.get_secret_value():
            ed25519_key(v.get_secret_value())  # its ValueError names the problem
        return v

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        if not known_zone(v):
            raise ValueError(f"unknown timezone {v!r}")
        return v

    @field_validator("database_url")
    @classmethod
    def _db_url(cls, v: str) -> str:
        if v and not v.startswith(("postgresql://", "postgresql+asyncpg://", "postgres://")):
            raise ValueError("must start with postgresql:// or postgresql+asyncpg://")
        return v

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, v: str) -> str:
        if v and not v.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must start with redis://, rediss:// or unix://")
        return v

    @model_validator(mode="after")
    def _webhook(self) -> Settings:
        if self.telegram_mode == "webhook":
            secret = self.webhook_secret.get_secret_value()
            if not secret:
                raise ValueError("QUORUM_WEBHOOK_SECRET: required in webhook mode")
            if not _SECRET_RE.match(secret):
                raise ValueError(
                    "QUORUM_WEBHOOK_SECRET: 1-256 characters of A-Z a-z 0-9 _ - (Telegram's rule)"
                )
            if not self.webhook_url.startswith(("https://", "http://")):
                raise ValueError("QUORUM_WEBHOOK_URL: required in webhook mode (an http(s) URL)")
        return self

    def runnable_problems(self) -> list[tuple[str, str]]:
        """What `quorum run` needs beyond what every command needs: (variable, message)."""
        found = []
        if not self.telegram_token.get_secret_value():
            found.append(("QUORUM_TELEGRAM_TOKEN", "required (the token BotFather gave you)"))
        if not self.token_secret.get_secret_value():
            found.append(("QUORUM_TOKEN_SECRET", "required, at least 32 bytes"))
        if any(len(old.get_secret_value().encode()) < 32 for old in self.token_previous_secrets):
            found.append(("QUORUM_TOKEN_PREVIOUS_SECRETS", "every key must be 32+ bytes"))
        same_port = self.metrics_port and self.metrics_port == self.http_port
        if same_port and _hosts_overlap(self.http_host, self.metrics_host):
            message = (
                f"the same port as QUORUM_HTTP_PORT ({self.http_port}) on the same address:"
                " the metrics listener needs a port of its own (or leave it unset to serve"
                " /metrics on the public listener)"
            )
            found.append(("QUORUM_METRICS_PORT", message))
        return found

    def require_runnable(self) -> None:
        """Raise the first of `runnable_problems`."""
        for variable, message in self.runnable_problems():
            raise ConfigError(f"{variable}: {message}")

    @property
    def web_base_url(self) -> str:
        if self.public_url:
            return self.public_url.rstrip("/")
        if self.webhook_url:
            scheme, _, rest = self.webhook_url.partition("://")
            return f"{scheme}://{rest.split('/', 1)[0]}"
        return f"http://{self.http_host}:{self.http_port}"

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @property
    def async_database_url(self) -> str:
        url = self.database_url
        for prefix in ("postgresql://", "postgres://"):
            if url.startswith(prefix):
                return "postgresql+asyncpg://" + url[len(prefix) :]
        return url


def validation_messages(exc: ValidationError) -> list[tuple[str | None, str]]:
    """Pydantic's report as (field or None, message) pairs, one per problem."""
    found: list[tuple[str | None, str]] = []
    for err in exc.errors():
        loc = err.get("loc") or ()
        msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        found.append((str(loc[0]) if loc else None, msg))
    return found


def load_settings(**overrides: object) -> Settings:
    """Build settings, turning pydantic's report into one line that names the variable."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        field, msg = validation_messages(exc)[0]
        if field:
            raise ConfigError(f"QUORUM_{field.upper()}: {msg}") from None
        raise ConfigError(msg) from None
