"""`python -m bench outbox`: sheet consumer throughput against the fake Sheets API (no latency, no quota).

Queues N sheet messages (one category, one row per learner), drains them with 1 and with 4 consumer
processes, and prints messages/s, Sheets API calls and duplicate rows (must be 0) as a table and one JSON
line. Each consumer is a separate process with its own database connection, like production; the clock
starts when every consumer is connected and ready, and stops when the last one has nothing left to claim.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg

from enrolment_sync import db
from enrolment_sync.testing.databases import recreate_database
from enrolment_sync.testing.fake_sheets import RunningFakeSheets

BENCH_DBNAME = "enrolment_sync_bench_outbox"
CHILD_TIMEOUT_S = 600.0
TITLE = "category_303"


def _consumer(
    database_url: str, sheets_url: str, spreadsheet_id: str, batch: int, ready: Any, go: Any, out: Any
) -> None:
    import threading

    from enrolment_sync.config import Settings
    from enrolment_sync.outbox.worker import build, run_consumers

    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        database_url=database_url,
        google_sheet_id=spreadsheet_id,
        google_sheets_api_url=sheets_url,
        sheets_writes_per_minute=10_000_000,  # the fake has no quota; the real one is in docs/outbox.md
        sheets_reads_per_minute=10_000_000,
        outbox_sheet_batch_size=batch,
        log_level="WARNING",
    )
    import logging

    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    stop = threading.Event()
    consumers = build(settings, database_url, only="sheet", batch=batch, stop=stop)
    consumers.store.conn()  # connected before the clock starts
    ready.set()
    go.wait(CHILD_TIMEOUT_S)
    started = time.perf_counter()
    counters = run_consumers(consumers, settings, once=True, stop=stop)
    out.put(
        {"done": counters.sheet_done, "batches": counters.sheet_batches, "elapsed_s": time.perf_counter() - started}
    )
    consumers.close()


def _queue(url: str, messages: int) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("truncate sheet_outbox, notification_outbox, outbox_quota restart identity")
        conn.execute(
            """
            insert into sheet_outbox (run_id, category_id, source_id, payload)
            select 1, 303, '303:' || (9001 + n / 1000) || ':u' || lpad(n::text, 6, '0'),
                   jsonb_build_object(
                       'change', 'NEW', 'run_id', 1, 'category_id', 303, 'course_id', 9001 + n / 1000,
                       'course_name', '투자심사 실무', 'user_id', 'u' || lpad(n::text, 6, '0'),
                       'status', 'IN_PROGRESS', 'status_msg', '수강중', 'gc_date', '2026-11-02', 'sjc_date', null,
                       'update_time', '2026-11-20T10:11:12+09:00', 'progress_rate', 72.5, 'attendance_rate', 90.0,
                       'exam_score', null, 'completed', false, 'completion_date', null)
            from generate_series(0, %s - 1) as n
            """,
            (messages,),
        )


def drain_with(url: str, consumers: int, messages: int, batch: int) -> dict[str, Any]:
    _queue(url, messages)
    ctx = multiprocessing.get_context("spawn")
    with RunningFakeSheets() as fake:
        ready = [ctx.Event() for _ in range(consumers)]
        go = ctx.Event()
        out = ctx.Queue()
        procs = [
            ctx.Process(target=_consumer, args=(url, fake.base_url, fake.spreadsheet_id, batch, ready[i], go, out))
            for i in range(consumers)
        ]
        for p in procs:
            p.start()
        for r in ready:
            if not r.wait(60):
                raise RuntimeError("a consumer process did not get ready within 60 s")
        started = time.perf_counter()
        go.set()
        results = [out.get(timeout=CHILD_TIMEOUT_S) for _ in procs]
        elapsed = time.perf_counter() - started
        for p in procs:
            p.join(timeout=30)
        keys = fake.state.keys(TITLE)
        calls = fake.state.stats()
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("select count(*) filter (where status = 'DONE'), max(attempts) from sheet_outbox").fetchone()
    assert row is not None
    return {
        "consumers": consumers,
        "messages": messages,
        "batch": batch,
        "elapsed_s": round(elapsed, 3),
        "messages_per_s": round(messages / elapsed, 1),
        "done": int(row[0]),
        "max_attempts": int(row[1] or 0),
        "per_consumer_done": [r["done"] for r in results],
        "batches": sum(r["batches"] for r in results),
        "api_calls": calls.get("total", 0),
        "api_reads": calls.get("read", 0),
        "api_writes": calls.get("write", 0),
        "rows": len(keys),
        "duplicates": len(keys) - len(set(keys)),
    }


def _database(args: argparse.Namespace, work: Path) -> str:
    server = args.database_url or os.environ.get("TEST_DATABASE_URL") or os.environ.get("DATABASE_URL")
    if not server:
        server = db.start_embedded(work)
    url = recreate_database(server, BENCH_DBNAME)
    db.migrate(db.parse_target(url))
    return url


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench outbox", description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--consumers", default="1,4", help="comma-separated consumer counts to measure")
    parser.add_argument("--batch", type=int, default=500, help="messages claimed per batch")
    parser.add_argument(
        "--database-url", default=None, help="a Postgres server (default TEST_DATABASE_URL, else embedded)"
    )
    args = parser.parse_args(argv)
    counts = [int(c) for c in args.consumers.split(",") if c.strip()]
    with tempfile.TemporaryDirectory(prefix="bench-outbox-") as tmp:
        url = _database(args, Path(tmp))
        results = [drain_with(url, n, args.messages, args.batch) for n in counts]
    header = (
        "consumers",
        "messages",
        "seconds",
        "messages/s",
        "API calls",
        "reads",
        "writes",
        "duplicates",
        "all done",
    )
    rows = [
        (
            r["consumers"],
            r["messages"],
            f"{r['elapsed_s']:.2f}",
            f"{r['messages_per_s']:.0f}",
            r["api_calls"],
            r["api_reads"],
            r["api_writes"],
            r["duplicates"],
            "yes" if r["done"] == r["messages"] and r["rows"] == r["messages"] else "NO",
        )
        for r in results
    ]
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=True)]
    print("outbox: sheet consumer drain against the fake Sheets API (no latency)")
    for line in (header, *rows):
        print("  ".join(str(v).rjust(w) for v, w in zip(line, widths, strict=True)))
    print(json.dumps({"bench": "outbox", "results": results}, ensure_ascii=False))
    ok = all(r["duplicates"] == 0 and r["done"] == r["messages"] for r in results)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
