"""Retention against real Postgres: what it deletes, in bounded batches, and each thing it must never delete."""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg
import pytest

from enrolment_sync import db, retention
from enrolment_sync.retention import RetentionPolicy
from tests.conftest import Worker, make_settings
from tests.waiting import wait_for

DAY_S = 86_400.0
POLICY = RetentionPolicy(
    runs_keep_s=90 * DAY_S, failed_runs_keep_s=365 * DAY_S, resolved_alerts_keep_s=180 * DAY_S,
    done_requests_keep_s=30 * DAY_S, batch_rows=2, interval_s=3600,
)  # fmt: skip


def add_run(pg: psycopg.Connection[Any], *, category_id: int, status: str, days_ago: float) -> int:
    finished = None if status == "RUNNING" else f"now() - interval '{days_ago} days' + interval '5 seconds'"
    row = pg.execute(
        "insert into run_log (trigger_type, status, category_id, started_at, finished_at, error_message, error_group)"
        f" values ('SCHEDULER', %s, %s, now() - make_interval(secs => %s), {finished or 'null'},"
        " case when %s = 'FAILED' then 'upstream 503' end, case when %s = 'FAILED' then 'HTTP_5XX' end)"
        " returning id",
        (status, category_id, days_ago * DAY_S, status, status),
    ).fetchone()
    assert row is not None
    return int(row["id"])


def add_alert(
    pg: psycopg.Connection[Any], *, run_id: int | None, resolved_days_ago: float | None, age_days: float
) -> int:
    row = pg.execute(
        "insert into alert (alert_type, severity, source_type, source_id, message, run_id, resolved, resolved_at,"
        " created_at) values ('FAILED', 'high', 'run', 'enrolment_sync:303', 'x', %s, %s,"
        " now() - make_interval(secs => %s), now() - make_interval(secs => %s)) returning id",
        (
            run_id,
            resolved_days_ago is not None,
            (resolved_days_ago or 0) * DAY_S if resolved_days_ago is not None else None,
            age_days * DAY_S,
        ),
    ).fetchone()
    assert row is not None
    return int(row["id"])


def ids(pg: psycopg.Connection[Any], table: str) -> set[int]:
    return {r["id"] for r in pg.execute(f"select id from {table}").fetchall()}


def prune(database_url: str, policy: RetentionPolicy = POLICY) -> retention.Pruned:
    async def go() -> retention.Pruned:
        database = db.Database(db.parse_target(database_url), max_size=2)
        await database.open()
        try:
            return await retention.prune_once(database, policy)
        finally:
            await database.close()

    return asyncio.run(go())


@pytest.fixture
def aged(pg: psycopg.Connection[Any]) -> dict[str, int]:
    """Runs and alerts of every age and kind, in categories 303 and 404."""
    rows = {
        "old_success": add_run(pg, category_id=303, status="SUCCESS", days_ago=200),
        "old_success_2": add_run(pg, category_id=303, status="SUCCESS", days_ago=150),
        "old_failed_kept": add_run(pg, category_id=303, status="FAILED", days_ago=200),
        "ancient_failed": add_run(pg, category_id=303, status="FAILED", days_ago=400),
        "ancient_failed_2": add_run(pg, category_id=303, status="FAILED", days_ago=390),
        "old_with_open_alert": add_run(pg, category_id=303, status="SUCCESS", days_ago=120),
        "running_ancient": add_run(pg, category_id=303, status="RUNNING", days_ago=400),
        "last_success_303": add_run(pg, category_id=303, status="SUCCESS", days_ago=100),
        "latest_303": add_run(pg, category_id=303, status="FAILED", days_ago=500),
        "recent_success": add_run(pg, category_id=404, status="SUCCESS", days_ago=10),
        "latest_404": add_run(pg, category_id=404, status="SUCCESS", days_ago=1),
    }
    rows["alert_open_ancient"] = add_alert(pg, run_id=rows["old_with_open_alert"], resolved_days_ago=None, age_days=400)
    rows["alert_resolved_old"] = add_alert(pg, run_id=rows["old_success"], resolved_days_ago=200, age_days=300)
    rows["alert_resolved_old_2"] = add_alert(pg, run_id=None, resolved_days_ago=181, age_days=181)
    rows["alert_resolved_recent"] = add_alert(pg, run_id=None, resolved_days_ago=10, age_days=400)
    pg.execute(
        "insert into source_record (source_type, source_id, category_id, course_id, user_id, status, payload,"
        " content_hash, created_at, updated_at, missing_since) values"
        " ('enrolment_status', '303:1:u1', 303, 1, 'u1', 'ENROLLED', '{}', 'h', now() - interval '900 days',"
        "  now() - interval '900 days', now() - interval '800 days')"
    )
    pg.execute(
        "insert into status_history (source_id, category_id, course_id, user_id, change, new_status, run_id,"
        " changed_at) values ('303:1:u1', 303, 1, 'u1', 'NEW', 'ENROLLED', %s, now() - interval '900 days')",
        (rows["old_success"],),
    )
    for status in ("PENDING", "PROCESSING", "DEAD", "DONE"):
        pg.execute(
            "insert into sheet_outbox (run_id, category_id, source_id, payload, status, created_at, updated_at)"
            " values (%s, 303, '303:1:u1', '{}', %s, now() - interval '900 days', now() - interval '900 days')",
            (rows["old_success"], status),
        )
    for status, days in (("DONE", 40), ("DONE", 31), ("DONE", 5), ("PENDING", 90), ("PROCESSING", 90), ("DEAD", 90)):
        request = pg.execute(
            "insert into sync_request (category_id, trigger_type, status, created_at, processed_at)"
            " values (303, 'SCHEDULER', %s, now() - make_interval(days => %s),"
            " case when %s = 'DONE' then now() - make_interval(days => %s) end) returning id",
            (status, days, status, days),
        ).fetchone()
        assert request is not None
        rows[f"request_{status.lower()}_{days}"] = int(request["id"])
    return rows


