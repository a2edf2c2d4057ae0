"""The running process's shared parts, handed to handlers and services (no global state)."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

from aiogram import Bot
from aiohttp import web
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from bot.buttons import ButtonSigner
from bot.metrics import Metrics
from bot.policy import Policy, Team
from bot.rate_limits import CreationLimits
from bot.seats import seats_by_voter
from bot.settings import Settings
from bot.tokens import TokenService
from bot.totp import Sealer
from bot.wakeups import Wakeups
from storage.votes import Seat


@dataclass
class Runtime:
    settings: Settings
    policy: Policy
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    redis: Redis
    bot: Bot
    metrics: Metrics
    team_ids: dict[str, int] = field(default_factory=dict)
    bot_username: str = ""
    bot_id: int = 0
    # How this process runs, e.g. "polling, embedded PostgreSQL, in-process Redis" (/readyz).
    mode: str = ""
    # Names this process in outbox claims and logs; carries no state others need.
    instance: str = field(default_factory=lambda: secrets.token_hex(4))
    # The process's one LISTEN connection (Quorum runs it); idle workers sleep on it.
    wakeups: Wakeups = field(default_factory=Wakeups)
    # Derived from the settings once per process: pure derivations, nothing shared.
    signer: ButtonSigner = field(init=False)
    tokens: TokenService = field(init=False)
    zone: ZoneInfo = field(init=False)
    creation_limits: CreationLimits = field(init=False)
    sealer: Sealer = field(init=False)
    # bot.seats, built once the teams have their ids (rebuilt if team_ids is replaced).
    _seats: tuple[dict[str, int], dict[int, Seat]] | None = field(
        default=None, init=False, repr=False
    )
    # team id -> name, built from team_ids the same way (the workers look a team up per
    # pending request per pass: a scan of team_ids was 2% of the process's CPU, bench.votes).
    _names: tuple[dict[str, int], dict[int, str]] | None = field(
        default=None, init=False, repr=False
    )

    def __post_init__(self) -> None:
        self.signer = ButtonSigner(
            self.settings.token_secret.get_secret_value(),
            [old.get_secret_value() for old in self.settings.token_previous_secrets],
        )
        self.tokens = TokenService(self.settings)
        self.zone = ZoneInfo(self.policy.timezone) if self.policy.timezone else self.settings.zone
        self.creation_limits = CreationLimits(self.redis)
        self.sealer = Sealer(
            self.settings.token_secret.get_secret_value(),
            [old.get_secret_value() for old in self.settings.token_previous_secrets],
        )

    def seat(self, user_id: int) -> Seat | None:
        """Where this person's approval may be counted by the plain vote (bot.seats)."""
        if self._seats is None or self._seats[0] is not self.team_ids:
            self._seats = (self.team_ids, seats_by_voter(self.policy, self.team_ids))
        return self._seats[1].get(user_id)

    def team_name(self, team_id: int) -> str | None:
        if self._names is None or self._names[0] is not self.team_ids:
            self._names = (self.team_ids, {tid: name for name, tid in self.team_ids.items()})
        return self._names[1].get(team_id)

    def team(self, team_id: int) -> Team | None:
        name = self.team_name(team_id)
        return self.policy.teams.get(name) if name else None


RUNTIME = web.AppKey("quorum_runtime", Runtime)
