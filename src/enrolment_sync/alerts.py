"""What each kind of alert says, and what a silence matches (pure). Raising and resolving them is store.alerts'."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, fields
from typing import Any

from .alert_policy import change_severity
from .clock import KST
from .failures import Classified, Severity
from .records import Incoming, Stored, changed_fields

STATUS_KO = {
    "ENROLLED": "수강신청",
    "IN_PROGRESS": "수강중",
    "COMPLETED": "수료",
    "FAILED": "미수료",
    "CANCELLED": "수강취소",
}


@dataclass(frozen=True)
class AlertSpec:
    """One alert to raise: the fields the caller decides (the store adds type, run, times and counts)."""

    source_type: str
    source_id: str
    severity: Severity
    message: str
    detail: dict[str, Any]

    def as_json(self) -> dict[str, Any]:
        # the fields as they are (no deep copy: a CHANGED alert's detail carries two records' fields)
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["severity"] = str(self.severity)
        return out


def changed_alert(record: Incoming, before: Stored, *, run_id: int, course_name: str | None) -> AlertSpec:
    """One CHANGED alert for a changed status row, with the fields before and after."""
    after = record.alert_fields()
    fields = changed_fields(before.fields, after)
    severity = change_severity(before.fields, after)
    old, new = before.fields.get("status"), after.get("status")
    course = f"{course_name} ({record.course_id})" if course_name else str(record.course_id)
    if old != new:
        what = f"{STATUS_KO.get(str(old), old)}({old}) → {STATUS_KO.get(str(new), new)}({new})"
    else:
        what = "변경 항목: " + ", ".join(fields)
    message = f"수강 상태 변경 [{severity}] {record.user_id} · {course}: {what}"
    detail = {
        "category_id": record.category_id,
        "course_id": record.course_id,
        "user_id": record.user_id,
        "run_id": run_id,
        "changed_fields": fields,
        "before": before.fields,
        "after": after,
    }
    return AlertSpec("enrolment_status", record.source_id, severity, message, detail)


def failed_alert(job_name: str, failure: Classified, *, run_id: int, category_id: int | None) -> AlertSpec:
    """Step 2 §3: source_type run_log, source_id <job_name>:<error_group>, detail with the four keys.

    `failing_categories`: the categories whose failures the alert counts (repeats add theirs); a success of
    each is needed before it is resolved, so one cohort's success never hides another's failure.
    """
    message = f"동기화 실패 [{failure.group}] {job_name} run {run_id}: {failure.message[:300]}"
    detail: dict[str, Any] = {
        "error_group": str(failure.group),
        "http_status_code": failure.http_status_code,
        "run_id": run_id,
        "error_message": failure.message,
        "job_name": job_name,
        "category_id": category_id,
    }
    if category_id is not None:
        detail["failing_categories"] = [category_id]
    return AlertSpec("run_log", f"{job_name}:{failure.group}", failure.severity, message, detail)


def mass_change_alert(
    category_id: int, *, run_id: int, status_rows: int, transitions: dict[tuple[str, str], int], share: float
) -> AlertSpec:
    """One high 대량 변경 alert for a cohort, with the counts by old and new status, instead of one per learner."""
    changed = sum(transitions.values())
    ordered = sorted(transitions.items(), key=lambda item: (-item[1], item[0]))
    lines = [f"{STATUS_KO.get(old, old)}({old}) → {STATUS_KO.get(new, new)}({new}) {n}명" for (old, new), n in ordered]
    message = (
        f"대량 변경 [high] 기수(category) {category_id}: 상태 {status_rows}행 중 {changed}행 변경 "
        f"(기준 {share:.0%} 초과) — " + ", ".join(lines)
    )
    detail = {
        "category_id": category_id,
        "run_id": run_id,
        "status_rows": status_rows,
        "changed": changed,
        "share": share,
        "transitions": [{"from": old, "to": new, "count": n} for (old, new), n in ordered],
    }
    return AlertSpec("mass_change", f"category:{category_id}", Severity.HIGH, message, detail)


ALERT_TYPES = ("CHANGED", "FAILED", "STALE", "DEAD_LETTER")
SEVERITIES = ("low", "medium", "high")


@dataclass(frozen=True)
class SilenceSpec:
    """What a silence matches (None: anything) and when, with the comment people read ("방학", "점검")."""

    category_id: int | None
    alert_type: str | None
    severity: str | None
    starts_at: dt.datetime
    ends_at: dt.datetime
    comment: str

    def as_params(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def silence_spec(
    *,
    category_id: int | None,
    alert_type: str | None,
    severity: str | None,
    starts_at: dt.datetime,
    ends_at: dt.datetime,
    comment: str,
) -> SilenceSpec:
    """A silence from what a person typed (CLI or console); ValueError names the field that is wrong."""
    alert_type = alert_type.strip().upper() if alert_type else None
    severity = severity.strip().lower() if severity else None
    if alert_type is not None and alert_type not in ALERT_TYPES:
        raise ValueError(f"alert type must be one of {', '.join(ALERT_TYPES)} (got {alert_type!r})")
    if severity is not None and severity not in SEVERITIES:
        raise ValueError(f"severity must be one of {', '.join(SEVERITIES)} (got {severity!r})")
    if category_id is None and alert_type is None and severity is None:
        raise ValueError("a silence needs a category, an alert type or a severity (it would silence everything)")
    if starts_at.tzinfo is None or ends_at.tzinfo is None:
        raise ValueError("start and end need a time zone (KST when typed by a person)")
    if ends_at <= starts_at:
        raise ValueError("the end of a silence must come after its start")
    if not comment.strip():
        raise ValueError("a silence needs a comment saying why (e.g. 방학, 점검)")
    return SilenceSpec(category_id, alert_type, severity, starts_at, ends_at, comment.strip())


def parse_kst(text: str) -> dt.datetime:
    """ "2026-12-24 18:00" (KST unless it names its offset) as an aware time; ValueError names the text."""
    try:
        moment = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"not a date and time: {text!r} (use e.g. 2026-12-24 18:00, KST)") from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=KST)
