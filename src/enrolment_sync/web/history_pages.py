"""The console's history side (docs/history.md): a learner's timeline, a cohort's daily counts chart and the
cohort's current records as .csv or .xlsx downloads. Counts and exports run reports.py's sync functions on a
worker thread over their own connection; downloads stream, so a cohort never sits in memory."""

from __future__ import annotations

import csv
import datetime as dt
import io
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import psycopg
from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import FileResponse, Response, StreamingResponse
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool

from .. import db, reports
from ..clock import to_kst
from ..history import CHANGE_KO, HistoryEntry, status_name
from ..reports import _csv_cell
from .auth import Gate, Viewer
from .render import page, secure

router = APIRouter(prefix="/ops", include_in_schema=False)


def _viewer(request: Request) -> Viewer:
    gate: Gate = request.app.state.ops_gate
    return gate.viewer(request)


Who = Annotated[Viewer, Depends(_viewer)]
CHART_DAYS = 30
CSV_CHUNK_ROWS = 500
XLSX_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


def _today(request: Request) -> dt.date:
    return to_kst(request.app.state.ops_clock.now()).date()


@contextmanager
def _sync_connection(request: Request) -> Iterator[psycopg.Connection[Any]]:
    target: db.ConnectionTarget = request.app.state.db.target
    with psycopg.connect(target.conninfo, **target.connect_kwargs()) as conn:
        yield conn


# -- the learner's timeline (shown on /ops/learners) ------------------------------------------------


def timeline_lines(entries: list[HistoryEntry]) -> list[dict[str, Any]]:
    """What the learner page shows for each history row, oldest first."""
    return [
        {
            "changed_at": e.changed_at,
            "course_id": e.course_id,
            "change": e.change,
            "change_ko": CHANGE_KO.get(e.change, e.change),
            "old": status_name(e.old_status) if e.change not in ("NEW", "RETURNED") else "",
            "new": status_name(e.new_status) if e.change != "MISSING" else "목록에서 빠짐",
            "what": e.what(),
            "status_msg": e.new_status_msg if e.change != "MISSING" else e.old_status_msg,
            "run_id": e.run_id,
            "backfill": e.backfill,
        }
        for e in entries
    ]


async def learner_timeline(request: Request, category_id: int, user_id: str) -> list[dict[str, Any]]:
    async with request.app.state.db.connection() as conn:
        rows = await db.fetch_all(conn, "history_timeline", {"category_id": category_id, "user_id": user_id})
    return timeline_lines([HistoryEntry.from_row(r) for r in rows])


# -- a cohort's daily counts -------------------------------------------------------------------------


def chart_range(raw_from: str | None, raw_to: str | None, today: dt.date) -> tuple[dt.date, dt.date]:
    """The chart's KST days: `to` defaults to today, `from` to 30 days ending at `to`; bad dates are refused."""
    try:
        last = dt.date.fromisoformat(raw_to) if raw_to else today
        first = dt.date.fromisoformat(raw_from) if raw_from else last - dt.timedelta(days=CHART_DAYS - 1)
    except ValueError as exc:
        raise HTTPException(422, f"날짜는 YYYY-MM-DD 형식이어야 합니다: {exc}") from exc
    reports.day_ends(first, last)  # raises ReportError for a reversed or too long range
    return first, last


def counts_chart(days: list[reports.DayCounts]) -> dict[str, Any]:
    """Chart.js series: one line per status, one point per KST day."""
    return {
        "labels": [d.day.isoformat() for d in days],
        "series": [{"status": s, "label": status_name(s), "data": [d.of(s) for d in days]} for s in reports.STATUSES],
    }


@router.get("/cohorts/{category_id}")
async def cohort(request: Request, category_id: int, who: Who) -> Response:
    """기수 현황: per KST day, the cohort's learners in each status (from status_history), and the downloads."""
    q = request.query_params
    error = None
    try:
        first, last = chart_range(q.get("from"), q.get("to"), _today(request))
    except reports.ReportError as exc:
        error = f"기간이 잘못되었습니다: {exc}"
        first = last = _today(request)

    def read() -> list[reports.DayCounts]:
        with _sync_connection(request) as conn:
            return reports.daily_counts(conn, category_id, first, last)

    days = await run_in_threadpool(read)
    return page(
        request,
        "cohort.html",
        viewer=who,
        section="learners",
        category_id=category_id,
        date_from=first,
        date_to=last,
        days=days,
        statuses=reports.STATUSES,
        chart=counts_chart(days),
        error=error,
    )


# -- downloads ---------------------------------------------------------------------------------------


def download_name(category_id: int, today: dt.date, fmt: str) -> str:
    return f"category_{category_id}_{today.isoformat()}.{fmt}"


def csv_chunks(rows: Iterator[tuple[Any, ...]]) -> Iterator[bytes]:
    """The export as reports.write_csv writes it (BOM, Korean headers, CRLF), a few hundred rows per chunk."""
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(reports.EXPORT_HEADERS)
    yield ("\ufeff" + text.getvalue()).encode("utf-8")
    pending = 0
    text.seek(0)
    text.truncate()
    for row in rows:
        writer.writerow([_csv_cell(v) for v in row])
        pending += 1
        if pending == CSV_CHUNK_ROWS:
            yield text.getvalue().encode("utf-8")
            text.seek(0)
            text.truncate()
            pending = 0
    if pending:
        yield text.getvalue().encode("utf-8")


@router.get("/cohorts/{category_id}/export.csv")
async def export_csv(request: Request, category_id: int, who: Who) -> Response:
    """The cohort's current records as .csv (UTF-8 with BOM), streamed from a server-side cursor."""

    def body() -> Iterator[bytes]:
        with _sync_connection(request) as conn:
            yield from csv_chunks(reports.export_rows(conn, category_id))

    name = download_name(category_id, _today(request), "csv")
    headers = {"Content-Disposition": f'attachment; filename="{name}"'}
    return secure(StreamingResponse(body(), media_type="text/csv; charset=utf-8", headers=headers))


@router.get("/cohorts/{category_id}/export.xlsx")
async def export_xlsx(request: Request, category_id: int, who: Who) -> Response:
    """The cohort's current records as .xlsx: written row by row to a temporary file, which is then streamed."""
    handle, path = tempfile.mkstemp(prefix="enrolment-export-", suffix=".xlsx")
    os.close(handle)

    def write() -> None:
        with _sync_connection(request) as conn:
            reports.export(conn, category_id, "xlsx", Path(path))

    try:
        await run_in_threadpool(write)
    except BaseException:
        os.unlink(path)
        raise
    name = download_name(category_id, _today(request), "xlsx")
    return secure(FileResponse(path, media_type=XLSX_TYPE, filename=name, background=BackgroundTask(os.unlink, path)))
