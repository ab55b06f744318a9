"""The staleness check reads run_log through indexes, a few rows per category, never the whole table."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import Iterator
from typing import Any

import psycopg

from enrolment_sync import db
from enrolment_sync.store import runs

CATEGORIES = 300
RUNS_PER_CATEGORY = 10


def _fill(pg: psycopg.Connection[Any]) -> None:
    pg.execute(
        "insert into run_log (trigger_type, status, category_id, started_at, finished_at, error_message)"
        " select 'SCHEDULER', case when n %% 3 = 0 then 'FAILED' else 'SUCCESS' end, c,"
        "        now() - make_interval(hours => n), now() - make_interval(hours => n) + interval '1 minute',"
        "        case when n %% 3 = 0 then 'upstream HTTP 503' end"
        " from generate_series(1, %s) c, generate_series(1, %s) n",
        (CATEGORIES, RUNS_PER_CATEGORY),
    )
    pg.execute("analyze run_log")


def _nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from _nodes(child)


def _run_log_reads(pg: psycopg.Connection[Any], name: str, params: dict[str, Any]) -> list[tuple[str, float]]:
    """(node type, rows read in all loops) of every plan node that reads run_log."""
    pg.execute("set enable_seqscan = off")
    statement = "explain (analyze, format json) " + db.query(name)
    plan = pg.execute(statement, params).fetchone()
    assert plan is not None
    root = (plan["QUERY PLAN"] if isinstance(plan, dict) else plan[0])[0]["Plan"]
    return [
        (n["Node Type"], n["Actual Rows"] * n["Actual Loops"])
        for n in _nodes(root)
        if n.get("Relation Name") == "run_log"
    ]


def test_one_category_is_two_index_probes(pg: psycopg.Connection[Any]) -> None:
    _fill(pg)
    reads = _run_log_reads(pg, "run_category_history", {"job_name": "enrolment_sync", "category_id": 150})
    assert reads, "the query reads run_log"
    assert all(kind in {"Index Scan", "Index Only Scan"} for kind, _ in reads), reads
    assert sum(rows for _, rows in reads) <= 2, json.dumps(reads)


def test_every_category_is_a_skip_scan(pg: psycopg.Connection[Any]) -> None:
    _fill(pg)
    reads = _run_log_reads(pg, "run_categories_history", {"job_name": "enrolment_sync"})
    assert all(kind in {"Index Scan", "Index Only Scan"} for kind, _ in reads), reads
    # about three probes per category, far fewer than the table's rows
    assert sum(rows for _, rows in reads) <= 4 * CATEGORIES < CATEGORIES * RUNS_PER_CATEGORY


def test_history_per_category_is_right(database_url: str, pg: psycopg.Connection[Any]) -> None:
    _fill(pg)
    pg.execute("insert into run_log (trigger_type, status, category_id) values ('MANUAL', 'RUNNING', 999)")
    expected = {
        r["category_id"]: (r["last_success_at"], r["first_started_at"])
        for r in pg.execute(
            "select category_id, max(finished_at) filter (where status = 'SUCCESS') as last_success_at,"
            " min(started_at) as first_started_at from run_log group by category_id"
        )
    }

    async def read() -> tuple[list[runs.CategoryHistory], list[runs.CategoryHistory], list[runs.CategoryHistory]]:
        async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
            every = await runs.category_history(conn, "enrolment_sync")
            one = await runs.category_history(conn, "enrolment_sync", 999)
            never = await runs.category_history(conn, "enrolment_sync", 4242)
            return every, one, never

    every, one, never = asyncio.run(read())
    assert {h.category_id: (h.last_success_at, h.first_started_at) for h in every} == expected
    assert one == [runs.CategoryHistory(999, None, expected[999][1])]
    assert never == []
    assert all(isinstance(h.first_started_at, dt.datetime) for h in every)
