"""One retry policy, as decisions only: backoff with jitter, Retry-After, and the budget of one call.

The callers wait in their own way (the KVCA client on the event loop, the Sheets target on a stop event,
the outbox queues through `next_attempt_at`); this module only says how long, and whether to try again.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import math
import random
from collections.abc import Callable
from dataclasses import dataclass

JITTER_LOW = 0.5  # a delay is drawn from [JITTER_LOW, 1] x the exponential step ("equal jitter")
RETRY_AFTER_MAX_S = 300.0  # a Retry-After beyond this is read as this: a misconfigured upstream cannot park us

Rand = Callable[[], float]  # a draw from [0, 1), like random.random


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with equal jitter: never zero, and clients that failed together do not come back
    in lockstep."""

    base_s: float
    max_s: float
    rand: Rand = random.random

    def delay_s(self, failures: int) -> float:
        """The wait after the `failures`-th failure (1-based): min(max_s, base_s * 2^(failures-1)) x [0.5, 1]."""
        step = min(self.max_s, self.base_s * 2 ** max(0, failures - 1))
        return step * (JITTER_LOW + (1 - JITTER_LOW) * self.rand())


def retry_after_s(value: str | None, *, now: dt.datetime, max_s: float = RETRY_AFTER_MAX_S) -> float | None:
    """A Retry-After header as seconds to wait, within [0, max_s]; None when absent or unreadable.

    RFC 9110 allows delay-seconds (`120`) or an HTTP date (`Wed, 21 Oct 2015 07:28:00 GMT`), read against `now`.
    """
    text = (value or "").strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:  # "-0000" in an HTTP date means UTC
            when = when.replace(tzinfo=dt.UTC)
        seconds = (when - now).total_seconds()
    if math.isnan(seconds):
        return None
    return min(max_s, max(0.0, seconds))


@dataclass
class RetryBudget:
    """The tries of one call: failures spend `retries`; rate-limit waits spend `rate_waits`, never a retry.

    A 429 with Retry-After says "not now", not "broken": an upstream that paces us must not use up the
    retries meant for real failures. `rate_waits` still bounds the waiting, so a call cannot wait forever.
    """

    retries: int
    rate_waits: int = 0
    failures: int = 0
    waits: int = 0

    @property
    def attempts(self) -> int:
        return self.failures + self.waits

    def failed(self) -> bool:
        """Count a failure; True while another try is allowed."""
        self.failures += 1
        return self.failures <= self.retries

    def rate_limited(self) -> bool:
        """Count a rate-limit wait; True while another wait is allowed."""
        self.waits += 1
        return self.waits <= self.rate_waits

    def wait_s(self, retry_after: float | None, backoff: Backoff) -> float:
        """How long to wait before the next try: as told when told, else the backoff for the failures so far."""
        return retry_after if retry_after is not None else backoff.delay_s(self.failures)
