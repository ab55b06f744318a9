"""`enrolment-sync demo`: Step 1's example happening, with nothing configured.

Embedded Postgres (a fresh `enrolment_sync_demo` database on it), the KVCA simulator and the worker, all on
loopback; Step 1's exact request body sent over HTTP twice, one learner's status changed in between. Then
the unattended worker: a schedule fires, an injected fault fails its run, and the RETRY follows by itself.
"""

from __future__ import annotations

import secrets
import shutil
import sys
import threading
import time
from collections.abc import Callable
from importlib import resources
from typing import Any

import httpx
import psycopg
from psycopg.rows import dict_row
from pydantic import SecretStr
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from . import db
from .config import Settings
from .outbox.workbook import read_local_sheet
from .outbox.worker import build, run_consumers

DEMO_DATABASE = "enrolment_sync_demo"
STEP1_BODY = {"category_id": 303, "trigger_type": "SCHEDULER", "max_categories": 1, "max_users_per_course": 500}


def ops_query(name: str) -> str:
    """One of the seeds' operations queries, verbatim, from the package's own copy."""
    return resources.files("enrolment_sync").joinpath(f"sql/ops/{name}.sql").read_text("utf-8")


def _table(title: str, rows: list[dict[str, Any]]) -> Table:
    table = Table(title=title, show_lines=False)
    if not rows:
        table.add_column("(no rows)")
        return table
    for column in rows[0]:
        table.add_column(column)
    for row in rows:
        table.add_row(*("" if v is None else escape(str(v)) for v in row.values()))
    return table


def _as_dicts(rows: list[list[Any]]) -> list[dict[str, Any]]:
    if not rows:
        return []
    header = [str(h) for h in rows[0]]
    return [dict(zip(header, row, strict=False)) for row in rows[1:]]


def _cancel_first_learner(sim: Any) -> tuple[int, str, dict[str, Any]]:
    """Step 2 of the story: the first learner of the first course is cancelled upstream."""
    course_id = sim.state.course_ids(303)[0]
    user_id = sorted(r["user_id"] for r in sim.state.enrolments(course_id))[0]
    return course_id, user_id, sim.state.update_enrolment(course_id, user_id, status="CANCELLED")


def demo_main(settings: Settings, console: Console) -> dict[str, Any]:
    """Tell Step 1's story on the console; returns the two answers and run_log's rows (for the tests)."""
    from .testing.databases import recreate_database
    from .testing.kvca import RunningSimulator, SimulatorConfig
    from .testing.servers import JsonReceiver, ThreadedServer

    console.rule("[bold]enrolment-sync demo: Step 1, end to end")
    server_url = db.start_embedded(settings.enrolment_sync_home)
    url = recreate_database(server_url, DEMO_DATABASE)
    demo_home = settings.enrolment_sync_home / "demo"  # the demo's local sheet files, fresh each time
    shutil.rmtree(demo_home, ignore_errors=True)
    demo_home.mkdir(parents=True)
    applied = db.migrate(db.parse_target(url))
    console.print(f"embedded Postgres ready, database [bold]{DEMO_DATABASE}[/bold] migrated ({', '.join(applied)})")

    sim_config = SimulatorConfig(
        courses=1,
        users=89,
        client_id=settings.kvca_client_id,
        client_secret=settings.kvca_client_secret.get_secret_value(),
    )
    from .api import create_app

    with RunningSimulator(sim_config) as sim:
        console.print(f"KVCA simulator on {sim.base_url}: category 303, 1 course, 89 learners")
        worker_settings = settings.model_copy(update={"kvca_base_url": sim.base_url, "worker_api_token": None})
        with ThreadedServer(create_app(worker_settings, database_url=url)) as worker:
            endpoint = f"{worker.base_url}/jobs/enrolment-sync"
            console.print(f"worker on {worker.base_url}  (OpenAPI: {worker.base_url}/docs)\n")
            with httpx.Client(timeout=120) as http:
                console.print(f"[bold]1) POST {endpoint}[/bold] {STEP1_BODY}")
                first = http.post(endpoint, json=STEP1_BODY)
                console.print(f"HTTP {first.status_code}")
                console.print_json(data=first.json())

                course_id, user_id, changed = _cancel_first_learner(sim)
                console.print(
                    f"\n[bold]2) upstream change:[/bold] {user_id} in course {course_id} -> "
                    f"{changed['status']} ({changed['status_msg']})\n"
                )
                console.print(f"[bold]3) POST {endpoint}[/bold] (same body)")
                second = http.post(endpoint, json=STEP1_BODY)
                console.print(f"HTTP {second.status_code}")
                console.print_json(data=second.json())

    console.print("\n[bold]4) outbox consumers, once:[/bold] sheet_outbox -> sheet -> notification_outbox -> channel")
    with JsonReceiver() as receiver:
        outbox_settings = settings.model_copy(
            update={
                "notify_urls": receiver.url(""),
                "notify_urls_high": "",
                "google_sheet_id": None,
                "google_service_account_file": None,
                "enrolment_sync_home": demo_home,
            }
        )
        stop = threading.Event()
        consumers = build(outbox_settings, url, stop=stop)
        try:
            counters = run_consumers(consumers, outbox_settings, once=True, stop=stop)
        finally:
            consumers.close()
        delivered = receiver.messages()
    workbook = demo_home / "sheets" / "category_303.xlsx"
    console.print(
        f"sheet rows: {counters.rows_appended} appended, {counters.rows_updated} updated -> [bold]{workbook}[/bold]"
    )
    if workbook.exists():
        rows = read_local_sheet(workbook)
        shown = ["source_id", "user_id", "status", "status_msg", "progress_rate", "last_change", "run_id"]
        sample = [{k: r.get(k) for k in shown} for r in _as_dicts(rows[:4])]
        console.print(_table(f"{workbook.name} (first rows of {len(rows) - 1})", sample))
    for message in delivered:
        console.print(f"[bold]delivered to the webhook channel:[/bold] {escape(str(message.get('title')))}")
        console.print(escape(str(message.get("message"))))

    with psycopg.connect(url, row_factory=dict_row) as conn:
        runs = conn.execute(ops_query("3-1")).fetchall()
        alerts = conn.execute(
            "select id, alert_type, severity, source_id, message from alert order by id desc limit 5"
        ).fetchall()
    console.print()
    console.print(_table("3-1. 최근 실행 상태 (run_log)", runs))
    console.print(_table("CHANGED alerts", alerts))
    unattended = _unattended_story(settings, url, console, lambda: RunningSimulator(sim_config), ThreadedServer)
    console.print(
        f"\nThe demo database stays on the embedded server under {settings.enrolment_sync_home}; "
        "run it again any time (it starts fresh)."
    )
    _serve_console(settings, url, console, ThreadedServer)
    return {"first": first.json(), "second": second.json(), "runs": runs, "unattended": unattended}


