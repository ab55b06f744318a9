"""The `enrolment-sync` command: serve | migrate | sync | simulator | demo | alerts | check."""

from __future__ import annotations

import ipaddress
import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from . import db
from .alerts_cli import ack_command, silence_app
from .errors import EnrolmentSyncError
from .history_cli import export_command, history_command, report_command
from .keymigration import migrate_keys_command
from .outbox.cli import outbox_app
from .outbox.notify_cli import notify_app
from .runtime import command_settings, prepare_database, run_coroutine
from .schedule_cli import schedule_app
from .terminal import plain_console, print_error

app = typer.Typer(
    help="Mirror KVCA enrolments into Postgres, with alerts and outbox workers.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
alerts_app = typer.Typer(help="Look at and resolve alerts.", no_args_is_help=True)
app.add_typer(alerts_app, name="alerts")
app.add_typer(outbox_app, name="outbox")
app.add_typer(schedule_app, name="schedule")
app.add_typer(notify_app, name="notify")
app.add_typer(silence_app, name="silence")
alerts_app.command("ack")(ack_command)
app.command("migrate-keys")(migrate_keys_command)
app.command("history")(history_command)
app.command("report")(report_command)
app.command("export")(export_command)

console = plain_console()
err_console = plain_console(stderr=True)


def _fail(exc: BaseException, code: int = 1) -> typer.Exit:
    # upstream and database texts are data, not markup; piped output is never cut to the terminal width
    print_error(err_console, exc)
    return typer.Exit(code)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 18080,
    allow_unauthenticated: Annotated[
        bool, typer.Option(help="Listen beyond loopback without WORKER_API_TOKEN (not recommended).")
    ] = False,
    api_only: Annotated[
        bool, typer.Option(help="Only the HTTP API: no scheduler loop, no request runner (docs/unattended.md).")
    ] = False,
) -> None:
    """Run the worker: the HTTP API, the scheduler loop and the request runner (docs/unattended.md)."""
    import uvicorn

    from .api import create_app

    settings = command_settings()
    if not _is_loopback(host) and settings.worker_api_token is None and not allow_unauthenticated:
        raise _fail(
            ValueError(
                f"refusing to listen on {host} without WORKER_API_TOKEN: set a token, or pass "
                "--allow-unauthenticated if something else guards this port"
            ),
            2,
        )
    try:
        url = prepare_database(settings)
    except EnrolmentSyncError as exc:
        raise _fail(exc) from exc
    app_ = create_app(settings, database_url=url, unattended=not api_only)
    uvicorn.run(app_, host=host, port=port, log_level="warning")


@app.command()
def migrate() -> None:
    """Apply pending SQL migrations (forward only, idempotent)."""
    settings = command_settings()
    try:
        url, _ = db.resolve_url(settings)
        applied = db.migrate(db.parse_target(url), notices=lambda note: console.print(note, markup=False))
    except EnrolmentSyncError as exc:
        raise _fail(exc) from exc
    console.print(f"applied: {', '.join(applied)}" if applied else "nothing to apply: the schema is current")


@app.command()
def sync(
    category_id: Annotated[int, typer.Option(min=1, max=db.BIGINT_MAX, help="The category (기수) to sync.")],
    trigger_type: Annotated[str, typer.Option(help="MANUAL | SCHEDULER | RETRY")] = "MANUAL",
    max_categories: Annotated[int, typer.Option(min=1, max=100)] = 1,
    max_users_per_course: Annotated[int, typer.Option(min=1, max=100_000)] = 500,
) -> None:
    """Run the sync once from a terminal (same lease, same run_log); prints the summary JSON."""
    from .api import answer_body
    from .job import SyncJob
    from .sync import SyncRequest

    if trigger_type not in {"MANUAL", "SCHEDULER", "RETRY"}:
        raise _fail(ValueError(f"--trigger-type must be MANUAL, SCHEDULER or RETRY, not {trigger_type!r}"), 2)
    settings = command_settings()
    request = SyncRequest(category_id, trigger_type, max_categories, max_users_per_course)  # type: ignore[arg-type]

    async def go() -> dict[str, Any]:
        url = prepare_database(settings)
        database = db.Database(db.parse_target(url), max_size=max(4, settings.kvca_max_concurrency))
        await database.open()
        try:
            job = SyncJob(database, settings)
            await job.close_abandoned()
            with Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=err_console,
                transient=True,
                disable=not err_console.is_terminal,
            ) as bar:
                task = bar.add_task(f"category {category_id}: courses", total=None)

                def progress(event: str, data: dict[str, Any]) -> None:
                    if event == "courses":
                        current = bar.tasks[0].total or 0
                        bar.update(task, total=current + data["courses"])
                    elif event == "course_done":
                        bar.advance(task)

                outcome = await job.execute(request, progress=progress)
            return answer_body(outcome)
        finally:
            await database.close()

    try:
        body = run_coroutine(go())
    except EnrolmentSyncError as exc:
        raise _fail(exc) from exc
    console.print_json(json.dumps(body, ensure_ascii=False))
    if not body["ok"]:
        raise typer.Exit(1)


