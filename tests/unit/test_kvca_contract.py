"""The KVCA contract's rows and the adapter that turns them into domain records."""

from __future__ import annotations

from typing import Any

import pytest

from enrolment_sync.errors import UpstreamDataError
from enrolment_sync.kvca.adapter import detail_record, status_record
from enrolment_sync.kvca.contract import dedupe_rows, parse_detail, parse_status_row
from enrolment_sync.records import DETAIL, STATUS

ROW = {
    "user_id": "u000123",
    "course_id": 9001,
    "status": "IN_PROGRESS",
    "status_msg": "수강중",
    "gc_date": "2026-11-02",
    "sjc_date": None,
    "update_time": "2026-11-20T10:11:12+09:00",
}


@pytest.mark.parametrize(
    ("raw", "names"),
    [
        ({**ROW, "status": "PAUSED"}, "status"),
        ({k: v for k, v in ROW.items() if k != "user_id"}, "user_id"),
        ({**ROW, "gc_date": "02/11/2026"}, "gc_date"),
        ({**ROW, "course_id": 9002}, "names course_id 9002"),
    ],
)
def test_a_broken_row_names_the_field(raw: dict[str, Any], names: str) -> None:
    with pytest.raises(UpstreamDataError, match=names):
        parse_status_row(raw, 9001)


def test_a_status_row_becomes_a_status_record_under_the_key() -> None:
    record = status_record(303, ROW, parse_status_row(ROW, 9001))
    assert (record.source_type, record.source_id) == (STATUS, "303:9001:u000123")
    assert (record.status, record.gc_date, record.sjc_date) == ("IN_PROGRESS", "2026-11-02", None)
    assert record.update_time == "2026-11-20T10:11:12+09:00"
    assert record.payload is ROW


def test_unknown_fields_are_kept_and_hashed() -> None:
    raw = {**ROW, "cohort_label": "33기"}
    record = status_record(303, raw, parse_status_row(raw, 9001))
    plain = status_record(303, ROW, parse_status_row(ROW, 9001))
    assert record.payload["cohort_label"] == "33기"
    assert record.content_hash != plain.content_hash


def test_a_detail_becomes_a_detail_record_of_the_course_asked() -> None:
    raw = {"user_id": "u000123", "course_id": 9001, "progress_rate": 72.5, "update_time": "2026-11-20T10:00:00Z"}
    record = detail_record(303, raw, parse_detail(raw, 9001, "u000123"), 9001)
    assert (record.source_type, record.source_id, record.status) == (DETAIL, "303:9001:u000123", None)
    assert record.update_time == "2026-11-20T10:00:00+00:00"


def test_a_learner_listed_twice_is_kept_once_the_later_copy_winning() -> None:
    older = {**ROW, "status": "ENROLLED", "update_time": "2026-11-20T10:00:00+09:00"}
    newer = {**ROW, "status": "IN_PROGRESS", "update_time": "2026-11-20T11:00:00+09:00"}
    other = {**ROW, "user_id": "u000124"}
    pairs = [(raw, parse_status_row(raw, 9001)) for raw in (newer, other, older)]
    kept, dropped = dedupe_rows(pairs)
    assert dropped == 1
    assert [(raw["user_id"], raw["status"]) for raw, _ in kept] == [
        ("u000123", "IN_PROGRESS"),
        ("u000124", "IN_PROGRESS"),
    ]


def test_a_detail_of_another_learner_is_refused() -> None:
    with pytest.raises(UpstreamDataError, match="course 9001 user u000123 names course_id 9001 user_id u999999"):
        parse_detail({"user_id": "u999999", "course_id": 9001}, 9001, "u000123")
