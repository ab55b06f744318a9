"""pg_cron (Supabase Cron) queues a request with enrolment_sync_request(); the always-on worker runs it."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from enrolment_sync.testing.databases import with_dbname
from tests.conftest import Worker, make_settings
from tests.waiting import wait_for


def _cron_database(pg_server_url: str) -> str:
    """The database pg_cron keeps its jobs in, or skip with the reason pg_cron cannot be used here."""
    with psycopg.connect(pg_server_url, autocommit=True) as conn:
        if conn.execute("select 1 from pg_available_extensions where name = 'pg_cron'").fetchone() is None:
            pytest.skip("pg_cron is not installed on this server (Debian: postgresql-15-cron; .ci/run installs it)")
        preload = conn.execute("show shared_preload_libraries").fetchone()
        if preload is None or "pg_cron" not in preload[0]:
            pytest.skip("pg_cron is installed but not in shared_preload_libraries (.ci/run configures it)")
        row = conn.execute("show cron.database_name").fetchone()
        return str(row[0]) if row else "postgres"


@pytest.mark.slow
def test_a_pg_cron_job_queues_a_request_that_the_worker_runs(
    pg_server_url: str, database_url: str, simulator: Any, pg: psycopg.Connection[Any]
) -> None:
    cron_db = _cron_database(pg_server_url)
    test_db = pg.execute("select current_database() as name").fetchone()["name"]
    settings = make_settings(database_url, simulator.base_url, scheduler_tick_seconds=0.2)
    with (
        Worker(settings, database_url, unattended=True),
        psycopg.connect(with_dbname(pg_server_url, cron_db), autocommit=True) as cron,
    ):
        cron.execute("create extension if not exists pg_cron")
        job = cron.execute(
            "select cron.schedule_in_database(%s, '* * * * *', %s, %s)",
            (f"enrolment-sync-{test_db}", "select enrolment_sync_request(303, 'SCHEDULER')", test_db),
        ).fetchone()
        assert job is not None
        try:
            # pg_cron 1.4 fires on the minute: up to 60 s, then the worker polls the queue
            run = wait_for(
                lambda: pg.execute(
                    "select r.trigger_type, r.status, q.requested_by from run_log r"
                    " join sync_request q on q.id = r.request_id where r.status <> 'RUNNING'"
                ).fetchone(),
                timeout_s=80,
                what="pg_cron's request to be run by the worker",
            )
        finally:
            cron.execute("select cron.unschedule(%s)", (job[0],))
    assert run == {"trigger_type": "SCHEDULER", "status": "SUCCESS", "requested_by": None}
