"""Time intervals (quiet hours): named sets of local times of day and weekdays, in the
dispatch file's time zone, that routes mute or keep active.

    time_intervals:
      night: [{times: ["22:00-07:00"]}]
      office: [{times: ["08:00-18:00"], weekdays: ["monday:friday"]}]

A time range may run past midnight (`22:00-07:00`); `weekdays` takes names and `a:b`
ranges. An interval holds when any of its entries does.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated
from zoneinfo import ZoneInfo

from pydantic import BaseModel, BeforeValidator, ConfigDict

_DAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_RANGE = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$")


def _minutes(value: object) -> tuple[int, int]:
    m = _RANGE.match(value) if isinstance(value, str) else None
    if m is None:
        raise ValueError(f'a time range is "HH:MM-HH:MM" (local time), got {value!r}')
    h1, m1, h2, m2 = (int(g) for g in m.groups())
    if h1 > 24 or h2 > 24 or m1 > 59 or m2 > 59 or (h1 * 60 + m1) > 1440 or (h2 * 60 + m2) > 1440:
        raise ValueError(f"time range {value!r} is outside 00:00-24:00")
    return h1 * 60 + m1, h2 * 60 + m2


def _days(value: object) -> frozenset[int]:
    if not isinstance(value, str):
        raise ValueError(f"a weekday is a name or a range such as monday:friday, got {value!r}")  # noqa: TRY004
    first, _, last = value.lower().partition(":")
    if first not in _DAYS or (last and last not in _DAYS):
        raise ValueError(f"unknown weekday in {value!r}; use {', '.join(_DAYS)} or a range a:b")
    a, b = _DAYS.index(first), _DAYS.index(last or first)
    return frozenset(range(a, b + 1)) if a <= b else frozenset([*range(a, 7), *range(b + 1)])


class TimeEntry(BaseModel):
    """One entry of an interval: time ranges (any) on weekdays (any)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    times: tuple[Annotated[tuple[int, int], BeforeValidator(_minutes)], ...] = ()
    weekdays: tuple[Annotated[frozenset[int], BeforeValidator(_days)], ...] = ()

    def holds(self, local: datetime) -> bool:
        if self.weekdays and not any(local.weekday() in d for d in self.weekdays):
            return False
        if not self.times:
            return True
        minute = local.hour * 60 + local.minute
        return any((a <= minute < b) if a <= b else (minute >= a or minute < b) for a, b in self.times)


def in_interval(entries: tuple[TimeEntry, ...], ts: float, tz: ZoneInfo) -> bool:
    """Does the event time `ts` fall in the interval (any entry), in local time?"""
    local = datetime.fromtimestamp(ts, tz)
    return any(e.holds(local) for e in entries)
