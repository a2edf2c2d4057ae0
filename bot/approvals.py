"""Approval requests (placeholder until issue 4)."""

from __future__ import annotations

import asyncio

from bot.runtime import Runtime


async def run_maintenance(rt: Runtime) -> None:
    await asyncio.Event().wait()
