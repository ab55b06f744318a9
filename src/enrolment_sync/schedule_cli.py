"""`enrolment-sync schedule add | list | pause | resume | remove`: schedules stored in the database."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

import psycopg
import typer
from rich.table import Table

from . import db
from .errors import EnrolmentSyncError
from .runtime import command_settings, prepare_database, run_coroutine
from .scheduler import store
from .scheduler.slots import DEFAULT_TIMEZONE, kst, parse_duration_s
from .terminal import plain_console, print_error

T = TypeVar("T")

schedule_app = typer.Typer(
    help="Schedules kept in the database; `serve` fires each slot once and runs the request.", no_args_is_help=True
)
console = plain_console()
err_console = plain_console(stderr=True)


def _in_transaction(work: Callable[[psycopg.AsyncConnection[Any]], Awaitable[T]]) -> T:
    settings = command_settings()

    async def go() -> T:
        database = db.Database(db.parse_target(prepare_database(settings)), min_size=1, max_size=1)
        await database.open()
        try:
            async with database.transaction() as conn:
                return await work(conn)
        finally:
            await database.close()

    try:
        return run_coroutine(go())
    except (EnrolmentSyncError, store.ScheduleNotFound) as exc:
        print_error(err_console, exc)
        raise typer.Exit(1) from exc


@schedule_app.command("add")
def add(
    category_id: Annotated[int, typer.Option(min=1, help="The category (기수) to sync.")],
    cron: Annotated[str | None, typer.Option(help="Five-field cron expression, e.g. '0 9 * * *'.")] = None,
    timezone: Annotated[str, typer.Option(help="Time zone of --cron (IANA name).")] = DEFAULT_TIMEZONE,
    every: Annotated[str | None, typer.Option(help="Fixed interval instead of --cron: 30s, 15m, 6h.")] = None,
    max_categories: Annotated[int, typer.Option(min=1, max=100)] = 1,
    max_users_per_course: Annotated[int, typer.Option(min=1, max=100_000)] = 500,
) -> None:
    """Add a schedule; prints its id."""
    try:
        every_s = parse_duration_s(every) if every is not None else None
    except EnrolmentSyncError as exc:
        print_error(err_console, f"--every: {exc}")
        raise typer.Exit(2) from exc
    if (cron is None) == (every_s is None):
        print_error(err_console, "give either --cron EXPR or --every DURATION")
        raise typer.Exit(2)
    schedule_id = _in_transaction(
        lambda conn: store.add_schedule(
            conn,
            category_id=category_id,
            cron=cron,
            timezone=timezone,
            every_s=every_s,
            max_categories=max_categories,
            max_users_per_course=max_users_per_course,
        )
    )
    console.print(schedule_id)


@schedule_app.command("list")
def list_(
    as_json: Annotated[bool, typer.Option("--json", help="One JSON array, times in UTC and KST.")] = False,
) -> None:
    """Every schedule with its next slot (KST), its last slot and its category's latest run."""
    views = _in_transaction(lambda conn: store.list_schedules(conn))
    if as_json:
        console.print_json(json.dumps([v.as_json() for v in views], ensure_ascii=False))
        return
    table = Table("id", "category", "rule", "state", "next slot (KST)", "last slot (KST)", "last run")
    for v in views:
        r = v.row
        state = "enabled" if r["enabled"] else f"paused: {r['paused_reason']}"
        last_run = "-" if r["last_run_id"] is None else f"{r['last_run_id']} {r['last_run_status']}"
        if r["last_run_error_group"]:
            last_run += f" ({r['last_run_error_group']})"
        table.add_row(
            str(v.id),
            str(r["category_id"]),
            v.spec.describe(),
            state,
            kst(v.next_slot_at),
            kst(r["last_slot_at"]),
            last_run,
        )
    console.print(table)


@schedule_app.command("pause")
def pause(schedule_id: Annotated[int, typer.Argument(help="The schedule's id.")]) -> None:
    """Pause a schedule (no slot fires until it is resumed)."""
    changed = _in_transaction(lambda conn: store.pause_schedule(conn, schedule_id))
    console.print(f"schedule {schedule_id} {'paused' if changed else 'was already paused'}")


@schedule_app.command("resume")
def resume(schedule_id: Annotated[int, typer.Argument(help="The schedule's id.")]) -> None:
    """Resume a schedule paused by hand or by repeated failures (slots of the pause are skipped)."""
    changed = _in_transaction(lambda conn: store.resume_schedule(conn, schedule_id))
    console.print(f"schedule {schedule_id} {'resumed' if changed else 'was not paused'}")


@schedule_app.command("remove")
def remove(schedule_id: Annotated[int, typer.Argument(help="The schedule's id.")]) -> None:
    """Remove a schedule (its requests and runs stay in sync_request and run_log)."""
    _in_transaction(lambda conn: store.remove_schedule(conn, schedule_id))
    console.print(f"schedule {schedule_id} removed")
