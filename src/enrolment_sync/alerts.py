"""What each kind of alert says (pure). Raising and resolving them is store.alerts' job."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from .alert_policy import change_severity
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