def _serve_console(settings: Settings, url: str, console: Console, server_class: Any) -> None:
    """End with the operations console over the demo's data, with a one-off admin password (docs/console.md).
    It stays up until Enter when run from a terminal; otherwise (scripts, tests) it is checked and closed."""
    from .api import create_app

    password = secrets.token_urlsafe(12)
    console_settings = settings.model_copy(
        update={"ops_admin_password": SecretStr(password), "ops_readonly_password": None, "worker_api_token": None}
    )
    with server_class(create_app(console_settings, database_url=url)) as server:
        with httpx.Client(base_url=server.base_url, timeout=30) as http:
            login = {"username": "demo", "password": password}
            http.post("/ops/login", data=login, headers={"Origin": server.base_url})
            overview = http.get("/ops")
        console.print(
            f"\n[bold]operations console:[/bold] {server.base_url}/ops  (HTTP {overview.status_code})\n"
            f"   login: any user name (kept in the audit), password [bold]{password}[/bold] (admin, this demo only)"
        )
        if sys.stdin.isatty():
            console.input("   The console stays up until you press Enter ... ")


def _unattended_story(
    settings: Settings, url: str, console: Console, simulator: Callable[[], Any], server: Callable[..., Any]
) -> list[dict[str, Any]]:
    """5) serve's own loops: a schedule fires, an injected upstream 503 fails its run, the RETRY follows.

    `simulator` and `server` are the test doubles demo_main imported (the only place the product may)."""
    from .api import create_app

    every_s, retry = 4, "1s"
    console.print(
        f"\n[bold]5) unattended:[/bold] a schedule every {every_s}s, an upstream 503 on its first run, "
        f"the automatic RETRY after {retry} (RETRY_DELAYS)"
    )
    with simulator() as sim:
        _cancel_first_learner(sim)  # the same upstream as at the end of step 3
        sim.state.add_fault(status=503, count=1, path_contains="/categories/")
        loop_settings = settings.model_copy(
            update={
                "kvca_base_url": sim.base_url,
                "worker_api_token": None,
                "kvca_retries": 0,
                "retry_delays": retry,
                "scheduler_tick_seconds": 0.2,
                "request_poll_interval_seconds": 0.2,
            }
        )
        with (
            server(create_app(loop_settings, database_url=url, unattended=True)),
            psycopg.connect(url, autocommit=True, row_factory=dict_row) as conn,
        ):
            params = {"category_id": 303, "max_categories": 1, "max_users_per_course": 500, "cron_expr": None}
            added = conn.execute(
                db.query("schedule_insert"), {**params, "timezone": "Asia/Seoul", "every_seconds": every_s}
            )
            schedule_id = added.fetchone()["id"]  # type: ignore[index]
            console.print(
                f"schedule {schedule_id} (= enrolment-sync schedule add --category-id 303 --every {every_s}s)"
            )
            deadline = time.monotonic() + 60
            while (
                time.monotonic() < deadline
                and not conn.execute(
                    "select 1 from run_log where trigger_type = 'RETRY' and status <> 'RUNNING'"
                ).fetchone()
            ):
                time.sleep(0.1)
            conn.execute("delete from sync_schedule where id = %s", (schedule_id,))
            rows = conn.execute(
                "select id as run_id, trigger_type, status, error_group, request_id, retry_of_run_id"
                " from run_log where request_id is not null order by id"
            ).fetchall()
    console.print(_table("run_log: the slot's run and its automatic RETRY", rows))
    return rows
