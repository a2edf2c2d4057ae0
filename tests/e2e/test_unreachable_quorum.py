"""A request that no votes could ever approve is refused at intake with 422 unreachable_quorum."""

from __future__ import annotations

from typing import Any

import pytest

from tests.e2e.flows import body, create
from tests.support import ALICE, BOB, OTHER_API_KEY, Harness, QuorumFactory, policy_data


async def refused(h: Harness, key: str | None = None, **over: Any) -> str:
    args: dict[str, Any] = {} if key is None else {"key": key}
    status, data = await h.api("POST", "/api/v1/approvals", body(**over), **args)
    assert status == 422, data
    assert data["error"]["code"] == "unreachable_quorum", data
    message: str = data["error"]["message"]
    return message


async def test_a_team_too_small_for_the_level(quorum: Harness) -> None:
    # Team data has one approver; high needs two by default.
    message = await refused(quorum, key=OTHER_API_KEY, risk_level="high")
    assert message == (
        "high requests of team data: 2 approvals needed but only 1 approver could vote"
    )
    status, _ = await quorum.api(
        "POST", "/api/v1/approvals", body(risk_level="low"), key=OTHER_API_KEY
    )
    assert status == 201
    _, listed = await quorum.api("GET", "/api/v1/approvals", key=OTHER_API_KEY)
    assert [a["risk_level"] for a in listed["approvals"]] == ["low"]


@pytest.mark.parametrize(
    "requester",
    [{"requested_by_telegram_id": ALICE}, {"requested_by": "Alice"}],
    ids=["by-telegram-id", "by-policy-name"],
)
async def test_the_requester_does_not_count(
    make_quorum: QuorumFactory, requester: dict[str, Any]
) -> None:
    data = policy_data()
    data["teams"]["platform"]["policy"] = {"critical": {"required_approvals": 3}}
    h = await make_quorum(policy=data)
    message = await refused(h, risk_level="critical", **requester)
    assert "3 approvals needed but only 2 approvers besides the requester could vote" in message
    await create(h, risk_level="critical", requested_by="ci")  # three could vote: fine


async def test_the_only_holder_of_the_required_role_asks(make_quorum: QuorumFactory) -> None:
    data = policy_data()
    data["teams"]["platform"]["policy"] = {
        "high": {"required_approvals": 2, "required_roles": ["lead"]}
    }
    h = await make_quorum(policy=data)
    message = await refused(h, risk_level="high", requested_by_telegram_id=BOB)
    assert "2 approvers could vote but none holds a required role (lead)" in message
    await create(h, risk_level="high", requested_by_telegram_id=ALICE)
