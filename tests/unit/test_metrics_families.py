"""web.metrics.families: a database snapshot as Prometheus text (pure)."""

from __future__ import annotations

import datetime as dt

import pytest
from prometheus_client.parser import text_string_to_metric_families

from enrolment_sync.web.metrics import Snapshot, exposition

NOW = dt.datetime(2026, 11, 23, 3, 0, tzinfo=dt.UTC)
QUEUES = [
    {
        "queue": "sheet_outbox",
        "pending": 3,
        "processing": 1,
        "dead": 2,
        "oldest_open_at": NOW - dt.timedelta(seconds=90),
    },
    {"queue": "sync_request", "pending": 0, "processing": 0, "dead": 0, "oldest_open_at": None},
]
INF = float("inf")


def samples(s: Snapshot) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = exposition(s).decode()
    return {
        (x.name, tuple(sorted(x.labels.items()))): x.value
        for family in text_string_to_metric_families(text)
        for x in family.samples
    }


def snapshot(**kw: object) -> Snapshot:
    base: dict[str, object] = {
        "runs": [], "duration_buckets": [], "last_success": [], "upstream": [], "open_alerts": [], "queues": QUEUES,
        "now": NOW, "version": "9.9.9",
    }  # fmt: skip
    base.update(kw)
    return Snapshot(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("name", "labels", "expected"),
    [
        ("enrolment_sync_outbox_messages", {"queue": "sheet_outbox", "status": "PENDING"}, 3),
        ("enrolment_sync_outbox_messages", {"queue": "sheet_outbox", "status": "DEAD"}, 2),
        ("enrolment_sync_outbox_oldest_open_age_seconds", {"queue": "sheet_outbox"}, 90),
        ("enrolment_sync_outbox_oldest_open_age_seconds", {"queue": "sync_request"}, 0),  # nothing open
        ("enrolment_sync_records_changed_total", {}, 0),  # no run yet: zero, not absent
        ("enrolment_sync_build_info", {"version": "9.9.9"}, 1),
    ],
)
def test_an_empty_database_still_answers(name: str, labels: dict[str, str], expected: float) -> None:
    assert samples(snapshot())[(name, tuple(sorted(labels.items())))] == expected


def test_runs_histogram_and_counters() -> None:
    buckets = [
        {"status": "SUCCESS", "le": INF, "runs": 3, "count": 3, "sum_seconds": 7.5},
        {"status": "SUCCESS", "le": 0.5, "runs": 1, "count": 3, "sum_seconds": 7.5},
        {"status": "SUCCESS", "le": 5.0, "runs": 3, "count": 3, "sum_seconds": 7.5},
    ]
    runs = [
        {"trigger_type": "MANUAL", "status": "SUCCESS", "error_group": "", "runs": 2, "changed_records": 4},
        {"trigger_type": "RETRY", "status": "FAILED", "error_group": "TIMEOUT", "runs": 1, "changed_records": 1},
    ]
    last = [{"category_id": 303, "last_success_s": 1.5e9}]
    upstream = [{"code": "none", "requests": 2}]
    s = samples(snapshot(runs=runs, duration_buckets=buckets, last_success=last, upstream=upstream))
    assert s[("enrolment_sync_records_changed_total", ())] == 5
    assert (
        s[("enrolment_sync_runs_total", (("error_group", "TIMEOUT"), ("status", "FAILED"), ("trigger_type", "RETRY")))]
        == 1
    )
    assert s[("enrolment_sync_run_duration_seconds_bucket", (("le", "0.5"), ("status", "SUCCESS")))] == 1
    assert s[("enrolment_sync_run_duration_seconds_bucket", (("le", "+Inf"), ("status", "SUCCESS")))] == 3
    assert s[("enrolment_sync_run_duration_seconds_count", (("status", "SUCCESS"),))] == 3
    assert s[("enrolment_sync_run_duration_seconds_sum", (("status", "SUCCESS"),))] == 7.5
    assert s[("enrolment_sync_last_success_timestamp_seconds", (("category_id", "303"),))] == 1.5e9
    assert s[("enrolment_sync_upstream_requests_total", (("code", "none"),))] == 2
