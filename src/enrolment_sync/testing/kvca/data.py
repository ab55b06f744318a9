"""The simulator's generated Korean data: deterministic for one `SimulatorConfig` (`random.Random(seed)`).

* Categories: the root `category_id` (name `"33기"`, `parent_id` null) and `subcategories` children with ids
  `category_id+1 ..` named `"33기 1반"`, `"33기 2반"`, ...
* Courses: `courses` per category. Course ids are numbered globally, root first and then each subcategory in
  order: the course with global index `g` (0-based) has id `9001 + g`. So with `courses=3, subcategories=2`
  the root holds 9001-9003, subcategory 304 holds 9004-9006, etc. Names are Korean (`"투자심사 실무"`,
  `"재무제표 분석"`, ...), cycling with a suffix number (`"투자심사 실무 2"`) once the list is exhausted.
* Learners: `users` per course. The course with global index `g` holds user ids `u%06d` for
  `offset+1 .. offset+users` where `offset = g * users // 2`: consecutive courses share half of their
  learners, so many user ids appear in several courses of one category (and across the boundary between two
  categories).
* Status rows: `user_id, course_id, status, status_msg, gc_date, sjc_date, update_time` plus an unknown extra
  field `cohort_label` (the root category name). Mostly `IN_PROGRESS`; `status_msg` is the Korean text of the
  status (`STATUS_MSG`); `sjc_date` is only set for `COMPLETED`/`FAILED`; `gc_date` is null for some
  `ENROLLED` rows.
* Details: `user_id, course_id, progress_rate, attendance_rate, exam_score, completed, completion_date,
  update_time` plus the extra field `last_login_at`. `completed` is true iff the generated status is
  `COMPLETED`.
* Times: all `update_time` values are ISO 8601 with `+09:00`. Generated times lie before the fake clock start
  (2026-11-20T12:00:00+09:00); every mutation advances the fake clock by one second (see `state`), so repeated
  changes always get a strictly newer `update_time`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, timezone
from random import Random
from typing import Any

KST = timezone(timedelta(hours=9))
CLOCK_START = datetime(2026, 11, 20, 12, 0, 0, tzinfo=KST)
FIRST_COURSE_ID = 9001
ROOT_CATEGORY_NAME = "33기"

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

DETAIL_FIELDS = (
    "progress_rate",
    "attendance_rate",
    "exam_score",
    "completed",
    "completion_date",
    "update_time",
    "last_login_at",
)
ROW_UPDATE_FIELDS = ("status", "status_msg", "gc_date", "sjc_date")


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
class Course:
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


@dataclass
class Catalogue:
    """Everything generated: categories, their course ids (direct courses only) and the courses."""

    categories: dict[int, dict[str, Any]]
    category_courses: dict[int, list[int]]
    courses: dict[int, Course]


_DAY_CACHE: dict[int, str] = {}
_CLOCK_START_LOCAL_S = int(CLOCK_START.replace(tzinfo=UTC).timestamp())


def iso_before(seconds: int) -> str:
    """`(CLOCK_START - seconds).isoformat()`, fast (generation formats tens of thousands of times)."""
    day, rem = divmod(_CLOCK_START_LOCAL_S - seconds, 86400)
    day_s = _DAY_CACHE.get(day)
    if day_s is None:
        day_s = _DAY_CACHE[day] = date.fromordinal(date(1970, 1, 1).toordinal() + day).isoformat()
    return f"{day_s}T{rem // 3600:02d}:{rem // 60 % 60:02d}:{rem % 60:02d}+09:00"


def generate(cfg: SimulatorConfig) -> Catalogue:
    rng = Random(cfg.seed)
    root = cfg.category_id
    sub_ids = [root + i for i in range(1, cfg.subcategories + 1)]
    categories: dict[int, dict[str, Any]] = {
        root: {"id": root, "name": ROOT_CATEGORY_NAME, "parent_id": None, "subcategory_ids": list(sub_ids)}
    }
    for i, sid in enumerate(sub_ids, start=1):
        categories[sid] = {
            "id": sid,
            "name": f"{ROOT_CATEGORY_NAME} {i}반",
            "parent_id": root,
            "subcategory_ids": [],
        }
    category_courses: dict[int, list[int]] = {}
    courses: dict[int, Course] = {}
    g = 0
    for cat_id in [root, *sub_ids]:
        ids: list[int] = []
        for _ in range(cfg.courses):
            course_id = FIRST_COURSE_ID + g
            base = COURSE_NAMES[g % len(COURSE_NAMES)]
            cycle = g // len(COURSE_NAMES)
            name = base if cycle == 0 else f"{base} {cycle + 1}"
            start = date(2026, 8, 1) + timedelta(days=int(rng.random() * 30))
            course = Course(info={"id": course_id, "name": name, "category_id": cat_id}, start=start)
            offset = g * cfg.users // 2
            for n in range(offset + 1, offset + cfg.users + 1):
                uid = f"u{n:06d}"
                row, detail = make_enrolment(rng, course, uid, None)
                course.rows[uid] = row
                course.details[uid] = detail
            courses[course_id] = course
            ids.append(course_id)
            g += 1
        category_courses[cat_id] = ids
    return Catalogue(categories, category_courses, courses)


def _status(r: float) -> str:
    if r < 0.08:
        return "ENROLLED"
    if r < 0.78:
        return "IN_PROGRESS"
    if r < 0.90:
        return "COMPLETED"
    if r < 0.95:
        return "FAILED"
    return "CANCELLED"


def make_enrolment(rng: Random, course: Course, uid: str, status: str | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """One learner's status row and detail in `course`; `status` None draws one."""
    rand = rng.random
    r = rand()
    if status is None:
        status = _status(r)
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
        "update_time": iso_before(row_age),
        "cohort_label": ROOT_CATEGORY_NAME,
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
        "update_time": iso_before(row_age + int(rand() * 86400)),
        "last_login_at": iso_before(row_age + int(rand() * 7 * 86400)),
    }
    return row, detail
