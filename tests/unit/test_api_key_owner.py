"""An API key names its team and itself: the audit actor of what a caller does."""

from __future__ import annotations

import hashlib

from bot.approvals.card import actor_text
from bot.policy import api_actor, parse_policy

KEY = "qk_test"


def test_api_key_owner_names_the_key() -> None:
    digest = hashlib.sha256(KEY.encode()).hexdigest()
    policy = parse_policy({"teams": {"platform": {"api_keys": [{"name": "ci", "sha256": digest}]}}})
    owner = policy.api_key_owner(KEY)
    assert owner is not None
    team, name = owner
    assert team is policy.team("platform") and name == "ci"
    assert policy.api_key_owner(KEY + "x") is None
    assert api_actor(name) == "api:ci"
    assert actor_text(api_actor(name)) == "ci (API key)"
    assert actor_text("alice") == "alice"
