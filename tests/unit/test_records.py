"""Pure, LMS-neutral decisions about records: key, hash, diff, changed fields."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from enrolment_sync.records import STATUS, Incoming, Stored, changed_fields, content_hash, diff, record_key


def rec(user_id: str = "u000123", status: str = "IN_PROGRESS") -> Incoming:
    """A status record as any upstream adapter would hand it over."""
    payload = {"user_id": user_id, "status": status, "status_msg": "수강중", "gc_date": "2026-11-02"}
    return Incoming(
        source_type=STATUS,
        source_id=record_key(303, 9001, user_id),
        category_id=303,
        course_id=9001,
        user_id=user_id,
        payload=payload,
        content_hash=content_hash(payload),
        status=status,
    )


def stored_of(record: Incoming, missing: bool = False) -> Stored:
    return Stored(record.content_hash, missing, record.alert_fields())


def test_key_is_category_course_user() -> None:
    assert record_key(303, 9001, "u000123") == "303:9001:u000123"


def test_hash_ignores_key_order_but_not_content() -> None:
    assert content_hash({"a": 1, "b": "가"}) == content_hash({"b": "가", "a": 1})
    assert content_hash({"a": 1}) != content_hash({"a": 2})


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
    ("before", "after", "fields"),
    [
        ({"status": "IN_PROGRESS"}, {"status": "CANCELLED"}, ["status"]),
        (
            {"status": "IN_PROGRESS", "status_msg": "수강중"},
            {"status": "IN_PROGRESS", "status_msg": "휴강"},
            ["status_msg"],
        ),
        ({"status": "COMPLETED", "sjc_date": None}, {"status": "COMPLETED", "sjc_date": "2026-11-30"}, ["sjc_date"]),
        ({"gc_date": dt.date(2026, 11, 2)}, {"gc_date": "2026-11-02"}, []),  # a stored date equals its ISO text
        ({"status": "COMPLETED", "update_time": "a"}, {"status": "COMPLETED", "update_time": "b"}, ["update_time"]),
        ({"status": "COMPLETED", "cohort": "33기"}, {"status": "COMPLETED", "cohort": "34기"}, []),
    ],
)
def test_changed_fields(before: dict[str, Any], after: dict[str, Any], fields: list[str]) -> None:
    assert changed_fields(before, after) == fields
