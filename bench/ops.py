"""`python -m bench ops [--runs N] [--records N] [--alerts N] [--repeat K]`: the console and /metrics at scale.

A fresh database gets 100,000 runs over ten cohorts and a year, 1,000,000 records (ten cohorts of 100 courses x
500 learners, a status row and a detail each, stored cohort by cohort and course by course as the sync writes
them), 100,000 alerts (5% open) and outbox messages, all written
server-side with generate_series (the runs through run_log's trigger, so /metrics' counters are real). Then the
worker serves on loopback and every console page and /metrics is requested K times after one warm-up; an ASGI
wrapper around the app measures each answer's server time (from the request reaching the app to its last
byte). Target: under 300 ms each (the median; the slowest is printed too). Then the console's queries of
source_record are EXPLAINed (no sequential scan allowed), and one retention round is timed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import httpx
import psycopg
from psycopg.rows import dict_row, tuple_row

from .common import code_version, postgres_server, print_json_line, print_table, work_dir

OPS_DBNAME = "enrolment_sync_bench_ops"
TARGET_MS = 300.0
TOKEN = "bench-ops-token"
COHORTS = 10
FIRST_COHORT = 301
COURSES = 100

RUNS_SQL = """
insert into run_log (trigger_type, status, category_id, params, total_records, new_records, changed_records,
                     created_alerts, summary, error_message, error_group, http_status_code, worker_id,
                     started_at, finished_at, updated_at)
select (array['SCHEDULER', 'SCHEDULER', 'MANUAL', 'RETRY'])[1 + n %% 4],
       case when n %% 10 = 0 then 'FAILED' else 'SUCCESS' end,
       %(first)s + n %% %(cohorts)s,
       jsonb_build_object('max_categories', 1, 'max_users_per_course', 500),
       case when n %% 10 = 0 then 0 else 100000 end, 0, n %% 50, n %% 3,
       jsonb_build_object('upstream_requests', 50103, 'upstream_codes',
                          case when n %% 10 = 0 then jsonb_build_object('200', 40, '503', 4)
                               else jsonb_build_object('200', 50100, '404', 3) end),
       case when n %% 10 = 0 then 'upstream 503 on GET /api/v1/courses' end,
       case when n %% 10 = 0 then (array['HTTP_5XX', 'TIMEOUT', 'HTTP_409', 'LOCK_CONFLICT'])[1 + n / 10 %% 4] end,
       case when n %% 10 = 0 then 503 end,
       'bench',
       now() - make_interval(mins => (%(runs)s - n) * 5) ,
       now() - make_interval(mins => (%(runs)s - n) * 5) + make_interval(secs => 2 + n %% 60),
       now() - make_interval(mins => (%(runs)s - n) * 5) + make_interval(secs => 2 + n %% 60)
from generate_series(1, %(runs)s) as n
"""

RECORDS_SQL = """
insert into source_record (source_type, source_id, category_id, course_id, user_id, status, status_msg, gc_date,
                           update_time, payload, content_hash, first_seen_run_id, last_changed_run_id,
                           created_at, updated_at)
select t.source_type, e.category_id || ':' || e.course_id || ':' || e.user_id, e.category_id, e.course_id,
       e.user_id, case when t.source_type = 'enrolment_status' then e.status end,
       case when t.source_type = 'enrolment_status' then e.status_msg end,
       date '2026-11-02', timestamptz '2026-11-20 10:11:12+09',
       case when t.source_type = 'enrolment_status'
            then jsonb_build_object('user_id', e.user_id, 'course_id', e.course_id, 'status', e.status)
            else jsonb_build_object('user_id', e.user_id, 'course_id', e.course_id,
                                    'progress_rate', (e.n %% 1000) / 10.0, 'attendance_rate', e.n %% 101)
       end,
       md5(t.source_type || e.n), 1, 1, now() - make_interval(secs => e.n), now() - make_interval(secs => e.n)
