"""The outbox sender: claims due rows, paces them through Redis, calls Telegram, records it."""

from __future__ import annotations

from bot.outbox.methods import build_method, sanitize
from bot.outbox.pacing import Pacer, Rates
from bot.outbox.recording import Outcome, SyncSent
from bot.outbox.sender import Sender, run_sender

__all__ = [
    "Outcome",
    "Pacer",
    "Rates",
    "Sender",
    "SyncSent",
    "build_method",
    "run_sender",
    "sanitize",
]
