"""Reaching PostgreSQL, Redis and Telegram: one-line causes for the CLI, and the checks of
`quorum check-config --online` and of `quorum run`'s start-up."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from urllib.parse import urlsplit

import aiohttp
from sqlalchemy.engine import Connection

from bot.settings import Settings
from storage import keys
from storage.db import make_engine, ping

DATABASE = "QUORUM_DATABASE_URL"
REDIS = "QUORUM_REDIS_URL"
TELEGRAM_API = "QUORUM_TELEGRAM_API_URL"
TELEGRAM_TOKEN = "QUORUM_TELEGRAM_TOKEN"
WEBHOOK_URL = "QUORUM_WEBHOOK_URL"
_DEFAULT_PORTS = {DATABASE: 5432, REDIS: 6379}
_TIMEOUT = 10.0


class Unreachable(Exception):
    """A service that cannot be reached or refused us; str() is `VARIABLE: cause`."""

    def __init__(self, variable: str, cause: str) -> None:
        super().__init__(f"{variable}: {cause}")
        self.variable = variable


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """The exception, what caused it, and what a SQLAlchemy wrapper wraps, outermost first."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        e = todo.pop(0)
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        orig = getattr(e, "orig", None)
        todo += [orig if isinstance(orig, BaseException) else None, e.__cause__, e.__context__]


def _address(url: str, variable: str) -> str:
    parts = urlsplit(url)
    try:
        port = parts.port or _DEFAULT_PORTS.get(variable, 443)
    except ValueError:
        port = _DEFAULT_PORTS.get(variable, 443)
    return f"{parts.hostname or 'localhost'}:{port}"


def _scrub(text: str, url: str) -> str:
    """Never show a URL's password, whatever a driver put in its message."""
    password = urlsplit(url).password
    line = (text.strip().splitlines() or [""])[0]
    return line.replace(password, "***") if password else line


def cause(exc: BaseException, url: str, variable: str) -> str:
    """What went wrong reaching the service at `url`, in a few words."""
    chain = list(_chain(exc))
    address = _address(url, variable)
    for e in chain:  # the server's own words first: 'role "x" does not exist'
        module = type(e).__module__
        if module.startswith("asyncpg.exceptions") or type(e).__name__ in (
            "AuthenticationError",
            "AuthenticationWrongNumberOfArgsError",
            "ResponseError",
        ):
            return _scrub(str(e), url) or type(e).__name__
    for e in chain:
        if isinstance(e, socket.gaierror):
            return f"cannot resolve host {urlsplit(url).hostname}"
        if isinstance(e, ConnectionRefusedError) or (
            isinstance(e, OSError) and "connect call failed" in str(e).lower()
        ):
            return f"connection refused ({address})"
        if isinstance(e, TimeoutError):
            return f"timed out ({address})"
    for e in chain:
        if isinstance(e, OSError) and e.strerror:
            return f"{e.strerror.lower()} ({address})"
    text = _scrub(str(exc), url)
    if text.startswith("(") and ") " in text:  # SQLAlchemy's "(driver.Error) message"
        text = text.split(") ", 1)[1]
    return text or type(exc).__name__


def culprit(exc: BaseException) -> str | None:
    """Which service an exception came from, by the library that raised it."""
    for e in _chain(exc):
        module = type(e).__module__
        if module.startswith(("sqlalchemy", "asyncpg", "alembic")):
            return DATABASE
        if module.startswith("redis"):
            return REDIS
    return None


# ---------------------------------------------------------------- checks


async def check_database(url: str, *, head: str | None = None) -> str | None:
    """Connect, and with `head` require the schema at that revision (returned)."""
    engine = make_engine(url, pool_size=1)
    try:
        async with asyncio.timeout(_TIMEOUT):
            await ping(engine)
            if head is None:
                return None
            async with engine.connect() as conn:
                current = await conn.run_sync(_revision)
    except Exception as exc:
        raise Unreachable(DATABASE, cause(exc, url, DATABASE)) from exc
    finally:
        await engine.dispose()
    if current != head:
        raise Unreachable(
            DATABASE,
            f"schema is at revision {current or '(none)'}, this Quorum needs {head}: "
            "run `quorum migrate`",
        )
    return current


def _revision(conn: Connection) -> str | None:
    from alembic.runtime.migration import MigrationContext

    return MigrationContext.configure(conn).get_current_revision()


async def check_redis(url: str) -> None:
    """PING, and a trivial script: pacing and locks need EVAL (some managed Redis forbid it)."""
    client = keys.connect(url)
    try:
        async with asyncio.timeout(_TIMEOUT):
            await client.ping()
            if await client.eval("return 1", 0) != 1:
                raise Unreachable(REDIS, "EVAL did not run the script")
    except Unreachable:
        raise
    except Exception as exc:
        raise Unreachable(REDIS, cause(exc, url, REDIS)) from exc
    finally:
        await client.aclose()


async def check_telegram(api_url: str, token: str) -> str:
    """getMe with the bot token; the bot's username. The token never appears in a message."""
    url = f"{api_url.rstrip('/')}/bot{token}/getMe"
    try:
        timeout = aiohttp.ClientTimeout(total=_TIMEOUT)
        async with aiohttp.ClientSession(timeout=timeout) as http, http.get(url) as resp:
            data = await resp.json(content_type=None)
    except (aiohttp.ClientError, TimeoutError, ValueError, OSError) as exc:
        raise Unreachable(
            TELEGRAM_API, cause(exc, api_url, TELEGRAM_API).replace(token, "***")
        ) from exc
    if not isinstance(data, dict):
        raise Unreachable(TELEGRAM_API, f"getMe answered HTTP {resp.status} without JSON")
    description = str(data.get("description", f"HTTP {resp.status}")).replace(token, "***")
    if resp.status in (401, 404):
        raise Unreachable(TELEGRAM_TOKEN, f"Telegram refused the token ({description})")
    if not data.get("ok"):
        raise Unreachable(TELEGRAM_API, f"getMe failed: {description}")
    return str((data.get("result") or {}).get("username", ""))


async def check_online(settings: Settings, head: str) -> tuple[list[str], list[str]]:
    """Every service the settings name: (failures, what passed), one line each."""
    failures: list[str] = []
    passed: list[str] = []
    if settings.database_url:
        try:
            await check_database(settings.database_url, head=head)
            passed.append(f"PostgreSQL at schema revision {head}")
        except Unreachable as exc:
            failures.append(str(exc))
    else:
        passed.append("PostgreSQL embedded (QUORUM_DATABASE_URL unset): not checked")
    if settings.redis_url:
        try:
            await check_redis(settings.redis_url)
            passed.append("Redis answers PING and EVAL")
        except Unreachable as exc:
            failures.append(str(exc))
    else:
        passed.append("Redis in-process (QUORUM_REDIS_URL unset)")
    token = settings.telegram_token.get_secret_value()
    if token:
        try:
            name = await check_telegram(settings.telegram_api_url, token)
            passed.append(f"Telegram getMe: @{name}")
        except Unreachable as exc:
            failures.append(str(exc))
    if settings.telegram_mode == "webhook" and urlsplit(settings.webhook_url).scheme != "https":
        failures.append(f"{WEBHOOK_URL}: must be https (Telegram only delivers webhooks there)")
    return failures, passed


async def preflight(settings: Settings) -> None:
    """`quorum run` refuses to start against a PostgreSQL or Redis it cannot use."""
    if settings.database_url:
        await check_database(settings.database_url)
    if settings.redis_url:
        await check_redis(settings.redis_url)
