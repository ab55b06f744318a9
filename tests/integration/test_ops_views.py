"""The `ops` schema's views on PostgreSQL 15 after a real sync: KST times, security_invoker, no grants."""

from __future__ import annotations

import datetime as dt
from typing import Any

import psycopg

from enrolment_sync.clock import KST
from tests.conftest import Worker

VIEWS = {"cohorts", "latest_run_per_cohort", "failures_by_group", "open_alerts", "queue_health"}


def test_views_answer_the_consoles_questions_in_kst(
    worker: Worker, simulator: Any, pg: psycopg.Connection[Any]
) -> None:
    assert worker.sync().status_code == 200
    simulator.state.add_fault(status=503, count=-1)
    assert worker.sync().status_code == 502

    runs = pg.execute("select * from run_log order by id").fetchall()
    ok, failed = runs
    latest = pg.execute("select * from ops.latest_run_per_cohort").fetchall()
    assert len(latest) == 1
    row = latest[0]
    assert (row["category_id"], row["run_id"], row["status"], row["error_group"]) == (303, failed["id"], "FAILED",
                                                                                       "HTTP_5XX")  # fmt: skip
    # KST wall-clock times (timestamp without time zone), the stored UTC moment shifted by nine hours
    assert row["started_at_kst"] == failed["started_at"].astimezone(KST).replace(tzinfo=None)
    assert row["last_success_run_id"] == ok["id"]
    assert row["last_success_at_kst"] == ok["finished_at"].astimezone(KST).replace(tzinfo=None)
    assert row["started_at_kst"] - failed["started_at"].astimezone(dt.UTC).replace(tzinfo=None) == dt.timedelta(hours=9)

    groups = pg.execute("select * from ops.failures_by_group").fetchall()
    assert [(g["error_group"], g["last_24h"], g["last_run_id"]) for g in groups] == [("HTTP_5XX", 1, failed["id"])]

    alerts = pg.execute("select * from ops.open_alerts").fetchall()
    stored = pg.execute("select id, created_at from alert where not resolved order by id").fetchall()
    assert sorted(a["id"] for a in alerts) == [a["id"] for a in stored] and stored
    by_id = {a["id"]: a for a in alerts}
    for a in stored:
        assert by_id[a["id"]]["created_at_kst"] == a["created_at"].astimezone(KST).replace(tzinfo=None)

    queues = {q["queue"]: q for q in pg.execute("select * from ops.queue_health").fetchall()}
    pending = pg.execute("select count(*) as n, min(created_at) as t from sheet_outbox where status = 'PENDING'")
    first = pending.fetchone()
    assert queues["sheet_outbox"]["pending"] == first["n"] > 0
    assert queues["sheet_outbox"]["oldest_open_at_kst"] == first["t"].astimezone(KST).replace(tzinfo=None)
    assert set(queues) == {"sheet_outbox", "notification_outbox", "sync_request"}


def test_views_are_security_invoker_and_granted_to_nobody(pg: psycopg.Connection[Any]) -> None:
    views = pg.execute(
        "select c.relname, c.reloptions, c.relacl from pg_class c join pg_namespace n on n.oid = c.relnamespace"
        " where n.nspname = 'ops' and c.relkind = 'v'"
    ).fetchall()
    assert {v["relname"] for v in views} == VIEWS
    for v in views:
        assert "security_invoker=true" in v["reloptions"], v
    # only the owner holds a privilege: none for PUBLIC (grantee 0), anon, authenticated or anyone else
    others = pg.execute(
        "select c.relname, a.grantee from pg_class c join pg_namespace n on n.oid = c.relnamespace"
        " cross join lateral aclexplode(coalesce(c.relacl, acldefault('r', c.relowner))) a"
        " where n.nspname = 'ops' and a.grantee <> c.relowner"
        " union all"
        " select n.nspname, a.grantee from pg_namespace n"
        " cross join lateral aclexplode(coalesce(n.nspacl, acldefault('n', n.nspowner))) a"
        " where n.nspname = 'ops' and a.grantee <> n.nspowner"
    ).fetchall()
    assert others == []
    for role in ("anon", "authenticated"):
        exists = pg.execute("select 1 from pg_roles where rolname = %s", (role,)).fetchone()
        if exists:
            assert not pg.execute("select has_schema_privilege(%s, 'ops', 'usage') as u", (role,)).fetchone()["u"]
