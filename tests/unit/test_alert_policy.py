"""How much a change matters: the seed's severity rule."""

from __future__ import annotations

from typing import Any

import pytest

from enrolment_sync.alert_policy import change_severity


@pytest.mark.parametrize(
    ("before", "after", "severity"),
    [
        ({"status": "IN_PROGRESS"}, {"status": "CANCELLED"}, "high"),
        ({"status": "IN_PROGRESS"}, {"status": "FAILED"}, "high"),
        ({"status": "IN_PROGRESS"}, {"status": "COMPLETED"}, "medium"),
        ({"status": "ENROLLED"}, {"status": "IN_PROGRESS"}, "medium"),
        ({"status": "CANCELLED"}, {"status": "ENROLLED"}, "medium"),
        ({"status": "FAILED"}, {"status": "FAILED", "status_msg": "재시험"}, "low"),
        ({"status": "IN_PROGRESS", "status_msg": "수강중"}, {"status": "IN_PROGRESS", "status_msg": "휴강"}, "low"),
        ({"status": "COMPLETED", "sjc_date": None}, {"status": "COMPLETED", "sjc_date": "2026-11-30"}, "low"),
        ({"status": "COMPLETED", "update_time": "a"}, {"status": "COMPLETED", "update_time": "b"}, "low"),
    ],
)
def test_change_severity(before: dict[str, Any], after: dict[str, Any], severity: str) -> None:
    assert change_severity(before, after) == severity
