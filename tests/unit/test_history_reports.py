"""The pure parts of history and reports: KST days, report ranges, timeline wording, export rows and csv bytes."""

from __future__ import annotations

import datetime as dt
import io
from dataclasses import replace
from typing import Any

import pytest

from enrolment_sync.history import HistoryEntry, history_rows, kst_text, status_name
from enrolment_sync.records import DETAIL, STATUS, Diff, Incoming, Stored
from enrolment_sync.reports import (
    EXPORT_HEADERS,
    MAX_REPORT_DAYS,
    ReportError,
    day_ends,
    export_row,
    kst_day,
    report_range,
    write_csv,
)

UTC = dt.UTC


def test_a_kst_day_ends_at_15_utc() -> None:
    assert day_ends(dt.date(2026, 11, 20), dt.date(2026, 11, 21)) == [
        (dt.date(2026, 11, 20), dt.datetime(2026, 11, 20, 15, 0, tzinfo=UTC)),
        (dt.date(2026, 11, 21), dt.datetime(2026, 11, 21, 15, 0, tzinfo=UTC)),
    ]


@pytest.mark.parametrize(
    ("moment", "day"),
    [
        (dt.datetime(2026, 11, 20, 14, 59, 59, tzinfo=UTC), dt.date(2026, 11, 20)),
        (dt.datetime(2026, 11, 20, 15, 0, 0, tzinfo=UTC), dt.date(2026, 11, 21)),
        (dt.datetime(2026, 12, 31, 16, 0, 0, tzinfo=UTC), dt.date(2027, 1, 1)),
    ],
)
def test_kst_day(moment: dt.datetime, day: dt.date) -> None:
    assert kst_day(moment) == day


@pytest.mark.parametrize(
    ("first", "last", "message"),
    [
        (dt.date(2026, 11, 21), dt.date(2026, 11, 20), "--from 2026-11-21 is after --to 2026-11-20"),
        (dt.date(2025, 1, 1), dt.date(2026, 11, 20), f"at most {MAX_REPORT_DAYS} days"),
    ],
)
def test_day_ends_refuses_bad_ranges(first: dt.date, last: dt.date, message: str) -> None:
    with pytest.raises(ReportError, match=message):
        day_ends(first, last)


TODAY = dt.date(2026, 11, 23)
BEGAN = dt.datetime(2026, 11, 19, 16, 0, tzinfo=UTC)  # 11-20 01:00 KST


@pytest.mark.parametrize(
    ("date_from", "date_to", "first_change", "expected"),
    [
        (None, None, BEGAN, (dt.date(2026, 11, 20), TODAY)),
        (None, None, None, (TODAY, TODAY)),
        (dt.date(2026, 11, 1), None, BEGAN, (dt.date(2026, 11, 1), TODAY)),
        (None, dt.date(2026, 11, 10), BEGAN, (dt.date(2026, 11, 10), dt.date(2026, 11, 10))),
        (None, dt.date(2026, 11, 21), BEGAN, (dt.date(2026, 11, 20), dt.date(2026, 11, 21))),
    ],
)
def test_report_range_defaults(
    date_from: dt.date | None, date_to: dt.date | None, first_change: dt.datetime | None, expected: Any
) -> None:
    assert report_range(date_from, date_to, today=TODAY, first_change=first_change) == expected


def test_times_for_people_are_kst() -> None:
    assert kst_text(dt.datetime(2026, 11, 20, 15, 30, tzinfo=UTC)) == "2026-11-21 00:30:00 KST"
    assert kst_text(None) == ""
    assert status_name("CANCELLED") == "수강취소(CANCELLED)"
    assert status_name(None) == "-"


BASE = HistoryEntry(
    source_id="303:9001:u1",
    course_id=9001,
    change="CHANGED",
    old_status="IN_PROGRESS",
    new_status="CANCELLED",
    old_status_msg="수강중",
    new_status_msg="수강취소",
    old_gc_date=None,
    new_gc_date=None,
    old_sjc_date=None,
    new_sjc_date=None,
    update_time=None,
    run_id=7,
    changed_at=dt.datetime(2026, 11, 20, 1, 0, tzinfo=UTC),
    backfill=None,
)


@pytest.mark.parametrize(
    ("entry", "text"),
    [
        (
            BASE,
            "수강중(IN_PROGRESS) → 수강취소(CANCELLED); 상태 메시지 수강중 → 수강취소",
        ),
        (replace(BASE, change="NEW", old_status=None, old_status_msg=None), "수강취소(CANCELLED)"),
        (
            replace(BASE, change="MISSING", old_status="COMPLETED", new_status=None, new_status_msg=None),
            "수료(COMPLETED) → 목록에서 빠짐",
        ),
        (replace(BASE, change="RETURNED", old_status=None), "목록에 다시 나타남: 수강취소(CANCELLED)"),
        (
            replace(
                BASE,
                old_status="COMPLETED",
                new_status="COMPLETED",
                old_status_msg="수료",
                new_status_msg="수료",
                new_sjc_date=dt.date(2026, 11, 20),
            ),
            "수료(COMPLETED); sjc_date - → 2026-11-20",
        ),
    ],
)
def test_timeline_wording(entry: HistoryEntry, text: str) -> None:
    assert entry.what() == text


