"""What the unattended worker's alerts say (pure): a stale slot, an exhausted retry series, paused schedules.

Each is keyed per schedule or category under the job's name, carries `category_id` in its detail (so the
category's next success resolves it) and is high: the notification consumer delivers it.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from ..alerts import AlertSpec
from ..config import JOB_NAME
from ..failures import Severity
from ..job import JobOutcome
from .slots import ScheduleSpec, kst


def paused_key(category_id: int) -> str:
    return f"{JOB_NAME}:schedule_paused:category:{category_id}"


def stale_slot_alert(schedule: dict[str, Any], spec: ScheduleSpec, slot: dt.datetime, grace_min: float) -> AlertSpec:
    """STALE for one schedule's slot whose run has not succeeded within the grace period."""
    last = schedule["last_success_at"]
    message = (
        f"예약 동기화 지연: schedule {schedule['id']} (category {schedule['category_id']}, {spec.describe()}) 의 "
        f"{kst(slot)} 실행이 {grace_min:g}분 안에 성공하지 못함 (마지막 성공: {kst(last)})"
    )
    detail = {
        "schedule_id": schedule["id"],
        "category_id": schedule["category_id"],
        "slot_at": slot.isoformat(),
        "slot_kst": kst(slot),
        "grace_minutes": grace_min,
        "last_success_at": last.isoformat() if last else None,
        "job_name": JOB_NAME,
    }
    return AlertSpec("sync_schedule", f"{JOB_NAME}:schedule:{schedule['id']}", Severity.HIGH, message, detail)


def exhausted_alert(request: dict[str, Any], outcome: JobOutcome, attempts: int) -> AlertSpec:
    """One high FAILED alert when a category's retry series ends without a success."""
    assert outcome.failure is not None
    category = request["category_id"]
    message = (
        f"자동 재시도 소진: category {category} 동기화가 {attempts}번 모두 실패함 "
        f"[{outcome.failure.group}] run {outcome.run_id}: {outcome.failure.message[:200]}"
    )
    detail = {
        "category_id": category,
        "request_id": request["id"],
        "run_id": outcome.run_id,
        "attempts": attempts,
        "error_group": str(outcome.failure.group),
        "error_message": outcome.failure.message,
        "job_name": JOB_NAME,
    }
    return AlertSpec(
        "sync_request", f"{JOB_NAME}:retries_exhausted:category:{category}", Severity.HIGH, message, detail
    )


def paused_alert(category_id: int, schedule_ids: list[int], failures: int, outcome: JobOutcome) -> AlertSpec:
    """One high FAILED alert when repeated failures pause a category's schedules."""
    assert outcome.failure is not None
    message = (
        f"예약 일시정지: category {category_id} 동기화가 연속 {failures}번 실패하여 schedule "
        f"{', '.join(map(str, schedule_ids))} 을(를) 멈춤 (업스트림 보호). "
        f"`enrolment-sync schedule resume ID` 또는 수동 동기화 성공 시 재개"
    )
    detail = {
        "category_id": category_id,
        "schedule_ids": schedule_ids,
        "consecutive_failures": failures,
        "run_id": outcome.run_id,
        "error_group": str(outcome.failure.group),
        "job_name": JOB_NAME,
    }
    return AlertSpec("sync_schedule", paused_key(category_id), Severity.HIGH, message, detail)
