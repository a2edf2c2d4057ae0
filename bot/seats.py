"""Where each approver's approval may be counted by the plain vote (storage.votes.Seat)."""

from __future__ import annotations

from collections.abc import Mapping

from bot.policy import Policy
from bot.votes import name_key
from storage.votes import Seat


def seats_by_voter(policy: Policy, team_ids: Mapping[str, int]) -> dict[int, Seat]:
    """Per approver: every team (with its database id) and risk level they approve at whose
    rule has no step-up (an approval under step-up counts only once confirmed in private),
    with their name there and its key as bot.votes.requesters compares it."""
    out: dict[int, Seat] = {}
    for name, team in policy.teams.items():
        team_id = team_ids.get(name)
        if team_id is None:
            continue
        levels = [level.value for level, rule in team.rules.items() if rule.step_up is None]
        for voter, approver in team.approvers.items():
            seat = out.setdefault(voter, Seat([], [], [], []))
            for level in levels:
                seat.team_ids.append(team_id)
                seat.levels.append(level)
                seat.names.append(approver.name)
                seat.keys.append(name_key(approver.name))
    return out