ROW = {
    "category_id": 303,
    "course_id": 9001,
    "user_id": "u1",
    "status": "COMPLETED",
    "status_msg": "수료",
    "gc_date": dt.date(2026, 11, 2),
    "sjc_date": None,
    "progress_rate": 72.5,
    "attendance_rate": 90.0,
    "exam_score": None,
    "completed": True,
    "completion_date": "2026-11-20",
    "update_time": dt.datetime(2026, 11, 20, 1, 11, 12, tzinfo=UTC),
    "missing_since": None,
    "source_id": "303:9001:u1",
}


def test_export_row_is_korean_and_kst() -> None:
    row = dict(zip(EXPORT_HEADERS, export_row(ROW), strict=True))
    assert row["수강 상태"] == "수료" and row["상태 코드"] == "COMPLETED"
    assert row["수료 여부"] == "예" and export_row({**ROW, "completed": False})[11] == "아니오"
    assert row["최종 갱신(KST)"] == dt.datetime(2026, 11, 20, 10, 11, 12)  # naive: Excel keeps no zone
    assert row["진도율(%)"] == 72.5 and row["gc_date"] == dt.date(2026, 11, 2)


def test_csv_has_a_bom_korean_headers_and_crlf() -> None:
    out = io.BytesIO()
    assert write_csv([export_row(ROW)], out) == 1
    data = out.getvalue()
    assert data.startswith("\ufeff기수,과정 ID,학습자 ID,수강 상태".encode())
    lines = data.decode("utf-8-sig").split("\r\n")
    assert lines[1] == (
        "303,9001,u1,수료,COMPLETED,수료,2026-11-02,,72.5,90.0,,예,2026-11-20,2026-11-20 10:11:12,,303:9001:u1"
    )
    assert not out.closed, "the caller's stream stays open"


def _incoming(user: str, source_type: str = STATUS, **fields: Any) -> Incoming:
    values = {"status": "IN_PROGRESS", "status_msg": "수강중", "gc_date": "2026-11-02", "sjc_date": None}
    values.update(fields)
    if source_type != STATUS:
        values = {}
    return Incoming(
        source_type=source_type,
        source_id=f"303:9001:{user}",
        category_id=303,
        course_id=9001,
        user_id=user,
        payload={},
        content_hash=f"h-{user}",
        update_time="2026-11-20T01:11:12+00:00",
        **values,
    )


def _stored(missing: bool = False, **fields: Any) -> Stored:
    values = {"status": "ENROLLED", "status_msg": "수강신청", "gc_date": "2026-11-02", "sjc_date": None}
    values.update(fields)
    return Stored("old-hash", missing, {**values, "update_time": "2026-11-19T01:00:00+09:00"})


def _kinds(d: Diff) -> list[tuple[str, str, str | None, str | None]]:
    return [(r["user_id"], r["change"], r["old_status"], r["new_status"]) for r in history_rows(d)]


@pytest.mark.parametrize(
    ("d", "expected"),
    [
        (Diff(), []),
        (Diff(unchanged=178), []),
        (Diff(new=[_incoming("a"), _incoming("a", DETAIL)]), [("a", "NEW", None, "IN_PROGRESS")]),
        (
            Diff(changed=[(_incoming("b"), _stored()), (_incoming("b", DETAIL), _stored())]),
            [("b", "CHANGED", "ENROLLED", "IN_PROGRESS")],
        ),
        (Diff(changed=[(_incoming("c"), _stored(missing=True))]), [("c", "RETURNED", None, "IN_PROGRESS")]),
        (Diff(returned=[_incoming("d"), _incoming("d", DETAIL)]), [("d", "RETURNED", None, "IN_PROGRESS")]),
        (Diff(vanished=["303:9001:e"]), []),
    ],
)
def test_history_rows_follow_the_diff(d: Diff, expected: list[Any]) -> None:
    assert _kinds(d) == expected


def test_history_rows_carry_both_versions() -> None:
    (row,) = history_rows(Diff(changed=[(_incoming("b", sjc_date="2026-11-20"), _stored(gc_date="20261102x"))]))
    assert row == {
        "source_id": "303:9001:b",
        "category_id": 303,
        "course_id": 9001,
        "user_id": "b",
        "change": "CHANGED",
        "old_status": "ENROLLED",
        "new_status": "IN_PROGRESS",
        "old_status_msg": "수강신청",
        "new_status_msg": "수강중",
        "old_gc_date": None,  # stored as the upstream wrote it, and not a date Postgres could read: left out
        "new_gc_date": "2026-11-02",
        "old_sjc_date": None,
        "new_sjc_date": "2026-11-20",
        "update_time": "2026-11-20T01:11:12+00:00",
    }
