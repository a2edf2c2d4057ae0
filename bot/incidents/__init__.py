"""Incidents: declared from an alert, the chat or the API; a card, a timeline, a postmortem."""

from __future__ import annotations

from bot.incidents.service import (
    PAGE_MAX,
    PAGE_SIZE,
    Actor,
    Details,
    Page,
    TimelinePage,
    add_note,
    declare,
    get,
    get_in,
    list_page,
    open_incidents,
    postmortem,
    run,
    set_commander,
    set_severity,
    set_status,
    timeline_page,
)

__all__ = [
    "PAGE_MAX",
    "PAGE_SIZE",
    "Actor",
    "Details",
    "Page",
    "TimelinePage",
    "add_note",
    "declare",
    "get",
    "get_in",
    "list_page",
    "open_incidents",
    "postmortem",
    "run",
    "set_commander",
    "set_severity",
    "set_status",
    "timeline_page",
]
