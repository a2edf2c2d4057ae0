"""Alert forwarding: one living card per alert, repeats coalesced, buttons and silences."""

from __future__ import annotations

from bot.alerts.actions import AlertTap, press_button, unsilence
from bot.alerts.alertmanager import sync_alertmanager
from bot.alerts.card import card_markup, render_card
from bot.alerts.intake import IngestResult, ingest
from bot.alerts.links import linked_alert_line, on_approval_changed
from bot.alerts.sources import read_alerts
from bot.alerts.texts import list_firing, list_silences
from bot.alerts.workers import refresh_due_cards, run_maintenance

__all__ = [
    "AlertTap",
    "IngestResult",
    "card_markup",
    "ingest",
    "linked_alert_line",
    "list_firing",
    "list_silences",
    "on_approval_changed",
    "press_button",
    "read_alerts",
    "refresh_due_cards",
    "render_card",
    "run_maintenance",
    "sync_alertmanager",
    "unsilence",
]