from (
    select n, %(first)s + n / (%(courses)s::int * %(users)s::int) as category_id,
           9000 + (n / %(users)s::int) %% %(courses)s::int as course_id,
           'u' || lpad((n %% %(users)s::int)::text, 7, '0') as user_id,
           (array['ENROLLED', 'IN_PROGRESS', 'COMPLETED', 'FAILED', 'CANCELLED'])[1 + n %% 5] as status,
           (array['수강신청', '수강중', '수료', '미수료', '수강취소'])[1 + n %% 5] as status_msg
    from generate_series(0, %(enrolments)s - 1) as n
) e
cross join (values ('enrolment_status'), ('enrolment_detail')) as t(source_type)
"""

ALERTS_SQL = """
insert into alert (alert_type, severity, source_type, source_id, message, detail, run_id, last_run_id, occurrences,
                   resolved, resolved_at, resolved_by, created_at, last_seen_at, updated_at)
select k.alert_type, (array['low', 'medium', 'high'])[1 + n %% 3],
       case when k.alert_type = 'CHANGED' then 'enrolment_status' else 'run' end,
       case when k.alert_type = 'CHANGED'
            then (%(first)s + n %% %(cohorts)s) || ':' || (9000 + n %% %(courses)s) || ':u'
                 || lpad((n %% 500)::text, 7, '0')
            else 'enrolment_sync:' || (%(first)s + n %% %(cohorts)s) end,
       '알림 ' || n,
       jsonb_build_object('category_id', %(first)s + n %% %(cohorts)s, 'run_id', 1 + n %% %(runs)s,
                          'error_group', 'HTTP_5XX'),
       1 + n %% %(runs)s, 1 + n %% %(runs)s, 1 + n %% 4,
       n %% 20 <> 0, case when n %% 20 <> 0 then now() - make_interval(mins => (%(alerts)s - n) * 5) end,
       case when n %% 20 <> 0 then 'bench' end,
       now() - make_interval(mins => (%(alerts)s - n) * 5 + 1), now() - make_interval(mins => (%(alerts)s - n) * 5),
       now() - make_interval(mins => (%(alerts)s - n) * 5)
from generate_series(1, %(alerts)s) as n
cross join lateral (select (array['CHANGED', 'CHANGED', 'CHANGED', 'CHANGED', 'CHANGED', 'CHANGED', 'CHANGED',
                                  'FAILED', 'FAILED', 'STALE'])[1 + n %% 10] as alert_type) k
"""

OUTBOX_SQL = """
insert into sheet_outbox (run_id, category_id, source_id, payload, status, attempts, last_error, created_at,
                          updated_at, processed_at)
select 1 + n %% %(runs)s, %(first)s + n %% %(cohorts)s, 'k' || n, '{}'::jsonb,
       case when n %% 100 = 0 then 'PENDING' when n %% 401 = 0 then 'DEAD' else 'DONE' end,
       case when n %% 401 = 0 then 8 else 1 end, case when n %% 401 = 0 then 'Sheets API 503' end,
       now() - make_interval(secs => 200000 - n), now() - make_interval(secs => 200000 - n),
       case when n %% 100 <> 0 and n %% 401 <> 0 then now() end
from generate_series(1, 200000) as n;
insert into notification_outbox (kind, dedupe_key, run_id, category_id, payload, status, attempts, last_error,
                                 created_at, updated_at)
select 'CHANGE_DIGEST', 'digest:' || n, 1 + n %% %(runs)s, %(first)s + n %% %(cohorts)s, '{}'::jsonb,
       case when n %% 500 = 0 then 'PENDING' when n %% 997 = 0 then 'DEAD' else 'DONE' end, 1,
       case when n %% 997 = 0 then 'webhook 500' end, now() - make_interval(secs => 20000 - n), now()
