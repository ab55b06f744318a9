"""What the console shows, decided from rows (pure): KST times, durations, filters, pages, chart series."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from .. import alerts as alert_rules
from ..alerts import SilenceSpec, parse_kst, silence_spec

# Korea has no daylight saving time: a fixed offset needs no tz database (Windows ships none).
KST = dt.timezone(dt.timedelta(hours=9), "KST")
PAGE_SIZE = 50
RUN_STATUSES = ("RUNNING", "SUCCESS", "FAILED")
TRIGGER_TYPES = ("MANUAL", "SCHEDULER", "RETRY")
ALERT_TYPES = ("CHANGED", "FAILED", "STALE", "DEAD_LETTER", "UPSTREAM_DATA")
SEVERITIES = ("high", "medium", "low")
QUEUES = {"sheet": "sheet_outbox", "notification": "notification_outbox"}

STATUS_KO = {
    "RUNNING": "실행 중",
    "SUCCESS": "성공",
    "FAILED": "실패",
    "PENDING": "대기",
    "PROCESSING": "처리 중",
    "DONE": "완료",
    "DEAD": "보류(dead)",
}
TRIGGER_KO = {"MANUAL": "수동", "SCHEDULER": "스케줄", "RETRY": "재시도"}
SEVERITY_KO = {"high": "높음", "medium": "보통", "low": "낮음"}
ALERT_TYPE_KO = {
    "CHANGED": "변경",
    "FAILED": "실패",
    "STALE": "지연",
    "DEAD_LETTER": "보류 메시지",
    "UPSTREAM_DATA": "원천 데이터",
}
ENROLMENT_KO = {
    "ENROLLED": "수강신청",
    "IN_PROGRESS": "수강중",
    "COMPLETED": "수료",
    "FAILED": "미수료",
    "CANCELLED": "수강취소",
}


def kst(value: dt.datetime | None, *, seconds: bool = True) -> str:
    """A UTC timestamp as people in Korea read it: 2026-11-23 13:05:09 (KST)."""
    if value is None:
        return "-"
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.astimezone(KST).strftime("%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M")


def duration(value: float | Decimal | None) -> str:
    """0.4초, 12초, 3분 5초, 2시간 10분, 3일 4시간."""
    if value is None:
        return "-"
    seconds = float(value)
    if seconds < 10:
        return f"{seconds:.1f}초"
    whole = round(seconds)
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}일 {hours}시간"
    if hours:
        return f"{hours}시간 {minutes}분"
    if minutes:
        return f"{minutes}분 {secs}초"
    return f"{secs}초"


def age(since: dt.datetime | None, now: dt.datetime) -> str:
    if since is None:
        return "-"
    return duration(max(0.0, (now - since).total_seconds()))


def positive_int(raw: str | None) -> int | None:
    """A query-string id: a positive integer, or None when absent or unusable."""
    if raw is None or not raw.strip().isdigit():
        return None
    value = int(raw.strip())
    return value if 0 < value < 2**63 else None


def one_of(raw: str | None, allowed: Iterable[str]) -> str | None:
    return raw if raw in set(allowed) else None


@dataclass(frozen=True)
class RunFilter:
    status: str | None = None
    trigger_type: str | None = None
    category_id: int | None = None
    before_id: int | None = None

    @classmethod
    def parse(cls, params: Mapping[str, str]) -> RunFilter:
        return cls(
            status=one_of(params.get("status"), RUN_STATUSES),
            trigger_type=one_of(params.get("trigger_type"), TRIGGER_TYPES),
            category_id=positive_int(params.get("category_id")),
            before_id=positive_int(params.get("before_id")),
        )

    def query(self, **changes: Any) -> dict[str, Any]:
        values = {
            "status": self.status,
            "trigger_type": self.trigger_type,
            "category_id": self.category_id,
            "before_id": self.before_id,
        }
        values.update(changes)
        return {k: v for k, v in values.items() if v is not None}


@dataclass(frozen=True)
class AlertFilter:
    alert_type: str | None = None
    severity: str | None = None
    before_id: int | None = None
    show_all: bool = False

    @classmethod
    def parse(cls, params: Mapping[str, str]) -> AlertFilter:
        return cls(
            alert_type=one_of(params.get("alert_type"), ALERT_TYPES),
            severity=one_of(params.get("severity"), SEVERITIES),
            before_id=positive_int(params.get("before_id")),
            show_all=params.get("state") == "all",
        )


@dataclass(frozen=True)
class Page:
    """One keyset page: the rows shown, and the id to continue before (None on the last page)."""

    rows: list[dict[str, Any]]
    next_before_id: int | None


def page(rows: Sequence[dict[str, Any]], size: int = PAGE_SIZE) -> Page:
    """Rows fetched with `limit size + 1`: the extra row only says there is a next page."""
    shown = list(rows[:size])
    more = len(rows) > size
    return Page(shown, int(shown[-1]["id"]) if more and shown else None)


def like_prefix(text: str) -> str:
    """A LIKE pattern matching ids that start with `text` (its own % and _ taken literally)."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped + "%"


def learner_query(q: str | None) -> tuple[str, str | int] | None:
    """How to search a cohort: digits are a course id, anything else a learner id prefix."""
    text = (q or "").strip()
    if not text:
        return None
    if text.isdigit() and len(text) < 19:
        return ("course", int(text))
    return ("user", text[:100])


