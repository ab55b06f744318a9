"""`enrolment-sync demo`: Step 1's example happening, with nothing configured.

Embedded Postgres (a fresh `enrolment_sync_demo` database on it), the KVCA simulator and the worker, all on
loopback; Step 1's exact request body sent over HTTP twice, one learner's status changed in between.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

import httpx
import psycopg
from psycopg.rows import dict_row
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from . import db
from .config import Settings
from .kvca.simulator import RunningSimulator, SimulatorConfig
from .runtime import ThreadedServer, recreate_database

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


def run_demo(settings: Settings, console: Console) -> dict[str, Any]:
    console.rule("[bold]enrolment-sync demo: Step 1, end to end")
    server_url = db.start_embedded(settings.enrolment_sync_home)
    url = recreate_database(server_url, DEMO_DATABASE)
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

                course_id = sim.state.course_ids(303)[0]
                user_id = sorted(r["user_id"] for r in sim.state.enrolments(course_id))[0]
                changed = sim.state.update_enrolment(course_id, user_id, status="CANCELLED")
                console.print(
                    f"\n[bold]2) upstream change:[/bold] {user_id} in course {course_id} -> "
                    f"{changed['status']} ({changed['status_msg']})\n"
                )
                console.print(f"[bold]3) POST {endpoint}[/bold] (same body)")
                second = http.post(endpoint, json=STEP1_BODY)
                console.print(f"HTTP {second.status_code}")
                console.print_json(data=second.json())

    with psycopg.connect(url, row_factory=dict_row) as conn:
        runs = conn.execute(ops_query("3-1")).fetchall()
        alerts = conn.execute(
            "select id, alert_type, severity, source_id, message from alert order by id desc limit 5"
        ).fetchall()
    console.print()
    console.print(_table("3-1. 최근 실행 상태 (run_log)", runs))
    console.print(_table("CHANGED alerts", alerts))
    console.print(
        f"\nThe demo database stays on the embedded server under {settings.enrolment_sync_home}; "
        "run it again any time (it starts fresh)."
    )
    return {"first": first.json(), "second": second.json(), "runs": runs}