def test_retention_deletes_only_what_has_expired(
    database_url: str, pg: psycopg.Connection[Any], aged: dict[str, int]
) -> None:
    runs_before = ids(pg, "run_log")
    counters_before = pg.execute("select * from run_metric order by 1, 2, 3").fetchall()
    untouched = {t: pg.execute(f"select count(*) as n from {t}").fetchone() for t in
                 ("source_record", "status_history", "sheet_outbox")}  # fmt: skip

    requests_before = ids(pg, "sync_request")

    pruned = prune(database_url)

    gone_runs = {aged[k] for k in ("old_success", "old_success_2", "ancient_failed", "ancient_failed_2")}
    gone_alerts = {aged[k] for k in ("alert_resolved_old", "alert_resolved_old_2")}
    gone_requests = {aged["request_done_40"], aged["request_done_31"]}
    # batches of 2: several batches a kind
    assert pruned == retention.Pruned(runs=len(gone_runs), alerts=len(gone_alerts), requests=len(gone_requests))
    assert ids(pg, "run_log") == runs_before - gone_runs
    assert ids(pg, "alert") == {aged["alert_open_ancient"], aged["alert_resolved_recent"]}
    # live requests (pending, processing, dead) stay whatever their age, as does a recently served one
    assert ids(pg, "sync_request") == requests_before - gone_requests
    # the counters behind /metrics never go down
    assert pg.execute("select * from run_metric order by 1, 2, 3").fetchall() == counters_before
    for table, count in untouched.items():
        assert pg.execute(f"select count(*) as n from {table}").fetchone() == count, table

    assert prune(database_url) == retention.Pruned(runs=0, alerts=0, requests=0)


@pytest.mark.parametrize(
    "kept",
    ["running_ancient", "old_failed_kept", "old_with_open_alert", "last_success_303", "latest_303", "recent_success"],
)
def test_retention_never_deletes_a_protected_run(
    database_url: str, pg: psycopg.Connection[Any], aged: dict[str, int], kept: str
) -> None:
    prune(database_url)
    assert aged[kept] in ids(pg, "run_log")


def test_retention_never_deletes_an_open_alert(database_url: str, pg: psycopg.Connection[Any]) -> None:
    run_id = add_run(pg, category_id=303, status="SUCCESS", days_ago=1000)
    add_run(pg, category_id=303, status="SUCCESS", days_ago=1)
    open_id = add_alert(pg, run_id=None, resolved_days_ago=None, age_days=1000)
    changed = pg.execute(
        "insert into alert (alert_type, severity, source_type, source_id, message, last_run_id, created_at)"
        " values ('CHANGED', 'low', 'enrolment_status', '303:1:u1', 'x', %s, now() - interval '1000 days')"
        " returning id",
        (run_id,),
    ).fetchone()
    assert changed is not None
    prune(database_url, RetentionPolicy(DAY_S, DAY_S, DAY_S, DAY_S, batch_rows=100, interval_s=1))
    assert ids(pg, "alert") == {open_id, changed["id"]}
    assert run_id in ids(pg, "run_log")  # an open alert repeated in it still points at it


def test_serve_prunes_from_its_always_on_loop(database_url: str, pg: psycopg.Connection[Any], simulator: Any) -> None:
    expired = add_run(pg, category_id=303, status="SUCCESS", days_ago=40)
    latest = add_run(pg, category_id=303, status="SUCCESS", days_ago=1)
    settings = make_settings(database_url, simulator.base_url, retention_runs_days=30, retention_failed_runs_days=30)
    with Worker(settings, database_url, unattended=True):
        wait_for(lambda: expired not in ids(pg, "run_log"), what="the expired run pruned by serve")
    assert latest in ids(pg, "run_log")
