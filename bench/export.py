"""`python -m bench export [--records N] [--formats xlsx,csv]`: a category's export, streamed, at cohort scale.

A fresh database gets N enrolments of one category (N status records and N details, shaped as the simulator's,
written server-side with generate_series); then each format is exported in a fresh child process, so its peak
RSS is the export's own: `reports.export` from a server-side cursor into openpyxl's write-only sheet or the csv
writer. The figures: rows, wall time, file size, the child's RSS before the export (interpreter, libraries and
connection) and its peak RSS (ru_maxrss) over the whole run. Target: peak under 150 MB for 100,000 records.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from .common import (
    code_version,
    peak_rss_mb,
    postgres_server,
    print_json_line,
    print_table,
    run_in_child,
    work_dir,
)

EXPORT_DBNAME = "enrolment_sync_bench_export"
CATEGORY_ID = 303
COURSES = 200
TARGET_PEAK_RSS_MB = 150.0

SEED_SQL = """
insert into source_record (source_type, source_id, category_id, course_id, user_id, status, status_msg, gc_date,
                           sjc_date, update_time, payload, content_hash, first_seen_run_id, last_changed_run_id)
select t.source_type, %(category_id)s || ':' || e.course_id || ':' || e.user_id, %(category_id)s, e.course_id,
       e.user_id, case when t.source_type = 'enrolment_status' then e.status end,
       case when t.source_type = 'enrolment_status' then e.status_msg end,
       case when t.source_type = 'enrolment_status' then date '2026-11-02' end, null,
       timestamptz '2026-11-20 10:11:12+09' + make_interval(secs => e.n),
       case when t.source_type = 'enrolment_status' then jsonb_build_object(
                'user_id', e.user_id, 'course_id', e.course_id, 'status', e.status, 'status_msg', e.status_msg,
                'gc_date', '2026-11-02', 'sjc_date', null, 'update_time', '2026-11-20T10:11:12+09:00',
                'learner_name', '학습자 ' || e.n)
            else jsonb_build_object(
                'user_id', e.user_id, 'course_id', e.course_id, 'progress_rate', (e.n %% 1000) / 10.0,
                'attendance_rate', (e.n %% 101)::numeric, 'exam_score', case when e.n %% 3 = 0 then e.n %% 100 end,
                'completed', e.status = 'COMPLETED',
                'completion_date', case when e.status = 'COMPLETED' then '2026-11-20' end,
                'update_time', '2026-11-20T10:11:12+09:00')
       end,
       md5(t.source_type || e.n), 1, 1
from (
    select n, 9000 + n %% %(courses)s as course_id, 'u' || lpad(n::text, 7, '0') as user_id,
           (array['ENROLLED', 'IN_PROGRESS', 'COMPLETED', 'FAILED', 'CANCELLED'])[1 + n %% 5] as status,
           (array['수강신청', '수강중', '수료', '미수료', '수강취소'])[1 + n %% 5] as status_msg
    from generate_series(1, %(records)s) as n
) e
cross join (values ('enrolment_status'), ('enrolment_detail')) as t(source_type)
"""


def seed(url: str, records: int) -> float:
    import psycopg

    start = time.perf_counter()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(SEED_SQL, {"category_id": CATEGORY_ID, "records": records, "courses": COURSES})
        conn.execute("vacuum analyze source_record")
    return time.perf_counter() - start


def export_child(params: dict[str, Any]) -> dict[str, Any]:
    """In a fresh process: import, connect, then export; RSS before the export and the peak over the run."""
    import psycopg

    from enrolment_sync import db
    from enrolment_sync.reports import export

    target = db.parse_target(params["database_url"])
    out = Path(params["output"])
    with psycopg.connect(target.conninfo, **target.connect_kwargs()) as conn:
        conn.execute("select 1")
        rss_before = _current_rss_mb()
        start = time.perf_counter()
        rows = export(conn, params["category_id"], params["format"], out)
        wall = time.perf_counter() - start
    return {
        "format": params["format"],
        "rows": rows,
        "wall_s": wall,
        "file_mb": out.stat().st_size / 2**20,
        "rss_before_mb": rss_before,
        "peak_rss_mb": peak_rss_mb(),
    }


def _current_rss_mb() -> float:
    import psutil

    return float(psutil.Process().memory_info().rss) / 2**20


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench export", description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000, help="enrolments in the category (default 100,000)")
    parser.add_argument("--formats", default="xlsx,csv", help="comma-separated: xlsx, csv (default both)")
    return parser


def main(argv: list[str] | None = None) -> int:
    from enrolment_sync import db
    from enrolment_sync.testing.databases import recreate_database

    args = _parser().parse_args(argv)
    formats = [f.strip() for f in args.formats.split(",") if f.strip()]
    unknown = set(formats) - {"xlsx", "csv"}
    if unknown:
        raise SystemExit(f"unknown formats {sorted(unknown)}; choose from xlsx, csv")
    started = time.time()
    with work_dir() as scratch, postgres_server(scratch) as (server_url, pg_source):
        url = recreate_database(server_url, EXPORT_DBNAME)
        db.migrate(db.parse_target(url))
        print(f"bench export: Postgres from {pg_source}; seeding {args.records:,} enrolments ...", file=sys.stderr)
        seed_s = seed(url, args.records)
        results = []
        for fmt in formats:
            with tempfile.TemporaryDirectory(dir=scratch) as out_dir:
                params = {
                    "database_url": url,
                    "category_id": CATEGORY_ID,
                    "format": fmt,
                    "output": str(Path(out_dir) / f"export.{fmt}"),
                }
                result = run_in_child(export_child, params, timeout_s=600)
            if result["rows"] != args.records:
                raise RuntimeError(f"{fmt}: exported {result['rows']} rows, expected {args.records}")
            print(f"  {fmt}: {result['rows']:,} rows in {result['wall_s']:.1f} s", file=sys.stderr)
            results.append(result)
    print_table(
        f"export of one category: {args.records:,} records (status + detail each), seeded in {seed_s:.1f} s",
        ["format", "rows", "wall s", "rows/s", "file MB", "RSS before MB", "peak RSS MB"],
        [
            [
                r["format"],
                r["rows"],
                r["wall_s"],
                round(r["rows"] / r["wall_s"]),
                r["file_mb"],
                r["rss_before_mb"],
                r["peak_rss_mb"],
            ]
            for r in results
        ],
    )
    targets = {f"{r['format']}_peak_rss_under_150mb": r["peak_rss_mb"] < TARGET_PEAK_RSS_MB for r in results}
    print("  targets: " + ", ".join(f"{k}={'met' if v else 'NOT met'}" for k, v in targets.items()))
    print_json_line(
        {
            "bench": "export",
            "code": code_version(),
            "started_at": started,
            "postgres": pg_source,
            "records": args.records,
            "results": results,
            "targets": targets,
        }
    )
    return 0 if all(targets.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
