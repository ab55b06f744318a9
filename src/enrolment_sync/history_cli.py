"""`enrolment-sync history | report | export`: a learner's timeline, a cohort's daily counts, the cohort's list."""

from __future__ import annotations

import datetime as dt
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import psycopg
import typer
from rich.table import Table

from . import db
from .alerts import STATUS_KO
from .clock import SystemClock
from .errors import EnrolmentSyncError
from .history import CHANGE_KO, kst_text, timeline
from .reports import MISSING, STATUSES, daily_counts, export, first_change, kst_day, report_range
from .runtime import command_settings, prepare_database
from .terminal import plain_console, print_error

console = plain_console()
err_console = plain_console(stderr=True)

CategoryOption = Annotated[int, typer.Option("--category-id", min=1, help="The category (기수).")]


@contextmanager
def _connection() -> Iterator[psycopg.Connection[Any]]:
    settings = command_settings()
    try:
        target = db.parse_target(prepare_database(settings))
        with psycopg.connect(target.conninfo, **target.connect_kwargs()) as conn:
            yield conn
    except EnrolmentSyncError as exc:
        print_error(err_console, exc)
        raise typer.Exit(1) from exc
    except psycopg.Error as exc:
        print_error(err_console, f"database: {exc}")
        raise typer.Exit(1) from exc


def history_command(
    category_id: CategoryOption,
    user_id: Annotated[str, typer.Option("--user-id", help="The learner's user_id.")],
) -> None:
    """A learner's timeline in a category: every status change of every course, oldest first, in KST."""
    with _connection() as conn:
        entries = timeline(conn, category_id, user_id)
    if not entries:
        err_console.print(f"no history for learner {user_id!r} in category {category_id}", highlight=False)
        raise typer.Exit(1)
    table = Table("시각 (KST)", "과정", "구분", "내용", "상태 메시지", "run", title=f"{user_id} · 기수 {category_id}")
    for e in entries:
        source = f"run {e.run_id}" if e.run_id is not None else ""
        if e.backfill:
            source = f"{source} (이전 알림에서 복원)" if e.backfill != "record" else f"{source} (기존 레코드에서 복원)"
        table.add_row(
            kst_text(e.changed_at),
            str(e.course_id),
            CHANGE_KO.get(e.change, e.change),
            e.what(),
            e.new_status_msg if e.change != "MISSING" else e.old_status_msg,
            source.strip(),
        )
    console.print(table)


def report_command(
    category_id: CategoryOption,
    date_from: Annotated[
        dt.datetime | None,
        typer.Option("--from", formats=["%Y-%m-%d"], help="First KST day (default: when the history begins)."),
    ] = None,
    date_to: Annotated[
        dt.datetime | None, typer.Option("--to", formats=["%Y-%m-%d"], help="Last KST day (default: today, KST).")
    ] = None,
) -> None:
    """Per KST day, the category's enrolments in each status at the day's end (from the history)."""
    with _connection() as conn:
        try:
            first, last = report_range(
                date_from.date() if date_from else None,
                date_to.date() if date_to else None,
                today=kst_day(SystemClock().now()),
                first_change=first_change(conn, category_id),
            )
            days = daily_counts(conn, category_id, first, last)
        except EnrolmentSyncError as exc:
            print_error(err_console, exc)
            raise typer.Exit(2) from exc
    headers = ["날짜 (KST)", *(f"{STATUS_KO[s]}" for s in STATUSES), "목록에서 빠짐", "합계 (목록)"]
    table = Table(*headers, title=f"기수 {category_id}: 날짜별 수강 상태 (그날 24시 기준)")
    for d in days:
        table.add_row(d.day.isoformat(), *(str(d.of(s)) for s in STATUSES), str(d.of(MISSING)), str(d.listed))
    console.print(table)


def export_command(
    category_id: CategoryOption,
    fmt: Annotated[str, typer.Option("--format", help="xlsx | csv")],
    output: Annotated[Path, typer.Option("--output", help="The file to write (replaced when complete).")],
) -> None:
    """A category's current records as .xlsx or .csv (Korean headers; csv in UTF-8 with BOM for Excel)."""
    if fmt not in ("xlsx", "csv"):
        print_error(err_console, f"--format must be xlsx or csv, not {fmt!r}")
        raise typer.Exit(2)
    folder = output.resolve().parent
    if not folder.is_dir():
        print_error(err_console, f"--output: no such folder {folder}")
        raise typer.Exit(2)
    # written beside the target and moved over it at the end: a failed export never leaves half a file
    handle, partial = tempfile.mkstemp(prefix=f".{output.name}.", suffix=".partial", dir=folder)
    try:
        with _connection() as conn, os.fdopen(handle, "wb") as fh:
            count = export(conn, category_id, fmt, fh)  # type: ignore[arg-type]
        os.replace(partial, output)
    finally:
        if os.path.exists(partial):
            os.unlink(partial)
    console.print(f"{count} records of category {category_id} written to {output}", highlight=False)
