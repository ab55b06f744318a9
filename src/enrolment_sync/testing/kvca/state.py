"""The simulator's state: generated data, mutations, the fault queue, tokens, knobs and stats.

Thread-safe: a lock guards every read and mutation, so a test can drive a `RunningSimulator` from its own
thread while uvicorn serves on a background thread.

Mutation rules: updating a status row never touches its detail, except when the new status is `COMPLETED`
(then the detail's `completed`, `completion_date` and `update_time` change). So one learner's status change
(to anything but `COMPLETED`) is exactly one changed status row. (The detail is deliberately *not* changed
when a row leaves `COMPLETED`.) Every mutation advances the fake clock by one second.
"""

from __future__ import annotations

import dataclasses
import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass
from datetime import datetime, timedelta
from random import Random
from typing import Any

from .data import (
    CLOCK_START,
    DETAIL_FIELDS,
    ROW_UPDATE_FIELDS,
    STATUS_MSG,
    Course,
    SimulatorConfig,
    generate,
    make_enrolment,
)

KINDS: tuple[str, ...] = ("token", "category", "courses", "enrolments", "detail")


@dataclass
class Fault:
    """One queued fault.  ``count`` -1 means forever."""

    status: int = 503
    count: int = 1
    path_contains: str | None = None
    retry_after: int | None = None
    timeout: bool = False
    hang_s: float = 30.0
    drip_s: float = 0.0  # > 0: the real answer, its body sent in small pieces spread over this many seconds
    echo: bool = False  # the error body repeats what the request sent (Authorization, body) and the secret

    def matches(self, target: str) -> bool:
        return self.path_contains is None or self.path_contains in target

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class SimulatorError(Exception):
    """Base of the errors raised by :class:`SimulatorState` methods."""


class NotFound(SimulatorError, KeyError):
    """Unknown course, learner or category."""


class Conflict(SimulatorError, ValueError):
    """The learner is already enrolled."""


class BadRequest(SimulatorError, ValueError):
    """Invalid argument (unknown status, unknown field, ...)."""


