"""`alerts ack` and `silence add|list|remove`: the alert lifecycle from the terminal (docs/alerts.md)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

import psycopg
import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from . import db
from .alerts import parse_kst, silence_spec
from .clock import SystemClock, to_kst
from .runtime import command_settings, prepare_database, run_coroutine
from .store import alerts

T = TypeVar("T")
silence_app = typer.Typer(
    help="Silences: matching alerts are recorded but never sent while one lasts.", no_args_is_help=True
)
console = Console()
err_console = Console(stderr=True)


def _fail(message: str) -> typer.Exit:
    err_console.print(Text.assemble(("error: ", "red"), message), soft_wrap=True)
    return typer.Exit(1)


def _in_transaction(work: Callable[[psycopg.AsyncConnection[Any]], Awaitable[T]]) -> T:
    url = prepare_database(command_settings())

    async def go() -> T:
        database = db.Database(db.parse_target(url), min_size=1, max_size=1)
        await database.open()
        try:
            async with database.transaction() as conn:
                return await work(conn)
        finally:
            await database.close()

    return run_coroutine(go())


def _kst(moment: Any) -> str:
    return to_kst(moment).strftime("%Y-%m-%d %H:%M KST") if moment is not None else "-"


def ack_command(
    alert_id: Annotated[int, typer.Argument(help="The alert's id.")],
    note: Annotated[str | None, typer.Option(help="What you are doing about it (kept on the alert).")] = None,
    by: Annotated[str, typer.Option(help="Who acknowledges it (kept on the alert).")] = "operator",
) -> None:
    """Acknowledge an open alert: repeats are still counted, no escalation is sent."""

    async def work(conn: psycopg.AsyncConnection[Any]) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        row = await alerts.acknowledge(conn, alert_id, by=by, note=note, now=SystemClock().now())
        return row, (await alerts.get(conn, alert_id) if row is None else None)

    row, existing = _in_transaction(work)
    if row is not None:
        console.print(
            Text(f"acknowledged alert {row['id']} ({row['alert_type']} {row['severity']}) by {row['acknowledged_by']}")
        )
        return
    if existing is None:
        raise _fail(f"no alert with id {alert_id}")
    if existing["resolved"]:
        console.print(Text(f"alert {alert_id} is already resolved ({_kst(existing['resolved_at'])})"))
        return
    when = _kst(existing["acknowledged_at"])
    console.print(Text(f"alert {alert_id} was already acknowledged by {existing['acknowledged_by']} ({when})"))


@silence_app.command("add")
def silence_add(
    comment: Annotated[str, typer.Option(help='Why, for the people reading it: "방학", "점검".')],
    end: Annotated[str, typer.Option(help="When it ends, e.g. 2027-01-03 09:00 (KST).")],
    start: Annotated[str | None, typer.Option(help="When it starts (KST); default now.")] = None,
    category: Annotated[int | None, typer.Option(help="Only alerts of this category (cohort).")] = None,
    alert_type: Annotated[str | None, typer.Option("--type", help="CHANGED, FAILED, STALE or DEAD_LETTER.")] = None,
    severity: Annotated[str | None, typer.Option(help="low, medium or high.")] = None,
    by: Annotated[str, typer.Option(help="Who adds it.")] = "operator",
) -> None:
    """Silence alerts by category, type and/or severity for a while."""
    now = SystemClock().now()
    try:
        spec = silence_spec(
            category_id=category,
            alert_type=alert_type,
            severity=severity,
            starts_at=parse_kst(start) if start else now,
            ends_at=parse_kst(end),
            comment=comment,
        )
    except ValueError as exc:
        raise _fail(str(exc)) from exc
    row = _in_transaction(lambda conn: alerts.add_silence(conn, spec, by=by, now=now))
    console.print(
        Text(f"silence {row['id']} added: {_kst(row['starts_at'])} – {_kst(row['ends_at'])} ({row['comment']})")
    )


@silence_app.command("list")
def silence_list(
    all_: Annotated[bool, typer.Option("--all", help="Include silences that are over.")] = False,
) -> None:
    """Silences in force or to come, newest first."""
    now = SystemClock().now()
    rows = _in_transaction(lambda conn: alerts.silences(conn, now=now, include_ended=all_))
    table = Table("id", "category", "type", "severity", "start (KST)", "end (KST)", "active", "comment", "by")
    for r in rows:
        table.add_row(
            str(r["id"]),
            str(r["category_id"] or "*"),
            r["alert_type"] or "*",
            r["severity"] or "*",
            _kst(r["starts_at"]),
            _kst(r["ends_at"]),
            "yes" if r["active"] else "no",
            Text(r["comment"]),
            Text(r["created_by"]),
        )
    console.print(table)


@silence_app.command("remove")
def silence_remove(
    silence_id: Annotated[int, typer.Argument(help="The silence's id.")],
    by: Annotated[str, typer.Option(help="Who removes it.")] = "operator",
) -> None:
    """End a silence now: alerts raised from now on are sent again."""
    removed = _in_transaction(lambda conn: alerts.remove_silence(conn, silence_id, by=by, now=SystemClock().now()))
    if not removed:
        raise _fail(f"no silence with id {silence_id} in force")
    console.print(Text(f"silence {silence_id} removed"))