def next_slots(schedules: Iterable[tuple[int, dt.datetime | None]]) -> dict[int, dt.datetime]:
    """The earliest next slot of each cohort's enabled schedules."""
    soonest: dict[int, dt.datetime] = {}
    for category_id, slot in schedules:
        if slot is not None and (category_id not in soonest or slot < soonest[category_id]):
            soonest[category_id] = slot
    return soonest


def schedule_lines(schedules: Sequence[dict[str, Any]], slots: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each schedule with its last slots (newest first)."""
    by_schedule: dict[int, list[dict[str, Any]]] = {}
    for slot in slots:
        by_schedule.setdefault(int(slot["schedule_id"]), []).append(slot)
    return [{**s, "slots": by_schedule.get(int(s["id"]), [])} for s in schedules]


def cohort_lines(
    cohorts: Sequence[dict[str, Any]],
    open_alerts: Sequence[dict[str, Any]],
    next_slot_at: Mapping[int, dt.datetime] | None = None,
) -> list[dict[str, Any]]:
    """The overview's one line per cohort, with its open alerts counted by severity and its next slot."""
    counts: dict[int | None, Counter[str]] = {}
    for row in open_alerts:
        counts.setdefault(row["category_id"], Counter())[row["severity"]] += int(row["cnt"])
    lines = []
    for cohort in cohorts:
        open_counts = counts.get(cohort["category_id"], Counter())
        lines.append(
            {
                **cohort,
                "open_alerts": {s: open_counts.get(s, 0) for s in SEVERITIES},
                "next_slot_at": (next_slot_at or {}).get(cohort["category_id"]),
            }
        )
    return lines


def unassigned_open_alerts(cohorts: Sequence[dict[str, Any]], open_alerts: Sequence[dict[str, Any]]) -> int:
    """Open alerts that belong to no listed cohort (dead-letter alerts, for example)."""
    known = {c["category_id"] for c in cohorts}
    return sum(int(r["cnt"]) for r in open_alerts if r["category_id"] not in known)


def run_chart(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Chart.js series for a cohort's recent runs, oldest first, and its failures by group."""
    ordered = sorted(runs, key=lambda r: r["id"])
    failures = Counter(str(r["error_group"] or "UNKNOWN") for r in ordered if r["status"] == "FAILED")
    return {
        "labels": [f"#{r['id']}" for r in ordered],
        "duration_s": [round(float(r["duration_s"]), 2) if r["duration_s"] is not None else None for r in ordered],
        "records": [int(r["total_records"]) for r in ordered],
        "changes": [int(r["changed_records"]) for r in ordered],
        "status": [str(r["status"]) for r in ordered],
        "failure_groups": sorted(failures),
        "failure_counts": [failures[g] for g in sorted(failures)],
    }


def distribution(rows: Sequence[dict[str, Any]], row_key: str, col_key: str = "severity") -> dict[str, Any]:
    """A small table of counts (3-4, 4-3): rows by `row_key`, columns by severity, with totals."""
    cells: dict[str, Counter[str]] = {}
    for r in rows:
        cells.setdefault(str(r[row_key] or "-"), Counter())[str(r[col_key])] += int(r["cnt"])
    return {
        "rows": [
            {"key": k, "cells": [c.get(s, 0) for s in SEVERITIES], "total": sum(c.values())}
            for k, c in sorted(cells.items())
        ],
        "columns": list(SEVERITIES),
        "total": sum(sum(c.values()) for c in cells.values()),
    }


SILENCE_ALERT_TYPES = alert_rules.ALERT_TYPES  # a silence's types (the table's check); UPSTREAM_DATA is not one
SILENCE_FIELDS = {
    "category_id": "기수(category_id)",
    "alert_type": "유형(alert_type)",
    "severity": "등급(severity)",
    "starts_at": "시작(starts_at)",
    "ends_at": "끝(ends_at)",
    "comment": "사유(comment)",
}
_SPEC_ERRORS = [  # silence_spec's message -> the form field it is about
    ("alert type", "alert_type"),
    ("severity", "severity"),
    ("a silence needs a category", "category_id"),
    ("start and end", "ends_at"),
    ("the end", "ends_at"),
    ("a silence needs a comment", "comment"),
]


class SilenceFormError(ValueError):
    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{SILENCE_FIELDS[field]} 이(가) 잘못되었습니다: {reason}")
        self.field = field


def silence_from_form(form: Mapping[str, str], *, now: dt.datetime) -> SilenceSpec:
    """A silence from the console's form (times typed in KST; start empty = now); SilenceFormError names the field."""

    def text(name: str) -> str | None:
        return (form.get(name) or "").strip() or None

    category = text("category_id")
    if category is not None and (not category.isdigit() or int(category) <= 0):
        raise SilenceFormError("category_id", f"양의 정수여야 합니다 (입력: {category!r})")
    times: dict[str, dt.datetime] = {"starts_at": now}
    for name in ("starts_at", "ends_at"):
        typed = text(name)
        if typed is None:
            if name == "ends_at":
                raise SilenceFormError(name, "끝나는 시각을 입력하세요 (KST)")
            continue
        try:
            times[name] = parse_kst(typed)
        except ValueError as exc:
            raise SilenceFormError(name, str(exc)) from None
    try:
        return silence_spec(
            category_id=int(category) if category else None,
            alert_type=text("alert_type"),
            severity=text("severity"),
            starts_at=times["starts_at"],
            ends_at=times["ends_at"],
            comment=form.get("comment") or "",
        )
    except ValueError as exc:
        field = next((f for prefix, f in _SPEC_ERRORS if str(exc).startswith(prefix)), "comment")
        raise SilenceFormError(field, str(exc)) from None
