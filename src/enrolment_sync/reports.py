"""Cohort reports: daily counts per status from status_history, and a category's current records exported as
.csv or .xlsx, streamed (a server-side cursor feeding openpyxl's write-only sheet or the csv writer), so a cohort
of any size never sits in memory. Sync connections, like history.py."""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal

import psycopg
from psycopg.rows import dict_row

from . import db
from .alerts import STATUS_KO
from .clock import KST, to_kst
from .errors import EnrolmentSyncError

STATUSES = ("ENROLLED", "IN_PROGRESS", "COMPLETED", "FAILED", "CANCELLED")
MISSING = "MISSING"
MAX_REPORT_DAYS = 400
EXPORT_FETCH_ROWS = 2000  # rows per round trip of the export's server-side cursor

ExportFormat = Literal["csv", "xlsx"]


class ReportError(EnrolmentSyncError):
    """A report asked for something that cannot be given (a bad range)."""


# -- daily counts ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class DayCounts:
    """Enrolments in each status at the end of one KST day (a learner in two courses counts twice)."""

    day: dt.date
    counts: dict[str, int] = field(default_factory=dict)

    def of(self, status: str) -> int:
        return self.counts.get(status, 0)

    @property
    def listed(self) -> int:
        return sum(self.of(s) for s in STATUSES)


def kst_day(moment: dt.datetime) -> dt.date:
    return to_kst(moment).date()


def day_ends(first: dt.date, last: dt.date) -> list[tuple[dt.date, dt.datetime]]:
    """Each KST day from `first` to `last` with the moment it ends (the next KST midnight, in UTC)."""
    if last < first:
        raise ReportError(f"--from {first} is after --to {last}")
    days = (last - first).days + 1
    if days > MAX_REPORT_DAYS:
        raise ReportError(f"{days} days asked ({first} to {last}); a report covers at most {MAX_REPORT_DAYS} days")
    out = []
    for i in range(days):
        day = first + dt.timedelta(days=i)
        midnight = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(0), tzinfo=KST)
        out.append((day, midnight.astimezone(dt.UTC)))
    return out


def report_range(
    date_from: dt.date | None, date_to: dt.date | None, *, today: dt.date, first_change: dt.datetime | None
) -> tuple[dt.date, dt.date]:
    """Defaults: from the KST day the category's history begins (or `to` when it has none), to today (KST)."""
    last = date_to or today
    if date_from is not None:
        return date_from, last
    first = kst_day(first_change) if first_change is not None else last
    return min(first, last), last


def daily_counts(
    conn: psycopg.Connection[Any], category_id: int, date_from: dt.date, date_to: dt.date
) -> list[DayCounts]:
    """Per KST day from `date_from` to `date_to`, the category's enrolments in each status at the day's end."""
    bounds = day_ends(date_from, date_to)
    cur = conn.cursor(row_factory=dict_row)
    cur.execute(
        db.query("history_daily_counts"),
        {"category_id": category_id, "days": [d for d, _ in bounds], "day_ends": [e for _, e in bounds]},
    )
    by_day: dict[dt.date, dict[str, int]] = {d: {} for d, _ in bounds}
    for row in cur.fetchall():
        by_day[row["day"]][row["status"]] = row["records"]
    return [DayCounts(day, counts) for day, counts in by_day.items()]


def first_change(conn: psycopg.Connection[Any], category_id: int) -> dt.datetime | None:
    cur = conn.cursor(row_factory=dict_row)
    cur.execute(db.query("history_first_change"), {"category_id": category_id})
    row = cur.fetchone()
    return row["first_changed_at"] if row else None


# -- export ----------------------------------------------------------------------------------------

EXPORT_HEADERS = (
    "기수",
    "과정 ID",
    "학습자 ID",
    "수강 상태",
    "상태 코드",
    "상태 메시지",
    "gc_date",
    "sjc_date",
    "진도율(%)",
    "출석률(%)",
    "시험 점수",
    "수료 여부",
    "수료일",
    "최종 갱신(KST)",
    "목록에서 빠진 시각(KST)",
    "레코드 키",
)


def _naive_kst(moment: dt.datetime | None) -> dt.datetime | None:
    """Excel keeps no time zone: a KST wall-clock time."""
    return None if moment is None else to_kst(moment).replace(tzinfo=None)


def _yes_no(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "예" if value else "아니오"
    return str(value)


def export_row(row: dict[str, Any]) -> tuple[Any, ...]:
    """One record as the export shows it, in EXPORT_HEADERS order (dates and numbers keep their types)."""
    status = row["status"]
    return (
        row["category_id"],
        row["course_id"],
        row["user_id"],
        STATUS_KO.get(status, status),
        status,
        row["status_msg"],
        row["gc_date"],
        row["sjc_date"],
        row["progress_rate"],
        row["attendance_rate"],
        row["exam_score"],
        _yes_no(row["completed"]),
        row["completion_date"],
        _naive_kst(row["update_time"]),
        _naive_kst(row["missing_since"]),
        row["source_id"],
    )


def export_rows(conn: psycopg.Connection[Any], category_id: int) -> Iterator[tuple[Any, ...]]:
    """The category's current records, one tuple at a time from a server-side cursor (its own transaction)."""
    with conn.transaction(), conn.cursor(name="export_records", row_factory=dict_row) as cur:
        cur.itersize = EXPORT_FETCH_ROWS
        cur.execute(db.query("export_records"), {"category_id": category_id})
        for row in cur:
            yield export_row(row)


def _csv_cell(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, dt.date):
        return value.isoformat()
    return value


def write_csv(rows: Iterable[tuple[Any, ...]], out: IO[bytes]) -> int:
    """Korean headers, UTF-8 with a BOM (so Excel reads the Korean), CRLF lines. Returns the rows written."""
    text = io.TextIOWrapper(out, encoding="utf-8-sig", newline="", write_through=False)
    writer = csv.writer(text)
    writer.writerow(EXPORT_HEADERS)
    written = 0
    for row in rows:
        writer.writerow([_csv_cell(v) for v in row])
        written += 1
    text.flush()
    text.detach()  # the caller owns `out`
    return written


def write_xlsx(rows: Iterable[tuple[Any, ...]], out: IO[bytes] | Path, *, sheet_title: str = "수강 현황") -> int:
    """One sheet, Korean headers, written row by row (openpyxl's write-only mode). Returns the rows written."""
    from openpyxl import Workbook

    workbook = Workbook(write_only=True)
    sheet = workbook.create_sheet(sheet_title)
    sheet.append(list(EXPORT_HEADERS))
    written = 0
    for row in rows:
        sheet.append([v if not isinstance(v, (dict, list)) else str(v) for v in row])
        written += 1
    workbook.save(out)
    return written


def export(conn: psycopg.Connection[Any], category_id: int, fmt: ExportFormat, out: IO[bytes] | Path) -> int:
    """Stream the category's current records into `out` as csv or xlsx; returns how many records."""
    rows = export_rows(conn, category_id)
    if fmt == "xlsx":
        return write_xlsx(rows, out)
    if isinstance(out, Path):
        with out.open("wb") as fh:
            return write_csv(rows, fh)
    return write_csv(rows, out)
