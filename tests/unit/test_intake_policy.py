"""The intake limits' policy defaults and the in-process token bucket (Redis's fallback)."""

from __future__ import annotations

import pytest

from bot.policy import parse_policy
from bot.rate_limits import LocalBucket
from bot.settings import ConfigError

KEY = {"name": "ci", "sha256": "ab" * 32}


def test_defaults() -> None:
    team = parse_policy({"teams": {"t": {"api_keys": [KEY]}}}).team("t")
    (key,) = team.api_keys
    assert (key.rate_per_minute, key.burst, team.max_pending) == (60, 30, 200)


def test_per_key_settings() -> None:
    data = {"teams": {"t": {"api_keys": [{**KEY, "rate_per_minute": 5, "burst": 2}]}}}
    (key,) = parse_policy(data).team("t").api_keys
    assert (key.rate_per_minute, key.burst) == (5, 2)


@pytest.mark.parametrize(
    ("entry", "path"),
    [
        ({"api_keys": [{**KEY, "burst": 0}]}, "teams.t.api_keys.0.burst"),
        ({"api_keys": [{**KEY, "rate_per_minute": 0}]}, "teams.t.api_keys.0.rate_per_minute"),
        ({"max_pending": 0}, "teams.t.max_pending"),
    ],
)
def test_bad_limits_are_refused(entry: dict[str, object], path: str) -> None:
    with pytest.raises(ConfigError, match=path):
        parse_policy({"teams": {"t": entry}})


def test_local_bucket_burst_then_refill() -> None:
    bucket = LocalBucket(rate=1.0, capacity=3, tokens=3, last=100.0)
    assert [bucket.take(100.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take(100.0) == pytest.approx(1.0)
    assert bucket.take(100.5) == pytest.approx(0.5)  # refused: nothing taken
    assert bucket.take(101.0) == 0.0
    assert bucket.take(200.0) == 0.0 and bucket.tokens == pytest.approx(2.0)  # capped at 3
