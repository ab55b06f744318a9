"""Pure decisions about records: key, hash, diff, severity."""

from __future__ import annotations

from typing import Any

import pytest

from enrolment_sync.errors import UpstreamDataError
from enrolment_sync.records import (
    Stored,
    change_severity,
    changed_fields,
    content_hash,
    diff,
    parse_status_row,
    record_key,
    status_record,
)

ROW = {
    "user_id": "u000123",
    "course_id": 9001,
    "status": "IN_PROGRESS",
    "status_msg": "수강중",
    "gc_date": "2026-11-02",
    "sjc_date": None,
    "update_time": "2026-11-20T10:11:12+09:00",
}


def rec(**changes: Any) -> Any:
    raw = {**ROW, **changes}
    return status_record(303, raw, parse_status_row(raw, 9001))


def stored_of(record: Any, missing: bool = False) -> Stored:
    return Stored(record.content_hash, missing, record.alert_fields())


def test_key_is_category_course_user() -> None:
    assert record_key(303, 9001, "u000123") == "303:9001:u000123"
    assert rec().source_id == "303:9001:u000123"


def test_hash_ignores_key_order_but_not_content() -> None:
    assert content_hash({"a": 1, "b": "가"}) == content_hash({"b": "가", "a": 1})
    assert content_hash({"a": 1}) != content_hash({"a": 2})


def test_unknown_fields_are_kept_and_hashed() -> None:
    record = rec(cohort_label="33기")
    assert record.payload["cohort_label"] == "33기"
    assert record.content_hash != rec().content_hash


@pytest.mark.parametrize(
    ("raw", "names"),
    [
        ({**ROW, "status": "PAUSED"}, "status"),
        ({k: v for k, v in ROW.items() if k != "user_id"}, "user_id"),
        ({**ROW, "gc_date": "02/11/2026"}, "gc_date"),
    ],
)
def test_a_broken_row_names_the_field(raw: dict[str, Any], names: str) -> None:
    with pytest.raises(UpstreamDataError, match=names):
        parse_status_row(raw, 9001)


def test_diff_new_changed_unchanged_returned_vanished() -> None:
    same, moved, back, fresh = rec(), rec(user_id="u2"), rec(user_id="u3"), rec(user_id="u4")
    gone = rec(user_id="u5")
    stored = {
        ("enrolment_status", same.source_id): stored_of(same),
        ("enrolment_status", moved.source_id): stored_of(rec(user_id="u2", status="ENROLLED")),
        ("enrolment_status", back.source_id): stored_of(back, missing=True),
        ("enrolment_status", gone.source_id): stored_of(gone),
    }
    incoming = [same, moved, back, fresh]
    result = diff(incoming, stored, present={r.source_id for r in incoming})
    assert [r.source_id for r in result.new] == [fresh.source_id]
    assert [r.source_id for r, _ in result.changed] == [moved.source_id]
    assert [r.source_id for r in result.returned] == [back.source_id]
    assert result.unchanged == 1
    assert result.vanished == [gone.source_id]
    assert {r.source_id for r in result.to_write} == {fresh.source_id, moved.source_id, back.source_id}


def test_capped_course_never_reports_vanished() -> None:
    gone = rec(user_id="u5")
    result = diff([rec()], {("enrolment_status", gone.source_id): stored_of(gone)}, present=None)
    assert result.vanished == []


@pytest.mark.parametrize(
    ("before", "after", "severity", "fields"),
    [
        ({"status": "IN_PROGRESS"}, {"status": "CANCELLED"}, "high", ["status"]),
        ({"status": "IN_PROGRESS"}, {"status": "FAILED"}, "high", ["status"]),
        ({"status": "IN_PROGRESS"}, {"status": "COMPLETED"}, "medium", ["status"]),
        ({"status": "ENROLLED"}, {"status": "IN_PROGRESS"}, "medium", ["status"]),
        ({"status": "CANCELLED"}, {"status": "ENROLLED"}, "medium", ["status"]),
        (
            {"status": "IN_PROGRESS", "status_msg": "수강중"},
            {"status": "IN_PROGRESS", "status_msg": "휴강"},
            "low",
            ["status_msg"],
        ),
        (
            {"status": "COMPLETED", "sjc_date": None},
            {"status": "COMPLETED", "sjc_date": "2026-11-30"},
            "low",
            ["sjc_date"],
        ),
        (
            {"status": "COMPLETED", "update_time": "a"},
            {"status": "COMPLETED", "update_time": "b"},
            "low",
            ["update_time"],
        ),
    ],
)
def test_change_severity(before: dict[str, Any], after: dict[str, Any], severity: str, fields: list[str]) -> None:
    assert change_severity(before, after) == severity
    assert changed_fields(before, after) == fields


def test_a_learner_listed_twice_is_kept_once_the_later_copy_winning() -> None:
    from enrolment_sync.records import dedupe_rows

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
    from enrolment_sync.records import parse_detail

    with pytest.raises(UpstreamDataError, match="course 9001 user u000123 names course_id 9001 user_id u999999"):
        parse_detail({"user_id": "u999999", "course_id": 9001}, 9001, "u000123")
