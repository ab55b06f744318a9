"""Time as a dependency, so cooldown windows and staleness are tested by moving a clock, not by sleeping."""

from __future__ import annotations

import datetime as dt
import threading
from typing import Protocol


class Clock(Protocol):
    def now(self) -> dt.datetime: ...


class SystemClock:
    def now(self) -> dt.datetime:
        return dt.datetime.now(dt.UTC)


class ManualClock:
    """A clock that moves only when told (tests)."""

    def __init__(self, start: dt.datetime | None = None) -> None:
        self._now = start or dt.datetime.now(dt.UTC)
        self._lock = threading.Lock()

    def now(self) -> dt.datetime:
        with self._lock:
            return self._now

    def advance(self, *, minutes: float = 0, seconds: float = 0, hours: float = 0) -> dt.datetime:
        with self._lock:
            self._now += dt.timedelta(hours=hours, minutes=minutes, seconds=seconds)
            return self._now


KST = dt.timezone(dt.timedelta(hours=9), "KST")  # Korea keeps no daylight saving time; no tz database needed


def to_kst(moment: dt.datetime) -> dt.datetime:
    """A stored (UTC) time as staff read it."""
    return moment.astimezone(KST)