@app.command()
def simulator(
    port: Annotated[int, typer.Option(help="TCP port on 127.0.0.1.")] = 18081,
    courses: Annotated[int, typer.Option(min=1)] = 1,
    users: Annotated[int, typer.Option(min=0)] = 89,
    latency_ms: Annotated[float, typer.Option(min=0)] = 0.0,
    seed: Annotated[int, typer.Option()] = 33,
    subcategories: Annotated[int, typer.Option(min=0)] = 0,
) -> None:
    """Serve the KVCA contract with generated Korean data (control endpoints under /_control)."""
    from .testing.kvca import SimulatorConfig
    from .testing.kvca import serve as serve_sim

    settings = command_settings()
    config = SimulatorConfig(
        courses=courses,
        users=users,
        latency_ms=latency_ms,
        seed=seed,
        subcategories=subcategories,
        client_id=settings.kvca_client_id,
        client_secret=settings.kvca_client_secret.get_secret_value(),
    )
    err_console.print(f"KVCA simulator on http://127.0.0.1:{port} ({courses} course(s) x {users} learners)")
    serve_sim(config, host="127.0.0.1", port=port)


@app.command()
def demo(
    home: Annotated[Path | None, typer.Option(help="Data folder (default ENROLMENT_SYNC_HOME).")] = None,
) -> None:
    """Step 1's example, end to end: embedded Postgres + simulator + worker, two runs over HTTP."""
    from .demo import demo_main

    settings = command_settings()
    if home is not None:
        settings = settings.model_copy(update={"enrolment_sync_home": home})
    try:
        demo_main(settings, Console())  # the demo styles its own lines and escapes the data it prints
    except EnrolmentSyncError as exc:
        raise _fail(exc) from exc


@alerts_app.command("list")
def alerts_list(
    all_: Annotated[bool, typer.Option("--all", help="Include resolved alerts.")] = False,
    limit: Annotated[int, typer.Option(min=1)] = 50,
) -> None:
    """Open alerts, newest first."""
    import psycopg

    from .store import alerts

    settings = command_settings()
    url = prepare_database(settings)
    target = db.parse_target(url)
    with psycopg.connect(target.conninfo, **target.connect_kwargs()) as conn:
        rows = alerts.listed(conn, include_resolved=all_, limit=limit)
    table = Table("id", "type", "severity", "source_id", "occurrences", "created_at", "resolved", "message")
    for r in rows:
        table.add_row(
            str(r["id"]),
            r["alert_type"],
            r["severity"],
            r["source_id"],
            str(r["occurrences"]),
            r["created_at"].isoformat(timespec="seconds"),
            str(r["resolved"]),
            r["message"][:80],
        )
    console.print(table)


@alerts_app.command("resolve")
def alerts_resolve(
    alert_id: Annotated[int, typer.Argument(help="The alert's id.")],
    by: Annotated[str, typer.Option(help="Who resolves it (kept on the alert).")] = "operator",
) -> None:
    """Resolve one alert by hand."""
    from .clock import SystemClock
    from .store import alerts

    settings = command_settings()
    url = prepare_database(settings)

    async def go() -> dict[str, Any] | None:
        database = db.Database(db.parse_target(url), min_size=1, max_size=1)
        await database.open()
        try:
            async with database.transaction() as conn:
                row = await alerts.resolve_one(conn, alert_id, by=by, now=SystemClock().now())
                if row is None:
                    existing = await alerts.get(conn, alert_id)
                    if existing is None:
                        raise _fail(LookupError(f"no alert with id {alert_id}"), 1)
                    console.print(f"alert {alert_id} was already resolved at {existing['resolved_at']}")
                return row
        finally:
            await database.close()

    row = run_coroutine(go())
    if row is not None:
        console.print(f"resolved alert {row['id']} ({row['alert_type']} {row['severity']} {row['source_id']})")


@app.command()
def check() -> None:
    """Raise a STALE alert for each category with no successful run for STALE_AFTER_HOURS (for a scheduler)."""
    from .clock import SystemClock
    from .staleness import check_staleness

    settings = command_settings()
    url = prepare_database(settings)

    async def go() -> list[dict[str, Any]]:
        database = db.Database(db.parse_target(url), min_size=1, max_size=2)
        await database.open()
        try:
            return await check_staleness(database, settings, SystemClock())
        finally:
            await database.close()

    stale = run_coroutine(go())
    if not stale:
        console.print(f"every category synced within the last {settings.stale_after_hours:g} h")
        return
    for item in stale:
        console.print(json.dumps(item, ensure_ascii=False, default=str))
    raise typer.Exit(3)


def main() -> None:  # pragma: no cover - console entry point alias
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
