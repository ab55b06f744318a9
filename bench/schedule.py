"""`python -m bench schedule`: 50 schedules on the same minute, two `serve` processes.

Every request must run once, the first must start within 2 s of its slot, and none may fail with
LOCK_CONFLICT (a pulled request waits for the job lease). The simulator serves 50 categories (303 and 49
subcategories) in its own process; each schedule syncs one of them with `cron '* * * * *'`; the workers run
with the default settings (1 s tick, 1 s poll). Prints a table and, last, one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import psycopg
from psycopg.rows import dict_row

from enrolment_sync import db
from enrolment_sync.testing.databases import recreate_database
from enrolment_sync.testing.servers import free_port

from .common import postgres_server

BENCH_DBNAME = "enrolment_sync_bench_schedule"
CLI = [sys.executable, "-m", "enrolment_sync.cli"]


def _wait(condition: Any, *, timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise SystemExit(f"bench schedule: timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.05)
    return value


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code < 500
    except httpx.HTTPError:
        return False


def _start(args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen([*CLI, *args], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def run(schedules: int, workers: int, users: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-schedule-") as work, postgres_server(Path(work)) as (server, _):
        return _run(server, schedules, workers, users)


def _run(server: str, schedules: int, workers: int, users: int) -> dict[str, Any]:
    url = recreate_database(server, BENCH_DBNAME)
    db.migrate(db.parse_target(url))
    base_env = {k: v for k, v in os.environ.items() if not k.startswith(("KVCA_", "DATABASE_URL", "WORKER_API"))}
    sim_port = free_port()
    sim_args = ["simulator", "--port", str(sim_port), "--users", str(users), "--subcategories", str(schedules - 1)]
    procs = [_start(sim_args, {**base_env, "LOG_LEVEL": "WARNING"})]
    kvca = f"http://127.0.0.1:{sim_port}"
    try:
        _wait(lambda: _answers(f"{kvca}/_control/stats"), timeout_s=30, what="the simulator")
        env = {**base_env, "DATABASE_URL": url, "KVCA_BASE_URL": kvca, "LOG_LEVEL": "WARNING"}
        ports = [free_port() for _ in range(workers)]
        procs += [_start(["serve", "--port", str(p)], env) for p in ports]
        for port in ports:
            _wait(lambda p=port: _answers(f"http://127.0.0.1:{p}/healthz"), timeout_s=60, what="a worker")
        with psycopg.connect(url, autocommit=True, row_factory=dict_row) as pg:
            # the next minute at least 5 s away, so every schedule is stored before it
            pg.execute("select pg_sleep(5 - extract(second from now())) where extract(second from now()) > 55")
            pg.execute(
                "insert into sync_schedule (category_id, cron_expr, timezone)"
                " select 303 + g, '* * * * *', 'Asia/Seoul' from generate_series(0, %s) g",
                (schedules - 1,),
            )
            slot = pg.execute("select date_trunc('minute', now()) + interval '1 minute' as at").fetchone()["at"]
            print(f"bench schedule: {schedules} schedules fire at {slot.isoformat()}", file=sys.stderr)

            def all_done() -> bool:
                row = pg.execute(
                    "select count(*) as n from sync_slot s join sync_request q on q.id = s.request_id"
                    " where s.slot_at = %s and q.status = 'DONE'",
                    (slot,),
                ).fetchone()
                return bool(row["n"] >= schedules)

            _wait(all_done, timeout_s=180, what="every request of the slot to finish")
            pg.execute("update sync_schedule set enabled = false, paused_at = now(), paused_reason = 'bench over'")
            rows = pg.execute(
                "select q.id, s.fired_by, r.id as run_id, r.status, r.error_group, r.worker_id,"
                " r.started_at, r.finished_at from sync_slot s join sync_request q on q.id = s.request_id"
                " left join run_log r on r.request_id = q.id where s.slot_at = %s order by r.started_at",
                (slot,),
            ).fetchall()
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=30)
    runs_per_request: dict[int, int] = {}
    for r in rows:
        runs_per_request[r["id"]] = runs_per_request.get(r["id"], 0) + (r["run_id"] is not None)
    starts = [(r["started_at"] - slot).total_seconds() for r in rows if r["started_at"]]
    durations = [(r["finished_at"] - r["started_at"]).total_seconds() for r in rows if r["finished_at"]]
    return {
        "schedules": schedules,
        "workers": workers,
        "slot_at": slot.isoformat(),
        "requests": len(runs_per_request),
        "requests_run_once": sum(1 for n in runs_per_request.values() if n == 1),
        "runs": sum(runs_per_request.values()),
        "success": sum(1 for r in rows if r["status"] == "SUCCESS"),
        "lock_conflicts": sum(1 for r in rows if r["error_group"] == "LOCK_CONFLICT"),
        "first_start_after_slot_s": round(min(starts), 3),
        "median_start_after_slot_s": round(statistics.median(starts), 3),
        "last_finish_after_slot_s": round(max((r["finished_at"] - slot).total_seconds() for r in rows), 3),
        "median_run_s": round(statistics.median(durations), 3),
        "runs_per_worker": sorted(
            {w: sum(1 for r in rows if r["worker_id"] == w) for w in {r["worker_id"] for r in rows}}.values()
        ),
        "slots_fired_per_worker": sorted(
            {w: sum(1 for r in rows if r["fired_by"] == w) for w in {r["fired_by"] for r in rows}}.values()
        ),
    }


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench schedule", description=__doc__)
    parser.add_argument("--schedules", type=int, default=50)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--users", type=int, default=20, help="learners per category's one course")
    args = parser.parse_args(argv)
    figures = run(args.schedules, args.workers, args.users)
    met = (
        figures["requests_run_once"] == figures["requests"] == args.schedules
        and figures["first_start_after_slot_s"] <= 2.0
        and figures["lock_conflicts"] == 0
    )
    rows = [
        ("schedules x workers", f"{args.schedules} x {args.workers}"),
        ("requests / run exactly once", f"{figures['requests']} / {figures['requests_run_once']}"),
        ("runs SUCCESS / LOCK_CONFLICT", f"{figures['success']} / {figures['lock_conflicts']}"),
        ("first run started after the slot", f"{figures['first_start_after_slot_s']} s (target <= 2 s)"),
        ("median start after the slot", f"{figures['median_start_after_slot_s']} s"),
        ("last run finished after the slot", f"{figures['last_finish_after_slot_s']} s"),
        ("median run", f"{figures['median_run_s']} s"),
        ("runs per worker", " / ".join(map(str, figures["runs_per_worker"]))),
        ("slots fired per worker", " / ".join(map(str, figures["slots_fired_per_worker"]))),
        ("targets", "met" if met else "NOT met"),
    ]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    print(json.dumps({**figures, "targets_met": met}))
    return 0 if met else 1
