"""In-process simulator of the KVCA upstream API (see ``/work/shared/upstream-contract.md``).

The simulator is a FastAPI app that implements the contract's endpoints, plus a set of ``/_control``
endpoints (no auth) used by the demo, the integration tests and the benchmarks to change data and to
inject faults.  The same operations are available as Python methods on :class:`SimulatorState`, which
is thread-safe (a lock guards every read and mutation), so a test can drive a
:class:`RunningSimulator` from its own thread while uvicorn serves on a background thread.

Generated data (deterministic for a given :class:`SimulatorConfig`, ``random.Random(seed)``):

* Categories: the root ``category_id`` (name ``"33기"``, ``parent_id`` null) and ``subcategories``
  children with ids ``category_id+1 ..`` named ``"33기 1반"``, ``"33기 2반"``, ...
* Courses: ``courses`` per category.  Course ids are numbered globally, root first and then each
  subcategory in order: the course with global index ``g`` (0-based) has id ``9001 + g``.  So with
  ``courses=3, subcategories=2`` the root holds 9001-9003, subcategory 304 holds 9004-9006, etc.
  Names are Korean (``"투자심사 실무"``, ``"재무제표 분석"``, ...), cycling with a suffix number
  (``"투자심사 실무 2"``) once the list is exhausted.
* Learners: ``users`` per course.  The course with global index ``g`` holds user ids
  ``u%06d`` for ``offset+1 .. offset+users`` where ``offset = g * users // 2``: consecutive courses
  share half of their learners, so many user ids appear in several courses of one category (and
  across the boundary between two categories).
* Status rows: ``user_id, course_id, status, status_msg, gc_date, sjc_date, update_time`` plus an
  unknown extra field ``cohort_label`` (the root category name).  Mostly ``IN_PROGRESS``;
  ``status_msg`` is the Korean text of the status (:data:`STATUS_MSG`); ``sjc_date`` is only set for
  ``COMPLETED``/``FAILED``; ``gc_date`` is null for some ``ENROLLED`` rows.
* Details: ``user_id, course_id, progress_rate, attendance_rate, exam_score, completed,
  completion_date, update_time`` plus the extra field ``last_login_at``.  ``completed`` is true iff
  the generated status is ``COMPLETED``.
* Times: all ``update_time`` values are ISO 8601 with ``+09:00``.  Generated times lie before the fake
  clock start (2026-11-20T12:00:00+09:00); every mutation advances the fake clock by one second, so
  repeated changes always get a strictly newer ``update_time``.

Mutation rules: updating a status row never touches its detail, except when the new status is
``COMPLETED`` (then the detail's ``completed``, ``completion_date`` and ``update_time`` change).  So
one learner's status change (to anything but ``COMPLETED``) is exactly one changed status row.  (The
detail is deliberately *not* changed when a row leaves ``COMPLETED``.)

Request pipeline for every ``/api/v1`` call: count it in the stats and in ``in_flight``; when
``max_in_flight`` is set and that many requests are already in flight, a data request (not the token
call) answers 429 with ``Retry-After: 1`` right away (it is still counted in ``in_flight`` while it is
answered, so ``max_in_flight`` in the stats shows what the client attempted); otherwise the first
queued fault matching the path (plus ``?query``) is consumed, the latency is slept, and the fault (or, for a timeout
fault, a hang of ``hang_s`` seconds followed by the normal answer) replaces the real answer.  A hang
ends early when the client disconnects or the server shuts down.  Then the bearer token is checked
(not for the token call) and the real handler answers.

Control endpoints (JSON, no auth, no latency): ``POST /_control/enrolments/{update,add,remove,
remove-detail-only}``, ``POST /_control/faults`` / ``DELETE /_control/faults``, ``POST
/_control/latency``, ``POST /_control/tokens/expire``, ``POST /_control/credentials``, ``GET
/_control/stats``, ``POST /_control/stats/reset``, ``POST /_control/reset``; extras beyond the brief:
``POST /_control/enrolments/update-detail`` (change detail fields), ``POST /_control/rate-limit``
(``{"max_in_flight": int|null}``) and ``GET /_control/faults`` (pending faults).  Control errors:
404 ``not_found`` (unknown course/learner), 409 ``conflict`` (add of an enrolled learner), 400
``bad_request``.  ``/_control/reset`` also restores latency, rate limit and credentials from the
config; issued tokens stay valid.

Paging: ``per_page`` defaults to 100 and is clamped to 1..100, ``page`` below 1 is treated as 1;
``total_pages`` is at least 1 (an empty list is one empty page); a page past the end has no items.
Non-integer paging parameters answer 400 ``{"error": "bad_request"}``.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import secrets
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, timezone
from random import Random
from types import TracebackType
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import Response

__all__ = [
    "COURSE_NAMES",
    "STATUSES",
    "STATUS_MSG",
    "Fault",
    "RunningSimulator",
    "SimulatorConfig",
    "SimulatorState",
    "create_app",
    "serve",
]

KST = timezone(timedelta(hours=9))
CLOCK_START = datetime(2026, 11, 20, 12, 0, 0, tzinfo=KST)
FIRST_COURSE_ID = 9001
MAX_PER_PAGE = 100

STATUS_MSG: dict[str, str] = {
    "ENROLLED": "수강신청",
    "IN_PROGRESS": "수강중",
    "COMPLETED": "수료",
    "FAILED": "미수료",
    "CANCELLED": "수강취소",
}
STATUSES: tuple[str, ...] = tuple(STATUS_MSG)

COURSE_NAMES: tuple[str, ...] = (
    "투자심사 실무",
    "재무제표 분석",
    "기업가치 평가",
    "벤처투자 법률",
    "스타트업 실사",
    "투자계약서 작성",
    "펀드 결성과 운용",
    "회수 전략",
    "산업 분석 방법론",
    "세무와 회계 기초",
    "사후관리 실무",
    "투자 윤리와 준법",
)

API_PREFIX = "/api/v1"
KINDS: tuple[str, ...] = ("token", "category", "courses", "enrolments", "detail")

_DETAIL_FIELDS = (
    "progress_rate",
    "attendance_rate",
    "exam_score",
    "completed",
    "completion_date",
    "update_time",
    "last_login_at",
)
_ROW_UPDATE_FIELDS = ("status", "status_msg", "gc_date", "sjc_date")


@dataclass
class SimulatorConfig:
    courses: int = 1  # courses per category
    users: int = 89  # learners per course
    latency_ms: float = 0.0  # added to every /api/v1 call (not control endpoints)
    seed: int = 33
    category_id: int = 303  # root category, name "33기"
    subcategories: int = 0  # children of the root (ids category_id+1 ...), each with `courses` courses
    client_id: str = "demo-client"
    client_secret: str = "demo-secret"
    token_ttl_s: int = 600
    max_in_flight: int | None = None  # data requests beyond this many in flight answer 429


@dataclass
class Fault:
    """One queued fault.  ``count`` -1 means forever."""

    status: int = 503
    count: int = 1
    path_contains: str | None = None
    retry_after: int | None = None
    timeout: bool = False
    hang_s: float = 30.0

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


@dataclass
class _Course:
    info: dict[str, Any]  # {"id", "name", "category_id"}
    start: date
    rows: dict[str, dict[str, Any]] = field(default_factory=dict)
    details: dict[str, dict[str, Any]] = field(default_factory=dict)
    gc_dates: tuple[str, ...] = ()
    sjc_dates: tuple[str, ...] = ()
    _sorted: list[str] | None = None

    def __post_init__(self) -> None:
        self.gc_dates = tuple((self.start + timedelta(days=d)).isoformat() for d in range(30))
        self.sjc_dates = tuple((self.start + timedelta(days=60 + d)).isoformat() for d in range(20))

    def sorted_user_ids(self) -> list[str]:
        if self._sorted is None:
            self._sorted = sorted(self.rows)
        return self._sorted

    def invalidate(self) -> None:
        self._sorted = None


def _iso(dt: datetime) -> str:
    return dt.isoformat()


_DAY_CACHE: dict[int, str] = {}
_CLOCK_START_LOCAL_S = int(CLOCK_START.replace(tzinfo=UTC).timestamp())


def _iso_before(seconds: int) -> str:
    """``(CLOCK_START - seconds).isoformat()``, fast (generation formats tens of thousands of times)."""
    day, rem = divmod(_CLOCK_START_LOCAL_S - seconds, 86400)
    day_s = _DAY_CACHE.get(day)
    if day_s is None:
        day_s = _DAY_CACHE[day] = date.fromordinal(date(1970, 1, 1).toordinal() + day).isoformat()
    return f"{day_s}T{rem // 3600:02d}:{rem // 60 % 60:02d}:{rem % 60:02d}+09:00"


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()


def _json(status: int, obj: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(content=_dumps(obj), status_code=status, media_type="application/json", headers=headers)


def _error_body(status: int) -> dict[str, str]:
    if status == 401:
        return {"error": "invalid_token"}
    if status == 404:
        return {"error": "not_found"}
    if status == 409:
        return {"error": "conflict"}
    if status == 429:
        return {"error": "rate_limited"}
    if status >= 500:
        return {"error": "upstream_error"}
    if status == 403:
        return {"error": "forbidden"}
    return {"error": "bad_request"}


def _paging(items_total: int, page: int, per_page: int) -> tuple[int, int, int]:
    """Return (start, end, total_pages) for 1-based ``page``."""
    total_pages = max(1, -(-items_total // per_page))
    start = (page - 1) * per_page
    return start, min(start + per_page, items_total), total_pages


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

    # ------------------------------------------------------------------ generation
    def _reset_locked(self) -> None:
        cfg = self.config
        self.latency_ms = float(cfg.latency_ms)
        self.max_in_flight_limit = cfg.max_in_flight
        self.client_id = cfg.client_id
        self.client_secret = cfg.client_secret
        self._clock = CLOCK_START
        self._faults.clear()
        self._reset_stats_locked()
        self._generate()

    def _generate(self) -> None:
        cfg = self.config
        rng = Random(cfg.seed)
        root = cfg.category_id
        root_name = "33기"
        sub_ids = [root + i for i in range(1, cfg.subcategories + 1)]
        self._root_name = root_name
        self.categories: dict[int, dict[str, Any]] = {
            root: {"id": root, "name": root_name, "parent_id": None, "subcategory_ids": list(sub_ids)}
        }
        for i, sid in enumerate(sub_ids, start=1):
            self.categories[sid] = {
                "id": sid,
                "name": f"{root_name} {i}반",
                "parent_id": root,
                "subcategory_ids": [],
            }
        self.category_courses: dict[int, list[int]] = {}
        self.courses: dict[int, _Course] = {}
        g = 0
        for cat_id in [root, *sub_ids]:
            ids: list[int] = []
            for _ in range(cfg.courses):
                course_id = FIRST_COURSE_ID + g
                base = COURSE_NAMES[g % len(COURSE_NAMES)]
                cycle = g // len(COURSE_NAMES)
                name = base if cycle == 0 else f"{base} {cycle + 1}"
                start = date(2026, 8, 1) + timedelta(days=int(rng.random() * 30))
                course = _Course(info={"id": course_id, "name": name, "category_id": cat_id}, start=start)
                offset = g * cfg.users // 2
                for n in range(offset + 1, offset + cfg.users + 1):
                    uid = f"u{n:06d}"
                    row, detail = self._make_enrolment(rng, course, uid, None)
                    course.rows[uid] = row
                    course.details[uid] = detail
                self.courses[course_id] = course
                ids.append(course_id)
                g += 1
            self.category_courses[cat_id] = ids

    def _make_enrolment(
        self, rng: Random, course: _Course, uid: str, status: str | None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        rand = rng.random
        r = rand()
        if status is None:
            if r < 0.08:
                status = "ENROLLED"
            elif r < 0.78:
                status = "IN_PROGRESS"
            elif r < 0.90:
                status = "COMPLETED"
            elif r < 0.95:
                status = "FAILED"
            else:
                status = "CANCELLED"
        gc_date: str | None = course.gc_dates[int(rand() * len(course.gc_dates))]
        if status == "ENROLLED" and rand() < 0.5:
            gc_date = None
        sjc_date: str | None = None
        if status in ("COMPLETED", "FAILED"):
            sjc_date = course.sjc_dates[int(rand() * len(course.sjc_dates))]
        # seconds before the fake clock start
        row_age = 3600 + int(rand() * (30 * 86400 - 3600))
        row = {
            "user_id": uid,
            "course_id": course.info["id"],
            "status": status,
            "status_msg": STATUS_MSG[status],
            "gc_date": gc_date,
            "sjc_date": sjc_date,
            "update_time": _iso_before(row_age),
            "cohort_label": self._root_name,
        }
        exam: float | None = None
        if status == "ENROLLED":
            progress, attendance = 0.0, 0.0
        elif status == "IN_PROGRESS":
            progress = round((1.0 + rand() * 98.0) * 2) / 2
            attendance = round(40.0 + rand() * 60.0, 1)
            if rand() < 0.3:
                exam = round(30.0 + rand() * 70.0, 1)
        elif status == "COMPLETED":
            progress = round((80.0 + rand() * 20.0) * 2) / 2
            attendance = round(80.0 + rand() * 20.0, 1)
            exam = round(60.0 + rand() * 40.0, 1)
        elif status == "FAILED":
            progress = round((10.0 + rand() * 69.5) * 2) / 2
            attendance = round(20.0 + rand() * 59.9, 1)
            exam = round(rand() * 59.9, 1) if rand() < 0.7 else None
        else:  # CANCELLED
            progress = round(rand() * 20.0 * 2) / 2
            attendance = round(rand() * 30.0, 1)
        detail = {
            "user_id": uid,
            "course_id": course.info["id"],
            "progress_rate": progress,
            "attendance_rate": attendance,
            "exam_score": exam,
            "completed": status == "COMPLETED",
            "completion_date": sjc_date if status == "COMPLETED" else None,
            "update_time": _iso_before(row_age + int(rand() * 86400)),
            "last_login_at": _iso_before(row_age + int(rand() * 7 * 86400)),
        }
        return row, detail

    def _tick(self) -> datetime:
        self._clock += timedelta(seconds=1)
        return self._clock

    # ------------------------------------------------------------------ lookups
    def _course(self, course_id: int) -> _Course:
        course = self.courses.get(course_id)
        if course is None:
            raise NotFound(f"unknown course {course_id}")
        return course

    def _row(self, course_id: int, user_id: str) -> tuple[_Course, dict[str, Any]]:
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
        unknown = set(fields) - set(_ROW_UPDATE_FIELDS)
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
            row["update_time"] = _iso(now)
            if status == "COMPLETED":
                detail = course.details.get(user_id)
                if detail is not None:
                    detail["completed"] = True
                    detail["completion_date"] = row["sjc_date"] or now.date().isoformat()
                    detail["update_time"] = _iso(now)
            return dict(row)

    def update_detail(self, course_id: int, user_id: str, **fields: Any) -> dict[str, Any]:
        """Change detail fields (progress_rate, attendance_rate, exam_score, ...); bumps update_time."""
        unknown = set(fields) - set(_DETAIL_FIELDS)
        if unknown:
            raise BadRequest(f"unknown fields: {sorted(unknown)}")
        with self._lock:
            detail = self._course(course_id).details.get(user_id)
            if detail is None:
                raise NotFound(f"no detail for {user_id} in course {course_id}")
            now = self._tick()
            detail.update(fields)
            if "update_time" not in fields:
                detail["update_time"] = _iso(now)
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
            row, detail = self._make_enrolment(rng, course, user_id, status)
            now = self._tick()
            row["update_time"] = _iso(now)
            detail["update_time"] = _iso(now)
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
    ) -> Fault:
        """Queue a fault (FIFO) consumed by matching /api/v1 requests; ``count=-1`` means forever."""
        if count == 0 or count < -1:
            raise BadRequest("count must be positive or -1")
        if not timeout and not (400 <= int(status) <= 599):
            raise BadRequest("status must be a 4xx or 5xx code")
        fault = Fault(
            status=int(status),
            count=int(count),
            path_contains=path_contains,
            retry_after=retry_after,
            timeout=bool(timeout),
            hang_s=float(hang_s),
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


# ---------------------------------------------------------------------- the app


def _int_param(request: Request, name: str, default: int) -> int:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    return int(raw)


def _bearer(request: Request) -> str | None:
    auth = request.headers.get("authorization")
    if not auth:
        return None
    scheme, _, token = auth.partition(" ")
    if scheme.lower() != "bearer" or not token:
        return None
    return token.strip()


class _Api:
    """The /api/v1 handlers bound to one state."""

    def __init__(self, state: SimulatorState) -> None:
        self.state = state

    async def run(self, request: Request, kind: str, handler: Callable[[], Response]) -> Response:
        st = self.state
        scope = request.scope
        target: str = scope["path"]
        qs: bytes = scope.get("query_string", b"")
        if qs:
            target = f"{target}?{qs.decode('latin-1')}"
        with st._lock:
            st.requests_total += 1
            st.requests_by_kind[kind] += 1
            limit = st.max_in_flight_limit
            rejected = limit is not None and kind != "token" and st.in_flight >= limit
            st.in_flight += 1
            if st.in_flight > st.in_flight_peak:
                st.in_flight_peak = st.in_flight
            fault = None if rejected else st._take_fault(target)
            latency = st.latency_ms
        status = 500
        try:
            if rejected:
                with st._lock:
                    st.rate_limited += 1
                response = _json(429, {"error": "rate_limited"}, {"Retry-After": "1"})
            else:
                if latency > 0:
                    await asyncio.sleep(latency / 1000.0)
                if fault is not None and fault.timeout:
                    await self._hang(request, fault.hang_s)
                    fault = None
                if fault is not None:
                    with st._lock:
                        st.faults_served += 1
                    retry_after = fault.retry_after
                    headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
                    response = _json(fault.status, _error_body(fault.status), headers)
                elif kind != "token" and not self._authorised(request):
                    response = _json(401, {"error": "invalid_token"})
                else:
                    response = handler()
            status = response.status_code
            return response
        finally:
            key = str(status)
            with st._lock:
                st.in_flight -= 1
                st.responses_by_status[key] = st.responses_by_status.get(key, 0) + 1

    def _authorised(self, request: Request) -> bool:
        token = _bearer(request)
        return token is not None and self.state.token_valid(token)

    async def _hang(self, request: Request, hang_s: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + hang_s
        while not self.state.shutting_down:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            await asyncio.sleep(min(0.05, remaining))
            if await request.is_disconnected():
                return

    # handlers: called with the request already authorised; they take the lock for consistency
    def token(self, body: bytes) -> Response:
        try:
            data = json.loads(body or b"null")
        except ValueError:
            return _json(400, {"error": "bad_request"})
        if not isinstance(data, dict):
            return _json(400, {"error": "bad_request"})
        client_id, client_secret = data.get("client_id"), data.get("client_secret")
        if not isinstance(client_id, str) or not isinstance(client_secret, str):
            return _json(401, {"error": "invalid_client"})
        token = self.state.issue_token(client_id, client_secret)
        if token is None:
            return _json(401, {"error": "invalid_client"})
        return _json(200, {"access_token": token, "token_type": "Bearer", "expires_in": self.state.config.token_ttl_s})

    def category(self, request: Request) -> Response:
        try:
            cat_id = int(request.path_params["category_id"])
        except ValueError:
            return _json(404, {"error": "not_found"})
        st = self.state
        with st._lock:
            cat = st.categories.get(cat_id)
            if cat is None:
                return _json(404, {"error": "not_found"})
            return _json(200, cat)

    def courses(self, request: Request) -> Response:
        try:
            cat_id = int(request.path_params["category_id"])
        except ValueError:
            return _json(404, {"error": "not_found"})
        try:
            page, per_page = self._page_args(request)
        except ValueError:
            return _json(400, {"error": "bad_request"})
        st = self.state
        with st._lock:
            ids = st.category_courses.get(cat_id)
            if ids is None:
                return _json(404, {"error": "not_found"})
            start, end, total_pages = _paging(len(ids), page, per_page)
            items = [st.courses[c].info for c in ids[start:end]]
            return _json(
                200,
                {
                    "items": items,
                    "page": page,
                    "per_page": per_page,
                    "total_pages": total_pages,
                    "total_items": len(ids),
                },
            )

    def enrolments(self, request: Request) -> Response:
        try:
            course_id = int(request.path_params["course_id"])
        except ValueError:
            return _json(404, {"error": "not_found"})
        try:
            page, per_page = self._page_args(request)
        except ValueError:
            return _json(400, {"error": "bad_request"})
        st = self.state
        with st._lock:
            course = st.courses.get(course_id)
            if course is None:
                return _json(404, {"error": "not_found"})
            uids = course.sorted_user_ids()
            start, end, total_pages = _paging(len(uids), page, per_page)
            rows = course.rows
            items = [rows[u] for u in uids[start:end]]
            return _json(
                200,
                {
                    "items": items,
                    "page": page,
                    "per_page": per_page,
                    "total_pages": total_pages,
                    "total_items": len(uids),
                },
            )

    def detail(self, request: Request) -> Response:
        params = request.path_params
        try:
            course_id = int(params["course_id"])
        except ValueError:
            return _json(404, {"error": "not_found"})
        st = self.state
        with st._lock:
            course = st.courses.get(course_id)
            detail = course.details.get(params["user_id"]) if course is not None else None
            if detail is None:
                return _json(404, {"error": "not_found"})
            return _json(200, detail)

    @staticmethod
    def _page_args(request: Request) -> tuple[int, int]:
        page = max(1, _int_param(request, "page", 1))
        per_page = min(MAX_PER_PAGE, max(1, _int_param(request, "per_page", MAX_PER_PAGE)))
        return page, per_page


async def _body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if not raw:
        return {}
    data = json.loads(raw)
    if not isinstance(data, dict):
        raise BadRequest("body must be a JSON object")
    return data


def _control_error(exc: Exception) -> Response:
    if isinstance(exc, NotFound):
        return _json(404, {"error": "not_found", "detail": str(exc)})
    if isinstance(exc, Conflict):
        return _json(409, {"error": "conflict", "detail": str(exc)})
    return _json(400, {"error": "bad_request", "detail": str(exc)})


def _course_user(data: dict[str, Any]) -> tuple[int, str]:
    try:
        course_id = int(data["course_id"])
        user_id = data["user_id"]
    except (KeyError, TypeError, ValueError) as exc:
        raise BadRequest("course_id (int) and user_id (str) are required") from exc
    if not isinstance(user_id, str):
        raise BadRequest("user_id must be a string")
    return course_id, user_id


def _optional_int(value: Any, name: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise BadRequest(f"{name} must be an integer")
    return int(value)


def create_app(config: SimulatorConfig | None = None) -> FastAPI:
    """Build the simulator app; ``app.state.sim`` is its :class:`SimulatorState`."""
    state = SimulatorState(config)
    api = _Api(state)
    app = FastAPI(title="KVCA upstream simulator", version="1", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.sim = state

    # ---------------------------------------------------------------- contract endpoints
    @app.post(f"{API_PREFIX}/auth/token")
    async def token(request: Request) -> Response:
        body = await request.body()
        return await api.run(request, "token", lambda: api.token(body))

    @app.get(API_PREFIX + "/categories/{category_id}")
    async def category(request: Request) -> Response:
        return await api.run(request, "category", lambda: api.category(request))

    @app.get(API_PREFIX + "/categories/{category_id}/courses")
    async def courses(request: Request) -> Response:
        return await api.run(request, "courses", lambda: api.courses(request))

    @app.get(API_PREFIX + "/courses/{course_id}/enrolments")
    async def enrolments(request: Request) -> Response:
        return await api.run(request, "enrolments", lambda: api.enrolments(request))

    @app.get(API_PREFIX + "/courses/{course_id}/enrolments/{user_id}")
    async def detail(request: Request) -> Response:
        return await api.run(request, "detail", lambda: api.detail(request))

    # ---------------------------------------------------------------- control endpoints
    async def control(request: Request, op: Callable[[dict[str, Any]], Any]) -> Response:
        try:
            data = await _body(request)
            result = op(data)
        except json.JSONDecodeError as exc:
            return _json(400, {"error": "bad_request", "detail": str(exc)})
        except (SimulatorError, TypeError, ValueError) as exc:
            return _control_error(exc)
        return _json(200, result if result is not None else {"ok": True})

    def _update(data: dict[str, Any]) -> Any:
        course_id, user_id = _course_user(data)
        fields = {k: data[k] for k in _ROW_UPDATE_FIELDS if k in data}
        return state.update_enrolment(course_id, user_id, **fields)

    def _update_detail(data: dict[str, Any]) -> Any:
        course_id, user_id = _course_user(data)
        fields = {k: data[k] for k in _DETAIL_FIELDS if k in data}
        return state.update_detail(course_id, user_id, **fields)

    def _remove(data: dict[str, Any]) -> Any:
        state.remove_enrolment(*_course_user(data))
        return None

    def _unlist_course(data: dict[str, Any]) -> Any:
        state.unlist_course(int(data["course_id"]))
        return None

    def _remove_detail(data: dict[str, Any]) -> Any:
        state.remove_detail_only(*_course_user(data))
        return None

    def _add(data: dict[str, Any]) -> Any:
        course_id, user_id = _course_user(data)
        return state.add_enrolment(course_id, user_id, data.get("status") or "ENROLLED")

    def _fault(data: dict[str, Any]) -> Any:
        status = _optional_int(data.get("status", 503), "status")
        count = _optional_int(data.get("count", 1), "count")
        hang_s = data.get("hang_s", 30.0)
        if not isinstance(hang_s, int | float) or isinstance(hang_s, bool):
            raise BadRequest("hang_s must be a number")
        path_contains = data.get("path_contains")
        if path_contains is not None and not isinstance(path_contains, str):
            raise BadRequest("path_contains must be a string or null")
        fault = state.add_fault(
            status=503 if status is None else status,
            count=1 if count is None else count,
            path_contains=path_contains,
            retry_after=_optional_int(data.get("retry_after"), "retry_after"),
            timeout=bool(data.get("timeout", False)),
            hang_s=float(hang_s),
        )
        return {"ok": True, "fault": fault.as_dict(), "pending": len(state.faults())}

    def _latency(data: dict[str, Any]) -> Any:
        value = data.get("latency_ms")
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise BadRequest("latency_ms must be a number")
        state.set_latency(value)
        return {"ok": True, "latency_ms": state.latency_ms}

    def _credentials(data: dict[str, Any]) -> Any:
        cid, secret = data.get("client_id"), data.get("client_secret")
        if not isinstance(cid, str) or not isinstance(secret, str):
            raise BadRequest("client_id and client_secret (str) are required")
        state.set_credentials(cid, secret)
        return None

    def _rate_limit(data: dict[str, Any]) -> Any:
        state.set_max_in_flight(_optional_int(data.get("max_in_flight"), "max_in_flight"))
        return {"ok": True, "max_in_flight": state.max_in_flight_limit}

    def _expire(_: dict[str, Any]) -> Any:
        state.expire_tokens()
        return None

    def _reset(_: dict[str, Any]) -> Any:
        state.reset()
        return None

    def _reset_stats(_: dict[str, Any]) -> Any:
        state.reset_stats()
        return None

    routes: dict[str, Callable[[dict[str, Any]], Any]] = {
        "/_control/enrolments/update": _update,
        "/_control/enrolments/update-detail": _update_detail,
        "/_control/enrolments/remove": _remove,
        "/_control/courses/unlist": _unlist_course,
        "/_control/enrolments/add": _add,
        "/_control/enrolments/remove-detail-only": _remove_detail,
        "/_control/faults": _fault,
        "/_control/latency": _latency,
        "/_control/rate-limit": _rate_limit,
        "/_control/credentials": _credentials,
        "/_control/tokens/expire": _expire,
        "/_control/stats/reset": _reset_stats,
        "/_control/reset": _reset,
    }

    def _register(path: str, op: Callable[[dict[str, Any]], Any]) -> None:
        async def endpoint(request: Request) -> Response:
            return await control(request, op)

        app.add_api_route(path, endpoint, methods=["POST"], include_in_schema=False)

    for path, op in routes.items():
        _register(path, op)

    @app.delete("/_control/faults", include_in_schema=False)
    async def clear_faults() -> Response:
        state.clear_faults()
        return _json(200, {"ok": True})

    @app.get("/_control/faults", include_in_schema=False)
    async def list_faults() -> Response:
        return _json(200, {"faults": [f.as_dict() for f in state.faults()]})

    @app.get("/_control/stats", include_in_schema=False)
    async def stats() -> Response:
        return _json(200, state.stats())

    return app


# ---------------------------------------------------------------------- running it


def _uvicorn_config(app: FastAPI, host: str, port: int, graceful_s: int | None) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        loop="auto",
        http="auto",
        log_level="warning",
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=graceful_s,
    )


class RunningSimulator:
    """Context manager running the simulator with uvicorn on a background thread (127.0.0.1).

    ``port=0`` binds an ephemeral free port.  ``__enter__`` returns once the server accepts
    connections; ``__exit__`` stops it (in-flight hangs from timeout faults end early).
    """

    def __init__(
        self, config: SimulatorConfig | None = None, *, port: int = 0, startup_timeout_s: float = 10.0
    ) -> None:
        self.config = config if config is not None else SimulatorConfig()
        self.app = create_app(self.config)
        self.state: SimulatorState = self.app.state.sim
        self.host = "127.0.0.1"
        self.port = port
        self.base_url = ""
        self._requested_port = port
        self._startup_timeout_s = startup_timeout_s
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._sock: socket.socket | None = None
        self._error: BaseException | None = None

    def _run(self, server: uvicorn.Server, sock: socket.socket) -> None:
        try:
            server.run(sockets=[sock])
        except BaseException as exc:  # surfaced by __enter__; SystemExit from a failed startup too
            self._error = exc

    def __enter__(self) -> RunningSimulator:
        if self._thread is not None:
            raise RuntimeError("simulator already running")
        self.state.shutting_down = False
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host, self._requested_port))
        except OSError:
            sock.close()
            raise
        self.port = sock.getsockname()[1]
        self.base_url = f"http://{self.host}:{self.port}"
        server = uvicorn.Server(_uvicorn_config(self.app, self.host, self.port, graceful_s=5))
        self._sock, self._server, self._error = sock, server, None
        self._thread = threading.Thread(
            target=self._run, args=(server, sock), name=f"kvca-simulator-{self.port}", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + self._startup_timeout_s
        while not server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                error = self._error
                self._stop()
                raise RuntimeError(f"simulator failed to start on {self.base_url}") from error
            time.sleep(0.005)
        return self

    def _stop(self) -> None:
        self.state.shutting_down = True
        server, thread, sock = self._server, self._thread, self._sock
        if server is not None:
            server.should_exit = True
        if thread is not None:
            thread.join(timeout=10.0)
            if thread.is_alive() and server is not None:
                server.force_exit = True
                thread.join(timeout=5.0)
        if sock is not None:
            sock.close()
        self._server = self._thread = self._sock = None

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop()

    def url(self, path: str) -> str:
        return f"{self.base_url}{path}"


def serve(config: SimulatorConfig, *, host: str = "127.0.0.1", port: int = 18081) -> None:
    """Run the simulator in the foreground (blocking) — for the CLI."""
    uvicorn.Server(_uvicorn_config(create_app(config), host, port, graceful_s=2)).run()


def _parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, SimulatorConfig]:
    parser = argparse.ArgumentParser(description="Run the KVCA upstream simulator.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=18081)
    defaults = SimulatorConfig()
    for f in dataclasses.fields(SimulatorConfig):
        value = getattr(defaults, f.name)
        kind: Callable[[str], Any] = type(value) if value is not None else int
        parser.add_argument(f"--{f.name.replace('_', '-')}", type=kind, default=value)
    ns = parser.parse_args(argv)
    cfg = SimulatorConfig(**{f.name: getattr(ns, f.name) for f in dataclasses.fields(SimulatorConfig)})
    return ns, cfg


def main(argv: list[str] | None = None) -> None:
    """``python -m enrolment_sync.kvca.simulator --courses 3 --users 200 --port 18081``."""
    ns, cfg = _parse_args(argv)
    serve(cfg, host=ns.host, port=ns.port)


if __name__ == "__main__":
    main()
