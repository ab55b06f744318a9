"""enrolment_sync_request() from SQL: queueing, coalescing, named errors, and who may call it."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql

from enrolment_sync import db
from enrolment_sync.testing.databases import drop_database, recreate_database


def test_sql_callers_queue_a_request_and_a_repeat_is_coalesced(pg: psycopg.Connection[Any]) -> None:
    first = pg.execute("select enrolment_sync_request(303, 'SCHEDULER') as id").fetchone()["id"]
    again = pg.execute("select enrolment_sync_request(303) as id").fetchone()["id"]
    other_params = pg.execute("select enrolment_sync_request(303, max_users_per_course => 10) as id").fetchone()["id"]
    other_category = pg.execute("select enrolment_sync_request(404, 'MANUAL', 2, 50) as id").fetchone()["id"]
    assert again == first and len({first, other_params, other_category}) == 3
    rows = pg.execute(
        "select id, category_id, trigger_type, max_categories, max_users_per_course, coalesced, status"
        " from sync_request order by id"
    ).fetchall()
    assert [(r["category_id"], r["trigger_type"], r["coalesced"], r["status"]) for r in rows] == [
        (303, "SCHEDULER", 1, "PENDING"),  # the MANUAL repeat is counted on it, not lost
        (303, "MANUAL", 0, "PENDING"),
        (404, "MANUAL", 0, "PENDING"),
    ]
    pg.execute("update sync_request set status = 'PROCESSING' where id = %s", (first,))
    assert pg.execute("select enrolment_sync_request(303) as id").fetchone()["id"] not in {first, other_params}


def test_a_coalesced_request_runs_at_the_earlier_time(pg: psycopg.Connection[Any]) -> None:
    later = pg.execute(
        "select enrolment_sync_request(303, 'RETRY', not_before => now() + interval '1 hour', retry_of_run_id => 7)"
        " as id"
    ).fetchone()["id"]
    now_id = pg.execute("select enrolment_sync_request(303, 'MANUAL') as id").fetchone()["id"]
    row = pg.execute(
        "select next_attempt_at <= now() as ready, coalesced, trigger_type, retry_of_run_id from sync_request"
        " where id = %s",
        (later,),
    ).fetchone()
    assert now_id == later and row == {"ready": True, "coalesced": 1, "trigger_type": "RETRY", "retry_of_run_id": 7}


@pytest.mark.parametrize(
    ("call", "named"),
    [
        ("enrolment_sync_request(0)", "category_id must be a positive integer, not 0"),
        ("enrolment_sync_request(null)", "category_id must be a positive integer, not null"),
        ("enrolment_sync_request(303, 'CRON')", "trigger_type must be MANUAL, SCHEDULER or RETRY, not 'CRON'"),
        ("enrolment_sync_request(303, 'MANUAL', 0)", "max_categories must be between 1 and 100, not 0"),
        ("enrolment_sync_request(303, 'MANUAL', 1, 100001)", "max_users_per_course must be between 1 and 100000"),
    ],
)
def test_bad_arguments_are_named(pg: psycopg.Connection[Any], call: str, named: str) -> None:
    with pytest.raises(psycopg.errors.InvalidParameterValue, match=named):
        pg.execute(sql.SQL("select {}").format(sql.SQL(call)))  # type: ignore[arg-type]
    assert pg.execute("select count(*) as n from sync_request").fetchone()["n"] == 0


@pytest.fixture
def supabase_like_database(pg_server_url: str) -> Iterator[str]:
    """A fresh database where, as on Supabase, new functions are granted to anon and authenticated by default."""
    name = f"es_supabase_{os.getpid()}"
    with psycopg.connect(pg_server_url, autocommit=True) as conn:
        for role in ("anon", "authenticated"):
            exists = conn.execute("select 1 from pg_roles where rolname = %s", (role,)).fetchone()
            if not exists:
                conn.execute(sql.SQL("create role {} nologin").format(sql.Identifier(role)))
    url = recreate_database(pg_server_url, name)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("grant usage on schema public to anon, authenticated")
        conn.execute("alter default privileges in schema public grant execute on functions to anon, authenticated")
        conn.execute("alter default privileges in schema public grant all on tables to anon, authenticated")
    db.migrate(db.parse_target(url))
    yield url
    drop_database(pg_server_url, name)


def test_anon_and_authenticated_cannot_queue_requests(supabase_like_database: str) -> None:
    with psycopg.connect(supabase_like_database, autocommit=True) as conn:
        signature = "enrolment_sync_request(bigint, text, integer, integer, timestamptz, bigint, integer, bigint, text)"
        for role in ("anon", "authenticated"):
            allowed = conn.execute("select has_function_privilege(%s, %s, 'execute')", (role, signature)).fetchone()
            assert allowed == (False,), role
            conn.execute(sql.SQL("set role {}").format(sql.Identifier(role)))
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute("select enrolment_sync_request(303, 'SCHEDULER')")
            conn.execute("reset role")
        # the owner (the worker, pg_cron's job owner) may; the Data API roles see no row of the new tables
        assert conn.execute("select enrolment_sync_request(303, 'SCHEDULER')").fetchone() == (1,)
        conn.execute("set role anon")
        assert conn.execute("select count(*) from sync_request").fetchone() == (0,)
        conn.execute("reset role")
        rls = conn.execute(
            "select relname, relrowsecurity from pg_class where relname in"
            " ('sync_schedule', 'sync_slot', 'sync_request', 'scheduler_heartbeat') order by relname"
        ).fetchall()
        assert rls == [
            ("scheduler_heartbeat", True),
            ("sync_request", True),
            ("sync_schedule", True),
            ("sync_slot", True),
        ]
