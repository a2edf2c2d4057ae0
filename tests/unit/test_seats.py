"""Where the plain vote may count an approver's approval (bot.seats)."""

from __future__ import annotations

from bot.policy import parse_policy
from bot.seats import seats_by_voter
from storage.votes import Seat
from tests.support import ALICE, BOB, ERIN, policy_data


def test_seats_are_the_levels_without_step_up_of_the_teams_with_ids() -> None:
    data = policy_data()
    data["teams"]["platform"]["approvers"][0]["name"] = " Straße "
    data["teams"]["platform"]["policy"] = {"critical": {"step_up": "private"}}
    seats = seats_by_voter(parse_policy(data), {"platform": 7})
    levels = ["low", "medium", "high"]
    assert seats[ALICE] == Seat([7] * 3, levels, [" Straße "] * 3, ["strasse"] * 3)
    assert seats[BOB].levels == levels
    # The data team has no id (not synced): none of its approvers has a seat.
    assert ERIN not in seats


def test_every_level_is_a_seat_without_step_up() -> None:
    seats = seats_by_voter(parse_policy(policy_data()), {"platform": 1, "data": 2})
    assert seats[ERIN] == Seat(
        [2] * 4, ["low", "medium", "high", "critical"], ["erin"] * 4, ["erin"] * 4
    )
