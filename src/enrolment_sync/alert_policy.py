"""Decisions about alerts, pure: how much a change matters (a seed rule), and what of an alert is sent."""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Any

from .clock import KST
from .failures import Severity

BAD_STATUSES = frozenset({"CANCELLED", "FAILED"})


def change_severity(before: dict[str, Any], after: dict[str, Any]) -> Severity:
    """high: status becomes CANCELLED or FAILED; medium: another status change; low: anything else."""
    old_status, new_status = before.get("status"), after.get("status")
    if old_status != new_status:
        return Severity.HIGH if new_status in BAD_STATUSES else Severity.MEDIUM
    return Severity.LOW


# -- the lifecycle: what of an alert is sent (docs/alerts.md) ----------------------------------------------

ALERT_NOTICE_KINDS = frozenset({"FAILED_ALERT", "STALE_ALERT", "MASS_CHANGE_ALERT", "ESCALATION"})
INHIBITING_GROUPS = frozenset({"HTTP_5XX", "TIMEOUT"})  # job-wide upstream failures: STALE follows from them


@dataclass(frozen=True)
class AlertState:
    """What the notification consumer knows of an alert when its notice is about to go out."""

    alert_type: str
    resolved: bool
    acknowledged: bool
    silence_id: int | None
    inhibited_by: int | None  # an open job-wide FAILED alert covering this STALE alert's category


def notice_skipped(kind: str, state: AlertState) -> str | None:
    """Why an alert's notice is not sent (kept on the notification), or None: send it.

    Never an alert already resolved (its 복구 notice follows only if it was sent); never a silenced one; a STALE
    alert while a job-wide upstream failure covering it is open; no escalation of an acknowledged alert.
    """
    if state.resolved:
        return "resolved"
    if state.silence_id is not None:
        return f"silenced (silence {state.silence_id})"
    if state.alert_type == "STALE" and state.inhibited_by is not None:
        return f"inhibited (FAILED alert {state.inhibited_by})"
    if kind == "ESCALATION" and state.acknowledged:
        return "acknowledged"
    return None


@dataclass(frozen=True)
class QuietHours:
    """A daily window in KST (it may cross midnight) when notifications below high wait for its end."""

    start: dt.time
    end: dt.time

    def held_until(self, now: dt.datetime) -> dt.datetime | None:
        """The end of the window (UTC) when `now` falls inside it, else None."""
        local = now.astimezone(KST)
        start = local.replace(hour=self.start.hour, minute=self.start.minute, second=0, microsecond=0)
        end = local.replace(hour=self.end.hour, minute=self.end.minute, second=0, microsecond=0)
        if self.start < self.end:
            inside = start <= local < end
        else:  # crosses midnight: inside after the start, or before the end
            inside = local >= start or local < end
            if local >= start:
                end += dt.timedelta(days=1)
        return end.astimezone(dt.UTC) if inside else None


def parse_quiet_hours(value: str) -> QuietHours | None:
    """QUIET_HOURS "22:00-08:00" (KST); empty: none. ValueError names what is wrong."""
    value = value.strip()
    if not value:
        return None
    match = re.fullmatch(r"([0-2]?\d):([0-5]\d)\s*-\s*([0-2]?\d):([0-5]\d)", value)
    if match is None or int(match[1]) > 23 or int(match[3]) > 23:
        raise ValueError("QUIET_HOURS must look like 22:00-08:00 (KST, 24-hour clock)")
    start, end = dt.time(int(match[1]), int(match[2])), dt.time(int(match[3]), int(match[4]))
    if start == end:
        raise ValueError("QUIET_HOURS must not start and end at the same time")
    return QuietHours(start, end)


def is_mass_change(status_rows: int, changed: int, *, share: float, min_rows: int) -> bool:
    """More than `share` of a cohort's status rows changed in one run (cohorts below `min_rows` never are)."""
    return status_rows >= min_rows and changed > share * status_rows


def lasted_ko(seconds: float) -> str:
    """A duration as staff read it: 3분, 2시간 5분, 1일 3시간."""
    minutes = max(0, int(seconds // 60))
    days, rest = divmod(minutes, 24 * 60)
    hours, mins = divmod(rest, 60)
    if days:
        return f"{days}일 {hours}시간" if hours else f"{days}일"
    if hours:
        return f"{hours}시간 {mins}분" if mins else f"{hours}시간"
    return f"{mins}분" if mins else "1분 미만"
