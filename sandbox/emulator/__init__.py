"""Stateful Telegram Bot API emulator over real HTTP with Telegram's limits and faults."""

from sandbox.emulator.client import EmulatorClient, EmulatorError, SendResult, TapResult
from sandbox.emulator.html import html_unescape, parse_html
from sandbox.emulator.limits import Limits
from sandbox.emulator.server import TelegramEmulator

__all__ = [
    "EmulatorClient",
    "EmulatorError",
    "Limits",
    "SendResult",
    "TapResult",
    "TelegramEmulator",
    "html_unescape",
    "parse_html",
]