class SimulatorState:
    """All mutable simulator data, the fault queue and the stats.

    Every public method takes ``self._lock`` (a ``threading.RLock``) so it may be called from a
    thread other than the server's event loop.  Lookup errors raise :class:`NotFound` (a ``KeyError``),
    invalid arguments :class:`BadRequest` and duplicate enrolments :class:`Conflict` (``ValueError``).
    """

    def __init__(self, config: SimulatorConfig | None = None) -> None:
        self.config = dataclasses.replace(config) if config is not None else SimulatorConfig()
        self._lock = threading.RLock()
        self._tokens: dict[str, float] = {}
        self._faults: deque[Fault] = deque()
        self.shutting_down = False
        self._reset_locked()

    def _reset_locked(self) -> None:
        cfg = self.config
        self.latency_ms = float(cfg.latency_ms)
        self.max_in_flight_limit = cfg.max_in_flight
        self.client_id = cfg.client_id
        self.client_secret = cfg.client_secret
        self._clock = CLOCK_START
        self._faults.clear()
        self._claims: list[tuple[str, int]] = []
        self._reset_stats_locked()
        catalogue = generate(cfg)
        self.categories = catalogue.categories
        self.category_courses = catalogue.category_courses
        self.courses = catalogue.courses

    def _tick(self) -> datetime:
        self._clock += timedelta(seconds=1)
        return self._clock

    # ------------------------------------------------------------------ lookups
    def _course(self, course_id: int) -> Course:
        course = self.courses.get(course_id)
        if course is None:
            raise NotFound(f"unknown course {course_id}")
        return course

    def _row(self, course_id: int, user_id: str) -> tuple[Course, dict[str, Any]]:
        course = self._course(course_id)
        row = course.rows.get(user_id)
        if row is None:
            raise NotFound(f"{user_id} is not enrolled in course {course_id}")
        return course, row

    def course_ids(self, category_id: int | None = None) -> list[int]:
        """Course ids of one category (direct courses only), or of all categories."""
        with self._lock:
            if category_id is None:
                return sorted(self.courses)
            if category_id not in self.category_courses:
                raise NotFound(f"unknown category {category_id}")
            return list(self.category_courses[category_id])

    def enrolments(self, course_id: int) -> list[dict[str, Any]]:
        """Copies of all status rows of a course, ordered by user_id."""
        with self._lock:
            course = self._course(course_id)
            return [dict(course.rows[u]) for u in course.sorted_user_ids()]

    def enrolment(self, course_id: int, user_id: str) -> dict[str, Any]:
        with self._lock:
            return dict(self._row(course_id, user_id)[1])

    def detail(self, course_id: int, user_id: str) -> dict[str, Any] | None:
        """A copy of the detail, or None when the detail endpoint would answer 404."""
        with self._lock:
            d = self._course(course_id).details.get(user_id)
            return dict(d) if d is not None else None

    # ------------------------------------------------------------------ mutations
    def update_enrolment(self, course_id: int, user_id: str, **fields: Any) -> dict[str, Any]:
        """Change one status row (fields: status, status_msg, gc_date, sjc_date); returns the new row.

        ``update_time`` always advances.  ``status_msg`` follows ``status`` unless given.  When
        ``status`` is given without ``sjc_date``, ``sjc_date`` is kept (or set to the fake clock's date)
        for COMPLETED/FAILED and cleared otherwise.  The detail changes only for a new COMPLETED status.
        """
        unknown = set(fields) - set(ROW_UPDATE_FIELDS)
        if unknown:
            raise BadRequest(f"unknown fields: {sorted(unknown)}")
        status = fields.get("status")
        if "status" in fields and status not in STATUS_MSG:
            raise BadRequest(f"unknown status {status!r}")
        for key in ("status_msg",):
            if key in fields and not isinstance(fields[key], str):
                raise BadRequest(f"{key} must be a string")
        for key in ("gc_date", "sjc_date"):
            if key in fields and fields[key] is not None and not isinstance(fields[key], str):
                raise BadRequest(f"{key} must be a string or null")
        with self._lock:
            course, row = self._row(course_id, user_id)
            now = self._tick()
            if status is not None:
                row["status"] = status
                row["status_msg"] = fields.get("status_msg", STATUS_MSG[status])
                if "sjc_date" not in fields:
                    if status in ("COMPLETED", "FAILED"):
                        row["sjc_date"] = row["sjc_date"] or now.date().isoformat()
                    else:
                        row["sjc_date"] = None
            elif "status_msg" in fields:
                row["status_msg"] = fields["status_msg"]
            for key in ("gc_date", "sjc_date"):
                if key in fields:
                    row[key] = fields[key]
            row["update_time"] = now.isoformat()
            if status == "COMPLETED":
                detail = course.details.get(user_id)
                if detail is not None:
                    detail["completed"] = True
                    detail["completion_date"] = row["sjc_date"] or now.date().isoformat()
                    detail["update_time"] = now.isoformat()
            return dict(row)

    def update_detail(self, course_id: int, user_id: str, **fields: Any) -> dict[str, Any]:
        """Change detail fields (progress_rate, attendance_rate, exam_score, ...); bumps update_time."""
        unknown = set(fields) - set(DETAIL_FIELDS)
        if unknown:
            raise BadRequest(f"unknown fields: {sorted(unknown)}")
        with self._lock:
            detail = self._course(course_id).details.get(user_id)
            if detail is None:
                raise NotFound(f"no detail for {user_id} in course {course_id}")
            now = self._tick()
            detail.update(fields)
            if "update_time" not in fields:
                detail["update_time"] = now.isoformat()
            return dict(detail)

    def unlist_course(self, course_id: int) -> None:
        """The course leaves its category's course list (its own endpoints keep answering)."""
        with self._lock:
            self._course(course_id)
            for ids in self.category_courses.values():
                if course_id in ids:
                    ids.remove(course_id)

    def remove_enrolment(self, course_id: int, user_id: str) -> None:
        """The learner leaves the course: the row disappears and the detail answers 404."""
        with self._lock:
            course, _ = self._row(course_id, user_id)
            del course.rows[user_id]
            course.details.pop(user_id, None)
            course.invalidate()
            self._tick()

    def remove_detail_only(self, course_id: int, user_id: str) -> None:
        """The status row stays listed but the detail endpoint answers 404."""
        with self._lock:
            course, _ = self._row(course_id, user_id)
            course.details.pop(user_id, None)

    def add_enrolment(self, course_id: int, user_id: str, status: str = "ENROLLED") -> dict[str, Any]:
        """Enrol a learner (deterministic detail); returns the new status row."""
        if status not in STATUS_MSG:
            raise BadRequest(f"unknown status {status!r}")
        if not isinstance(user_id, str) or not user_id:
            raise BadRequest("user_id must be a non-empty string")
        with self._lock:
            course = self._course(course_id)
            if user_id in course.rows:
                raise Conflict(f"{user_id} is already enrolled in course {course_id}")
            rng = Random(f"{self.config.seed}:{course_id}:{user_id}")
            row, detail = make_enrolment(rng, course, user_id, status)
            now = self._tick()
            row["update_time"] = now.isoformat()
            detail["update_time"] = now.isoformat()
            if status in ("COMPLETED", "FAILED"):
                row["sjc_date"] = now.date().isoformat()
                if status == "COMPLETED":
                    detail["completion_date"] = row["sjc_date"]
            course.rows[user_id] = row
            course.details[user_id] = detail
            course.invalidate()
            return dict(row)

    # ------------------------------------------------------------------ faults / knobs
    def add_fault(
        self,
        status: int = 503,
        count: int = 1,
        path_contains: str | None = None,
        retry_after: int | None = None,
        timeout: bool = False,
        hang_s: float = 30.0,
        drip_s: float = 0.0,
        echo: bool = False,
    ) -> Fault:
        """Queue a fault (FIFO) consumed by matching /api/v1 requests; ``count=-1`` means forever."""
        if count == 0 or count < -1:
            raise BadRequest("count must be positive or -1")
        if not timeout and not drip_s and not (400 <= int(status) <= 599):
            raise BadRequest("status must be a 4xx or 5xx code")
        fault = Fault(
            status=int(status),
            count=int(count),
            path_contains=path_contains,
            retry_after=retry_after,
            timeout=bool(timeout),
            hang_s=float(hang_s),
            drip_s=max(0.0, float(drip_s)),
            echo=bool(echo),
        )
        with self._lock:
            self._faults.append(fault)
        return fault

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def faults(self) -> list[Fault]:
        with self._lock:
            return [dataclasses.replace(f) for f in self._faults]

    def _take_fault(self, target: str) -> Fault | None:
        # caller holds the lock
        for fault in self._faults:
            if fault.matches(target):
                taken = dataclasses.replace(fault)
                if fault.count > 0:
                    fault.count -= 1
                    if fault.count == 0:
                        self._faults.remove(fault)
                return taken
        return None

    def claim_total_pages(self, path_contains: str, total_pages: int) -> None:
        """List answers whose path contains `path_contains` claim `total_pages` (their items stay the real ones,
        so every page past the real end is empty): an upstream that lies about its paging."""
        if total_pages < 1:
            raise BadRequest("total_pages must be at least 1")
        with self._lock:
            self._claims.append((path_contains, int(total_pages)))

    def claimed_pages(self, path: str, real: int) -> int:
        """`total_pages` as a list answer of `path` tells it (caller holds the lock)."""
        for contains, pages in self._claims:
            if contains in path:
                return pages
        return real

    def requests(self) -> list[dict[str, Any]]:
        """The /api/v1 requests since the last stats reset (newest 50,000): monotonic arrival time, kind and the
        target as sent (path still percent-encoded, and the query)."""
        with self._lock:
            return [{"t": t, "kind": kind, "target": raw} for t, kind, raw in self.request_log]

    def set_latency(self, latency_ms: float) -> None:
        with self._lock:
            self.latency_ms = max(0.0, float(latency_ms))

    def set_max_in_flight(self, max_in_flight: int | None) -> None:
        with self._lock:
            self.max_in_flight_limit = max_in_flight

    def set_credentials(self, client_id: str, client_secret: str) -> None:
        with self._lock:
            self.client_id = client_id
            self.client_secret = client_secret

    # ------------------------------------------------------------------ tokens
    def issue_token(self, client_id: str, client_secret: str) -> str | None:
        with self._lock:
            if not (
                secrets.compare_digest(client_id, self.client_id)
                and secrets.compare_digest(client_secret, self.client_secret)
            ):
                return None
            now = time.monotonic()
            if len(self._tokens) > 1000:
                self._tokens = {t: exp for t, exp in self._tokens.items() if exp > now}
            token = secrets.token_urlsafe(24)
            self._tokens[token] = now + self.config.token_ttl_s
            return token

    def token_valid(self, token: str) -> bool:
        with self._lock:
            exp = self._tokens.get(token)
            return exp is not None and exp > time.monotonic()

    def issued_tokens(self) -> list[str]:
        """Every access token handed out and not yet expired by `expire_tokens` (tests look for leaks)."""
        with self._lock:
            return list(self._tokens)

    def expire_tokens(self) -> None:
        """Invalidate every issued token (the next data call gets 401)."""
        with self._lock:
            self._tokens.clear()

    # ------------------------------------------------------------------ stats
    def _reset_stats_locked(self) -> None:
        self.requests_total = 0
        self.requests_by_kind = dict.fromkeys(KINDS, 0)
        self.responses_by_status: dict[str, int] = {}
        self.in_flight_peak = 0
        self.rate_limited = 0
        self.faults_served = 0
        self.request_log: deque[tuple[float, str, str]] = deque(maxlen=50_000)
        # in_flight is live state, not a counter: keep it across a stats reset
        self.in_flight: int = getattr(self, "in_flight", 0)

    def reset_stats(self) -> None:
        """Zero the counters (``in_flight`` keeps counting live requests; the peak restarts from it)."""
        with self._lock:
            self._reset_stats_locked()
            self.in_flight_peak = self.in_flight

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {
                "requests_total": self.requests_total,
                "requests_by_kind": dict(self.requests_by_kind),
                "max_in_flight": self.in_flight_peak,
                "in_flight": self.in_flight,
                "responses_by_status": dict(self.responses_by_status),
                "rate_limited": self.rate_limited,
                "faults_served": self.faults_served,
                "faults_pending": [f.as_dict() for f in self._faults],
                "latency_ms": self.latency_ms,
            }

    def reset(self) -> None:
        """Regenerate the initial data from the config; clear faults and stats.

        Latency, rate limit and credentials return to the config's values; issued tokens stay valid.
        """
        with self._lock:
            self._reset_locked()
            self.in_flight_peak = self.in_flight
