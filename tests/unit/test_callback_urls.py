"""Callback URLs against a team's prefixes: parsed and compared, never string prefixes."""

from __future__ import annotations

import pytest

from bot.callback_urls import callback_url_problem, parse_prefix
from bot.policy import parse_policy
from bot.settings import ConfigError

PREFIXES = (
    parse_prefix("http://127.0.0.1:*/"),
    parse_prefix("https://deployer.internal/hooks"),
)


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("http://127.0.0.1:8080/hook", True),
        ("http://127.0.0.1/hook", True),
        ("https://deployer.internal/hooks", True),
        ("https://deployer.internal/hooks/deploy?x=1", True),
        ("https://DEPLOYER.internal:443/hooks/a", True),
        # The reported bypass: userinfo makes other-host the real host.
        ("http://127.0.0.1:1@other-host/", False),
        ("http://user:pw@127.0.0.1:1/", False),
        ("http://127.0.0.1.evil.example/", False),
        ("https://127.0.0.1:1/", False),
        ("https://deployer.internal.evil.example/hooks", False),
        ("https://deployer.internal:8443/hooks", False),
        ("http://deployer.internal/hooks", False),
        ("https://deployer.internal/hooksx", False),
        ("https://deployer.internal/hooks/../admin", False),
        ("https://deployer.internal/hooks/%2e%2e/admin", False),
        ("https://deployer.internal/hooks%2F..%2Fadmin", False),
        ("http://127.0.0.1:1\\@other-host/", False),
        ("http://127.0.0.1:1/ x", False),
        ("ftp://127.0.0.1/", False),
        ("/relative", False),
    ],
)
def test_callback_url_table(url: str, allowed: bool) -> None:
    assert (callback_url_problem(url, PREFIXES) is None) is allowed


def test_userinfo_is_named() -> None:
    problem = callback_url_problem("http://127.0.0.1:1@other-host/", PREFIXES)
    assert problem is not None and "user" in problem


@pytest.mark.parametrize(
    "prefix",
    ["http://127.0.0.1:", "https://h", "http://h:*", "ftp://h/", "http://u@h/", "http://h/?q=1"],
)
def test_bad_prefixes_are_refused(prefix: str) -> None:
    with pytest.raises(ValueError, match=r"path|http|user|query"):
        parse_prefix(prefix)


def _policy(prefixes: list[str]) -> dict[str, object]:
    return {"teams": {"platform": {"chat_ids": [-1001], "callback_url_prefixes": prefixes}}}


def test_policy_refuses_a_prefix_without_a_path() -> None:
    with pytest.raises(ConfigError) as info:
        parse_policy(_policy(["http://127.0.0.1:"]), "p.toml")
    message = str(info.value)
    assert "teams.platform.callback_url_prefixes" in message and "needs a path" in message


def test_policy_keeps_good_prefixes() -> None:
    team = parse_policy(_policy(["http://127.0.0.1:*/", "https://h/x/"])).team("platform")
    assert [p.port for p in team.callback_url_prefixes] == [None, 443]
