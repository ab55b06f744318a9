"""`enrolment-sync outbox run | status`: the consumers, and the operations check of the queues."""

from __future__ import annotations

import datetime as dt
import json
import signal
import threading
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from ..clock import to_kst
from ..errors import EnrolmentSyncError
from ..runtime import command_settings, prepare_database
from ..terminal import plain_console, print_error
from ..worker_id import new_worker_id
from .store import OutboxStore
from .worker import Only, build, run_consumers

outbox_app = typer.Typer(help="Outbox consumers: sheet and notifications.", no_args_is_help=True)
console = plain_console()
err_console = plain_console(stderr=True)
PIPED_WIDTH = 100_000  # no cut when not on a terminal; a table is only as wide as its content
TERMINAL_ERROR_CHARS = 300  # on a terminal; piped output and --json carry the whole error


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
        print_error(err_console, f"--only must be sheet or notify, not {only!r}")
        raise typer.Exit(2)
    settings = command_settings()
    stop = threading.Event()
    install_stop_handlers(stop)
    try:
        url = prepare_database(settings)
        which: Only | None = only  # type: ignore[assignment]
        consumers = build(settings, url, only=which, batch=batch, stop=stop)
    except EnrolmentSyncError as exc:
        print_error(err_console, exc)
        raise typer.Exit(1) from exc
    try:
        counters = run_consumers(consumers, settings, once=once, stop=stop)
    except EnrolmentSyncError as exc:
        print_error(err_console, exc)
        raise typer.Exit(1) from exc
    finally:
        consumers.close()
    console.print_json(
        data={k: v for k, v in vars(counters).items() if k != "errors"} | {"errors": counters.errors[-5:]}
    )


@outbox_app.command("status")
def status_command(
    dead: Annotated[int, typer.Option(min=0, help="How many dead messages to list.")] = 20,
    as_json: Annotated[
        bool, typer.Option("--json", help="One JSON object (times in UTC and KST), for scripts.")
    ] = False,
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
        print_error(err_console, exc)
        raise typer.Exit(1) from exc
    if as_json:
        print(json.dumps(status_json(queues, dead_rows), ensure_ascii=False, indent=2))
        return
    # Piped or redirected, Rich would cut every value to 80 columns: a script or a file gets whole values.
    out = console if console.is_terminal else Console(width=PIPED_WIDTH, soft_wrap=True, markup=False)
    table = Table("queue", "pending", "processing", "ready", "dead", "oldest open (s)", "max attempts", title="outbox")
    for r in queues:
        table.add_row(
            Text(r["queue"]),
            str(r["pending"]),
            str(r["processing"]),
            str(r["ready"]),
            str(r["dead"]),
            "" if r["oldest_open_age_s"] is None else str(r["oldest_open_age_s"]),
            "" if r["max_attempts_so_far"] is None else str(r["max_attempts_so_far"]),
        )
    out.print(table)
    if dead_rows:
        listing = Table("queue", "id", "what", "attempts", "last_error", "updated (KST)", title="dead messages")
        for r in dead_rows:
            error = r["last_error"] or ""
            listing.add_row(
                Text(r["queue"]),
                str(r["id"]),
                Text(r["what"]),
                str(r["attempts"]),
                Text(error[:TERMINAL_ERROR_CHARS] if console.is_terminal else error),
                to_kst(r["updated_at"]).strftime("%Y-%m-%d %H:%M:%S"),
            )
        out.print(listing)


def status_json(queues: list[dict[str, Any]], dead_rows: list[dict[str, Any]]) -> dict[str, Any]:
    """What `outbox status --json` prints: every value whole, times as ISO 8601 in UTC and in KST."""
    return {
        "queues": [dict(r) for r in queues],
        "dead": [
            {
                "queue": r["queue"],
                "id": r["id"],
                "what": r["what"],
                "attempts": r["attempts"],
                "last_error": r["last_error"],
                "updated_at": r["updated_at"].astimezone(dt.UTC).isoformat(),
                "updated_at_kst": to_kst(r["updated_at"]).isoformat(),
            }
            for r in dead_rows
        ],
    }
