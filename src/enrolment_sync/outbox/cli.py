"""`enrolment-sync outbox run | status`: the consumers, and the operations check of the queues."""

from __future__ import annotations

import signal
import threading
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from ..errors import EnrolmentSyncError
from ..runtime import command_settings, prepare_database
from ..worker_id import new_worker_id
from .store import OutboxStore
from .worker import Only, build, run_consumers

outbox_app = typer.Typer(help="Outbox consumers: sheet and notifications.", no_args_is_help=True)
console = Console()
err_console = Console(stderr=True)


def install_stop_handlers(stop: threading.Event) -> None:
    """SIGTERM / SIGINT: finish (or give back) the batch in hand, then exit."""

    def handler(signum: int, _frame: Any) -> None:
        err_console.print(f"signal {signal.Signals(signum).name}: finishing the batch in hand, then stopping")
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


@outbox_app.command("run")
def run_command(
    once: Annotated[bool, typer.Option("--once", help="Process what is ready now, then exit.")] = False,
    only: Annotated[str | None, typer.Option("--only", help="sheet | notify (default: both).")] = None,
    batch: Annotated[int | None, typer.Option("--batch", min=1, max=5000, help="Messages claimed per batch.")] = None,
) -> None:
    """Run the consumers (any number of processes and hosts may run against one database)."""
    if only not in (None, "sheet", "notify"):
        err_console.print(f"[red]error:[/red] --only must be sheet or notify, not {only!r}")
        raise typer.Exit(2)
    settings = command_settings()
    stop = threading.Event()
    install_stop_handlers(stop)
    try:
        url = prepare_database(settings)
        which: Only | None = only  # type: ignore[assignment]
        consumers = build(settings, url, only=which, batch=batch, stop=stop)
    except EnrolmentSyncError as exc:
        err_console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from exc
    try:
        counters = run_consumers(consumers, settings, once=once, stop=stop)
    except EnrolmentSyncError as exc:
        err_console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from exc
    finally:
        consumers.close()
    console.print_json(
        data={k: v for k, v in vars(counters).items() if k != "errors"} | {"errors": counters.errors[-5:]}
    )


@outbox_app.command("status")
def status_command(
    dead: Annotated[int, typer.Option(min=0, help="How many dead messages to list.")] = 20,
) -> None:
    """Backlog, oldest pending age and dead messages of both queues (the same SQL as docs/outbox.md)."""
    settings = command_settings()
    from .. import db

    try:
        url = prepare_database(settings)
        store = OutboxStore(db.parse_target(url), consumer_id=new_worker_id(), lease_s=0)
        try:
            queues = store.status()
            dead_rows = store.dead(limit=dead) if dead else []
        finally:
            store.close()
    except EnrolmentSyncError as exc:
        err_console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from exc
    table = Table("queue", "pending", "processing", "ready", "dead", "oldest open (s)", "max attempts", title="outbox")
    for r in queues:
        table.add_row(
            r["queue"],
            str(r["pending"]),
            str(r["processing"]),
            str(r["ready"]),
            str(r["dead"]),
            "" if r["oldest_open_age_s"] is None else str(r["oldest_open_age_s"]),
            "" if r["max_attempts_so_far"] is None else str(r["max_attempts_so_far"]),
        )
    console.print(table)
    if dead_rows:
        listing = Table("queue", "id", "what", "attempts", "last_error", "updated_at", title="dead messages")
        for r in dead_rows:
            listing.add_row(
                r["queue"],
                str(r["id"]),
                r["what"],
                str(r["attempts"]),
                (r["last_error"] or "")[:100],
                r["updated_at"].isoformat(timespec="seconds"),
            )
        console.print(listing)
