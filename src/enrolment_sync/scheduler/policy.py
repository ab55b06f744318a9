"""What the unattended worker decides (pure): retry or not, pause or not, a request's state, a stale slot."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from ..failures import ErrorGroup
from .slots import ScheduleSpec, latest_slot

# Transient failures, worth the same request again later. HTTP_4XX (credentials, a wrong category) and
# UNKNOWN (a body that breaks the contract) fail the same way until someone acts. LOCK_CONFLICT is not
# retried either: the request already waited REQUEST_LOCK_WAIT_SECONDS for the lease, and the next slot or
# request will come anyway.
RETRIED_GROUPS = frozenset({ErrorGroup.HTTP_5XX, ErrorGroup.TIMEOUT, ErrorGroup.HTTP_409})
NOT_COUNTED_FOR_PAUSE = frozenset({ErrorGroup.LOCK_CONFLICT})


@dataclass(frozen=True)
class RetryDecision:
    delay_s: float | None  # None: no retry
    exhausted: bool = False  # a transient failure with no retry left: the series ends here

    @property
    def retry(self) -> bool:
        return self.delay_s is not None


def decide_retry(group: ErrorGroup | None, retries_done: int, delays_s: Sequence[float]) -> RetryDecision:
    """The failed run of a request that was itself retry number `retries_done` (0: the first attempt)."""
    if group is None or group not in RETRIED_GROUPS or not delays_s:
        return RetryDecision(None)
    if retries_done < len(delays_s):
        return RetryDecision(delays_s[retries_done])
    return RetryDecision(None, exhausted=True)


def consecutive_failures(outcomes_newest_first: Sequence[tuple[str, str | None]]) -> int:
    """(status, error_group) of a category's latest runs, newest first -> failures since the last success.

    Lock conflicts say nothing about the upstream and are skipped; runs still RUNNING are skipped too.
    """
    count = 0
    for status, group in outcomes_newest_first:
        if status == "SUCCESS":
            break
        if status == "FAILED" and (group is None or ErrorGroup(group) not in NOT_COUNTED_FOR_PAUSE):
            count += 1
    return count


def should_pause(failures: int, pause_after: int) -> bool:
    """Pause a category's schedules after `pause_after` consecutive failed runs (0 turns the rule off)."""
    return pause_after > 0 and failures >= pause_after


def request_state(status: str, ok: bool | None) -> str:
    """The queue's status and the run's outcome -> what GET /jobs/requests/{id} says."""
    if status == "PENDING":
        return "QUEUED"
    if status == "PROCESSING":
        return "RUNNING"
    if status == "DONE" and ok:
        return "SUCCESS"
    return "FAILED"


def stale_slot(
    spec: ScheduleSpec,
    now: dt.datetime,
    *,
    grace_s: float,
    watched_since: dt.datetime,
    last_success_at: dt.datetime | None,
    alerted_slot: dt.datetime | None,
) -> dt.datetime | None:
    """The latest slot whose grace period has passed with no success since it, if not alerted yet."""
    slot = latest_slot(spec, now - dt.timedelta(seconds=grace_s))
    if slot is None or slot < watched_since:
        return None
    if last_success_at is not None and last_success_at >= slot:
        return None
    if alerted_slot is not None and slot <= alerted_slot:
        return None
    return slot
