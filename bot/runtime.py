"""The running process's shared parts, handed to handlers and services (no global state)."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field

from aiogram import Bot
from aiohttp import web
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from bot.metrics import Metrics
from bot.policy import Policy
from bot.settings import Settings


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
    # Names this process in outbox claims and logs; carries no state others need.
    instance: str = field(default_factory=lambda: secrets.token_hex(4))

    def team_name(self, team_id: int) -> str | None:
        for name, tid in self.team_ids.items():
            if tid == team_id:
                return name
        return None


RUNTIME = web.AppKey("quorum_runtime", Runtime)
