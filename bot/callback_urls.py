"""Which callback URLs a team allows: parsed URLs compared by scheme, host, port and path.

A prefix is `scheme://host[:port]/path`: the port defaults to the scheme's, `:*` allows any
port (test servers, the sandbox), and the path is required, so `http://127.0.0.1:` or
`https://h` (which a plain string prefix would let `https://h.evil.example` through) is refused.
URLs are parsed with yarl, the parser aiohttp sends with, so what is checked is what is called.
"""

from __future__ import annotations

from dataclasses import dataclass

from yarl import URL

SCHEMES = frozenset({"http", "https"})
ANY_PORT = ":*"


@dataclass(frozen=True, slots=True)
class CallbackPrefix:
    scheme: str
    host: str
    port: int | None  # None: any port
    path: str

    def allows(self, url: URL) -> bool:
        if url.scheme != self.scheme or (url.host or "").lower() != self.host:
            return False
        if self.port is not None and url.port != self.port:
            return False
        path = url.path
        if self.path.endswith("/"):
            return path.startswith(self.path)
        return path == self.path or path.startswith(self.path + "/")


def _parse(text: str) -> URL:
    if not text or text != text.strip() or any(ord(c) < 0x21 or c == "\x7f" for c in text):
        raise ValueError("must not contain spaces or control characters")
    try:
        url = URL(text)
    except ValueError as exc:
        raise ValueError(f"is not a valid URL ({exc})") from None
    if url.scheme not in SCHEMES or not url.host:
        raise ValueError("must be an absolute http:// or https:// URL with a host")
    if url.raw_user is not None or url.raw_password is not None:
        raise ValueError("must not contain a user name or password (user@host)")
    if any(part in (".", "..") for part in url.path.split("/")):
        # Only an encoded dot segment survives yarl's normalisation; the server may decode it.
        raise ValueError("must not contain dot segments (/../), encoded or not")
    return url


def parse_prefix(text: str) -> CallbackPrefix:
    """A policy prefix; ValueError saying what is wrong with it."""
    _scheme, sep, rest = text.partition("://")
    authority, slash, _path = rest.partition("/")
    if not sep or not slash:
        raise ValueError(
            f"{text!r} needs a path: write scheme://host[:port]/path "
            "(for example https://deployer.internal/hooks/ or http://127.0.0.1:*/)"
        )
    any_port = authority.endswith(ANY_PORT)
    concrete = text.replace(ANY_PORT, "", 1) if any_port else text
    try:
        url = _parse(concrete)
    except ValueError as exc:
        raise ValueError(f"{text!r} {exc}") from None
    if url.raw_query_string or url.raw_fragment:
        raise ValueError(f"{text!r} must not have a query or a fragment")
    host = (url.host or "").lower()
    return CallbackPrefix(url.scheme, host, None if any_port else url.port, url.path)


def callback_url_problem(text: str, prefixes: tuple[CallbackPrefix, ...]) -> str | None:
    """Why a request's callback_url is refused, or None if one of the prefixes allows it."""
    try:
        url = _parse(text)
    except ValueError as exc:
        return str(exc)
    if not any(p.allows(url) for p in prefixes):
        return "must match one of the team's callback_url_prefixes (scheme, host, port and path)"
    return None
