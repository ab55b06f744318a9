"""When a schedule fires (pure): cron expressions in a time zone, fixed intervals, and durations.

Every process computes the same slots from the same inputs (the schedule row and the database's clock), so a
slot is identified by its instant and fires once: the first process to insert (schedule_id, slot_at) wins.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

from ..errors import ConfigError

DEFAULT_TIMEZONE = "Asia/Seoul"
KST = ZoneInfo(DEFAULT_TIMEZONE)
_EPSILON = dt.timedelta(microseconds=1)
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration_s(text: str) -> float:
    """`30s`, `5m`, `1h30m`, `2d` -> seconds. Names what is wrong otherwise."""
    compact = text.strip().lower().replace(" ", "")
    if not compact:
        raise ConfigError("a duration is empty: write it like 30s, 5m, 1h or 1h30m")
    parts = _DURATION_PART.findall(compact)
    if "".join(n + u for n, u in parts) != compact:
        raise ConfigError(f"{text!r} is not a duration: write it like 30s, 5m, 1h or 1h30m (units ms, s, m, h, d)")
    seconds = sum(float(n) * _UNIT_SECONDS[u] for n, u in parts)
    if seconds <= 0:
        raise ConfigError(f"{text!r} is not a positive duration")
    return seconds


def parse_durations_s(text: str) -> tuple[float, ...]:
    """A comma-separated list of durations (`5m,15m,45m`); an empty text is an empty list."""
    return tuple(parse_duration_s(part) for part in text.split(",") if part.strip())


def format_duration(seconds: float) -> str:
    """The inverse of parse_duration_s for display: 90 -> `1m30s`."""
    if seconds < 1:
        return f"{round(seconds * 1000)}ms"
    rest = round(seconds)
    out = ""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if rest >= size:
            out += f"{rest // size}{unit}"
            rest %= size
    return out


def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ConfigError(f"unknown time zone {name!r}: use an IANA name such as Asia/Seoul or UTC") from exc


def check_cron(expr: str) -> str:
    """A five-field cron expression (minute hour day month weekday), as pg_cron takes it."""
    expr = " ".join(expr.split())
    if len(expr.split(" ")) != 5 or not croniter.is_valid(expr):
        raise ConfigError(
            f"{expr!r} is not a five-field cron expression (minute hour day-of-month month day-of-week), "
            "e.g. '0 9 * * *' for 09:00 every day"
        )
    return expr


@dataclass(frozen=True)
class ScheduleSpec:
    """Either `cron` in `timezone`, or a fixed `every_s` counted from `anchor` (the schedule's creation)."""

    anchor: dt.datetime
    cron: str | None = None
    timezone: str = DEFAULT_TIMEZONE
    every_s: float | None = None

    def __post_init__(self) -> None:
        if (self.cron is None) == (self.every_s is None):
            raise ConfigError("a schedule has either a cron expression or an interval, not both and not neither")
        if self.anchor.tzinfo is None:
            raise ValueError("anchor must be timezone-aware")

    def describe(self) -> str:
        if self.cron is not None:
            return f"cron '{self.cron}' ({self.timezone})"
        assert self.every_s is not None
        return f"every {format_duration(self.every_s)}"


def latest_slot(spec: ScheduleSpec, now: dt.datetime) -> dt.datetime | None:
    """The latest slot at or before `now` (UTC), or None when none has come since the schedule began."""
    if spec.every_s is not None:
        step = dt.timedelta(seconds=spec.every_s)
        count = (now - spec.anchor) // step
        return (spec.anchor + count * step).astimezone(dt.UTC) if count >= 1 else None
    assert spec.cron is not None
    local_now = now.astimezone(zone(spec.timezone))
    slot: dt.datetime = croniter(spec.cron, local_now + _EPSILON).get_prev(dt.datetime)
    slot = slot.astimezone(dt.UTC)
    return slot if slot > spec.anchor else None


def next_slot(spec: ScheduleSpec, now: dt.datetime) -> dt.datetime:
    """The first slot strictly after `now` (UTC)."""
    if spec.every_s is not None:
        step = dt.timedelta(seconds=spec.every_s)
        count = max((now - spec.anchor) // step + 1, 1)
        return (spec.anchor + count * step).astimezone(dt.UTC)
    assert spec.cron is not None
    start = max(now, spec.anchor).astimezone(zone(spec.timezone))
    slot: dt.datetime = croniter(spec.cron, start).get_next(dt.datetime)
    return slot.astimezone(dt.UTC)


def due_slot(spec: ScheduleSpec, now: dt.datetime, last_fired: dt.datetime | None) -> dt.datetime | None:
    """The slot to fire now: the latest one, if it has not fired. Older missed slots are skipped (catch-up once)."""
    slot = latest_slot(spec, now)
    if slot is None or (last_fired is not None and slot <= last_fired):
        return None
    return slot


def kst(moment: dt.datetime | None) -> str:
    """A time for people: KST, to the second."""
    if moment is None:
        return "-"
    return moment.astimezone(KST).strftime("%Y-%m-%d %H:%M:%S KST")