from generate_series(1, 20000) as n;
insert into sync_schedule (category_id, cron_expr)
select %(first)s + n, '0 ' || (6 + n) || ' * * *' from generate_series(0, %(cohorts)s - 1) as n;
insert into ops_audit (actor, role, action, target, outcome)
select 'bench', 'admin', 'resolve_alert', 'alert:' || n, 'OK' from generate_series(1, 5000) as n
"""

# The console's queries that read source_record, with the arguments its pages give them.
RECORD_QUERIES: dict[str, dict[str, Any]] = {
    "console_records_sample": {"category_id": 303},
    "console_records_by_user_prefix": {"category_id": 303, "prefix": "u00001%"},
    "console_records_by_course": {"category_id": 303, "course_id": 9042},
    "console_learner_records": {"category_id": 303, "user_id": "u0000042"},
}


def seed(url: str, *, runs: int, records: int, alerts: int) -> dict[str, float]:
    shape = {"first": FIRST_COHORT, "cohorts": COHORTS, "courses": COURSES, "runs": runs, "alerts": alerts}
    took: dict[str, float] = {}
    with psycopg.connect(url, autocommit=True) as conn:
        for name, statement, params in (
            ("runs", RUNS_SQL, shape),
            (
                "records",
                RECORDS_SQL,
                {**shape, "enrolments": records // 2, "users": max(1, records // 2 // COHORTS // COURSES)},
            ),
            ("alerts", ALERTS_SQL, shape),
            ("outbox", OUTBOX_SQL, shape),
        ):
            start = time.perf_counter()
            for part in statement.split(";\n"):
                if part.strip():
                    conn.execute(part, params)
            took[name] = time.perf_counter() - start
        start = time.perf_counter()
        conn.execute("vacuum analyze")
        took["vacuum analyze"] = time.perf_counter() - start
    return took


Scope = MutableMapping[str, Any]
ASGI = Callable[[Scope, Any, Any], Awaitable[None]]


class ServerTimes:
    """ASGI wrapper: the time from a request reaching the app to the app returning (its answer sent)."""

    def __init__(self, app: ASGI) -> None:
        self.app = app
        self.times: dict[str, list[float]] = {}

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        await self.app(scope, receive, send)
        key = scope["path"] + ("?" + scope["query_string"].decode() if scope["query_string"] else "")
        self.times.setdefault(key, []).append((time.perf_counter() - start) * 1000)


def pages(conn: psycopg.Connection[Any]) -> list[tuple[str, str]]:
    latest = conn.execute("select max(id) as id from run_log").fetchone()
    open_alert = conn.execute("select max(id) as id from alert where not resolved").fetchone()
    assert latest is not None and open_alert is not None
    return [
        ("개요 overview", "/ops"),
        ("실행 runs", "/ops/runs"),
        ("runs: FAILED of cohort 303", "/ops/runs?status=FAILED&category_id=303"),
        ("runs: a page far back", f"/ops/runs?before_id={max(2, latest['id'] - 5000)}"),
        ("run detail (latest)", f"/ops/runs/{latest['id']}"),
        ("run detail (old)", f"/ops/runs/{latest['id'] // 2}"),
        ("알림 alerts (open)", "/ops/alerts"),
        ("alerts (all)", "/ops/alerts?state=all"),
        ("alerts: FAILED high", "/ops/alerts?alert_type=FAILED&severity=high"),
        ("alert detail", f"/ops/alerts/{open_alert['id']}"),
        ("수강생 learners", "/ops/learners?category_id=303"),
        ("learners: id prefix", "/ops/learners?category_id=303&q=u00001"),
        ("learners: course", "/ops/learners?category_id=303&q=9042"),
        ("one learner", "/ops/learners?category_id=303&user_id=u0000042"),
        ("큐 queues", "/ops/queues"),
        ("스케줄 schedules", "/ops/schedules"),
        ("감사 audit", "/ops/audit"),
        ("/metrics", "/metrics"),
    ]


def explain(conn: psycopg.Connection[Any]) -> list[dict[str, Any]]:
    from enrolment_sync import db

    found = []
    for name, params in RECORD_QUERIES.items():
        cur = psycopg.ClientCursor(conn, row_factory=tuple_row)
        cur.execute("explain (analyze, format json) " + db.query(name), params)
        row = cur.fetchone()
        assert row is not None
        plan = row[0][0]
        text = json.dumps(plan)
        seq = [
            n
            for n in _nodes(plan["Plan"])
            if n["Node Type"] == "Seq Scan" and n.get("Relation Name") == "source_record"
        ]
        indexes = sorted({n["Index Name"] for n in _nodes(plan["Plan"]) if "Index Name" in n})
        found.append({"query": name, "seq_scan_source_record": bool(seq), "indexes": indexes,
                      "ms": plan["Execution Time"], "plan_bytes": len(text)})  # fmt: skip
    return found


def _nodes(node: dict[str, Any]) -> list[dict[str, Any]]:
    out = [node]
    for child in node.get("Plans", []):
        out += _nodes(child)
    return out


def time_retention(url: str) -> dict[str, Any]:
    from enrolment_sync import db, retention

    day_s = 86400.0
    policy = retention.RetentionPolicy(
        90 * day_s, 365 * day_s, 180 * day_s, 30 * day_s, batch_rows=1000, interval_s=3600
    )

    async def go() -> tuple[retention.Pruned, float]:
        database = db.Database(db.parse_target(url), max_size=2)
        await database.open()
        try:
            start = time.perf_counter()
            pruned = await retention.prune_once(database, policy)
            return pruned, time.perf_counter() - start
        finally:
            await database.close()

    pruned, took = asyncio.run(go())
    return {"runs": pruned.runs, "alerts": pruned.alerts, "requests": pruned.requests, "wall_s": took,
            "batches_at_most": retention.MAX_BATCHES_PER_ROUND}  # fmt: skip


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench ops", description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--records", type=int, default=1_000_000, help="records (half status rows, half details)")
    parser.add_argument("--alerts", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=7, help="timed requests per page, after one warm-up")
    return parser


def main(argv: list[str] | None = None) -> int:
    from enrolment_sync import db
    from enrolment_sync.api import create_app
    from enrolment_sync.config import Settings
    from enrolment_sync.testing.databases import recreate_database
    from enrolment_sync.testing.servers import ThreadedServer

    args = _parser().parse_args(argv)
    started = time.time()
    with work_dir() as scratch, postgres_server(scratch) as (server_url, pg_source):
        url = recreate_database(server_url, OPS_DBNAME)
        db.migrate(db.parse_target(url))
        print(f"bench ops: Postgres from {pg_source}; seeding ...", file=sys.stderr)
        seeded = seed(url, runs=args.runs, records=args.records, alerts=args.alerts)
        print("  seeded in " + ", ".join(f"{k} {v:.1f} s" for k, v in seeded.items()), file=sys.stderr)
        settings = Settings(  # type: ignore[call-arg]
            _env_file=None,
            database_url=url,
            worker_api_token=TOKEN,
            retention_interval_seconds=0,  # the data set stays as generated while pages are timed
            enrolment_sync_home=scratch,
        )
        app = ServerTimes(create_app(settings, database_url=url))
        with psycopg.connect(url, autocommit=True, row_factory=dict_row) as conn:
            listed = pages(conn)
        with ThreadedServer(app) as server, httpx.Client(base_url=server.base_url, timeout=60) as client:
            client.headers["Authorization"] = f"Bearer {TOKEN}"
            for _label, path in listed:
                for _ in range(args.repeat + 1):
                    answer = client.get(path)
                    if answer.status_code != 200:
                        raise RuntimeError(f"{path}: {answer.status_code} {answer.text[:300]}")
        rows = []
        for label, path in listed:
            timed = app.times[path][1:]
            rows.append([label, path, statistics.median(timed), max(timed), statistics.median(timed) < TARGET_MS])
        with psycopg.connect(url, autocommit=True, row_factory=dict_row) as conn:
            plans = explain(conn)
        retained = time_retention(url)
    print_table(
        f"console pages and /metrics, server time over {args.repeat} requests each (after one warm-up); "
        f"{args.runs:,} runs, {args.records:,} records, {args.alerts:,} alerts",
        ["page", "path", "median ms", "max ms", f"< {TARGET_MS:g} ms"],
        rows,
    )
    print_table(
        "EXPLAIN ANALYZE of the console's queries of source_record (cohort 303 of 10)",
        ["query", "seq scan of source_record", "indexes used", "ms"],
        [[p["query"], p["seq_scan_source_record"], ", ".join(p["indexes"]), p["ms"]] for p in plans],
    )
    print(
        f"\none retention round (90/365/180 days, batches of 1000, at most {retained['batches_at_most']} a kind): "
        f"{retained['runs']:,} runs and {retained['alerts']:,} alerts deleted in {retained['wall_s']:.1f} s"
    )
    targets = {
        "every_page_under_300ms": all(r[4] for r in rows),
        "no_seq_scan_of_source_record": not any(p["seq_scan_source_record"] for p in plans),
    }
    print("  targets: " + ", ".join(f"{k}={'met' if v else 'NOT met'}" for k, v in targets.items()))
    print_json_line(
        {
            "bench": "ops",
            "code": code_version(),
            "started_at": started,
            "postgres": pg_source,
            "shape": {"runs": args.runs, "records": args.records, "alerts": args.alerts},
            "seeded_s": seeded,
            "pages": [{"page": r[0], "path": r[1], "median_ms": r[2], "max_ms": r[3]} for r in rows],
            "plans": plans,
            "retention": retained,
            "targets": targets,
        }
    )
    return 0 if all(targets.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
