"""Hours of the week a policy rule applies in, e.g. "Mon-Fri 09:00-18:00" (pure)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_WINDOW = re.compile(
    r"^(?P<days>[A-Za-z]{3}(?:-[A-Za-z]{3})?(?:,[A-Za-z]{3}(?:-[A-Za-z]{3})?)*)\s+"
    r"(?P<h1>\d{2}):(?P<m1>\d{2})-(?P<h2>\d{2}):(?P<m2>\d{2})$"
)
FORMAT = 'DAYS HH:MM-HH:MM, e.g. "Mon-Fri 09:00-18:00" (several joined by ";")'


@dataclass(frozen=True, slots=True)
class Window:
    days: frozenset[int]  # 0 = Monday
    start: int  # minutes after midnight
    end: int  # exclusive; 1440 is midnight at the end of the day


@dataclass(frozen=True, slots=True)
class Hours:
    text: str
    windows: tuple[Window, ...]

    def contains(self, local: datetime) -> bool:
        """Whether a wall-clock time (already in the team's zone) falls in a window."""
        minute = local.hour * 60 + local.minute
        return any(local.weekday() in w.days and w.start <= minute < w.end for w in self.windows)


def _day(name: str) -> int:
    try:
        return DAYS.index(name.lower())
    except ValueError:
        raise ValueError(f"unknown day {name!r}; use {FORMAT}") from None


def _days(spec: str) -> frozenset[int]:
    days: set[int] = set()
    for part in spec.split(","):
        first, _, last = part.partition("-")
        a = _day(first)
        b = _day(last) if last else a
        # Fri-Mon wraps over the weekend.
        days.update((a + i) % 7 for i in range((b - a) % 7 + 1))
    return frozenset(days)


def _minutes(hour: str, minute: str) -> int:
    h, m = int(hour), int(minute)
    if h > 24 or m > 59 or (h == 24 and m):
        raise ValueError(f"{hour}:{minute} is not a time of day; use {FORMAT}")
    return h * 60 + m


def parse_hours(text: str) -> Hours:
    """The windows of `text`; ValueError saying what is wrong (a window must not be empty or
    cross midnight: write two windows instead)."""
    windows = []
    for raw in text.split(";"):
        match = _WINDOW.match(raw.strip())
        if match is None:
            raise ValueError(f"malformed hours {raw.strip()!r}; use {FORMAT}")
        start = _minutes(match["h1"], match["m1"])
        end = _minutes(match["h2"], match["m2"])
        if end <= start:
            raise ValueError(f"hours {raw.strip()!r}: the window must end after it starts")
        windows.append(Window(_days(match["days"]), start, end))
    return Hours(text, tuple(windows))
