"""The lease: renewed while a long run goes on, and a run whose lease was taken stops writing."""

from __future__ import annotations

import threading
from typing import Any

import psycopg
from psycopg.rows import dict_row

from enrolment_sync.testing.kvca import RunningSimulator, SimulatorConfig
from tests.conftest import Worker, make_settings
from tests.waiting import wait_for


def test_a_run_longer_than_the_ttl_keeps_its_lease(database_url: str, pg: psycopg.Connection[Any]) -> None:
    ttl_s = 2.0  # renewed every ttl/3: a keeper held up for more than 1.3 s on a loaded CI machine still keeps it
    # Every upstream call answers after 1 s, so the run lasts well past two TTLs however fast or slow the machine
    # is; once the lease has been seen renewed, the latency drops and the run finishes.
    with RunningSimulator(SimulatorConfig(courses=6, users=40, latency_ms=1000)) as sim:
        settings = make_settings(database_url, sim.base_url, job_lock_ttl_seconds=ttl_s, kvca_max_concurrency=2)
        with Worker(settings, database_url) as w:
            answers: list[Any] = []
            thread = threading.Thread(target=lambda: answers.append(w.sync()))
            thread.start()
            # the lease has been renewed well past its first expiry, while the run is still going
            wait_for(
                lambda: pg.execute(
                    "select 1 from job_lock where lock_expires_at > locked_at + make_interval(secs => %s)"
                    " and now() > locked_at + make_interval(secs => %s)",
                    (3 * ttl_s, 2 * ttl_s),
                ).fetchone(),
                timeout_s=60,
                what="the lease to be renewed past two TTLs",
            )
            running = pg.execute("select count(*) as n from run_log where status = 'RUNNING'").fetchone()
            blocked = w.sync()
            sim.state.set_latency(0)
            thread.join(timeout=120)
    assert running == {"n": 1}, "the run was still going when its lease was seen renewed"
    assert blocked.status_code == 409, "a renewed lease must not be taken over"
    assert answers and answers[0].status_code == 200, answers
    statuses = [r["status"] for r in pg.execute("select status from run_log order by id")]
    assert statuses == ["SUCCESS", "FAILED"]
    assert pg.execute("select count(*) as n from job_lock").fetchone()["n"] == 0


def test_a_run_whose_lease_is_taken_stops_writing(database_url: str) -> None:
    with RunningSimulator(SimulatorConfig(courses=6, users=40, latency_ms=30)) as sim:
        settings = make_settings(database_url, sim.base_url, kvca_max_concurrency=2, job_lock_ttl_seconds=30)
        with Worker(settings, database_url) as w, psycopg.connect(database_url, autocommit=True) as pg:
            pg.row_factory = dict_row  # type: ignore[assignment]
            answers: list[Any] = []
            thread = threading.Thread(target=lambda: answers.append(w.sync()))
            thread.start()
            wait_for(
                lambda: pg.execute("select count(*) as n from source_record").fetchone()["n"] > 0,
                timeout_s=30,
                what="the first course to be stored",
            )
            # Another worker takes the lease over (as if this one had stalled past its TTL).
            pg.execute("update job_lock set locked_by = 'thief:1:x', run_id = -1")
            stored_at_takeover = pg.execute("select count(*) as n from source_record").fetchone()["n"]
            thread.join(timeout=60)
            final = pg.execute("select count(*) as n from source_record").fetchone()["n"]
            run = pg.execute("select * from run_log").fetchone()
            lock = pg.execute("select locked_by from job_lock").fetchone()
    assert answers and answers[0].status_code == 500
    assert "lost the job lease" in answers[0].json()["error"]
    assert final == stored_at_takeover < 6 * 40 * 2
    assert run["status"] == "FAILED" and "lost the job lease" in run["error_message"]
    assert lock["locked_by"] == "thief:1:x", "the run must not release a lease it no longer holds"


def test_a_worker_closes_dead_runs_when_it_starts(
    database_url: str, simulator: Any, pg: psycopg.Connection[Any]
) -> None:
    from enrolment_sync.demo import ops_query

    pg.execute("alter table run_log alter column id restart with 509")  # a run id that looks like a 5xx status
    pg.execute(
        "insert into run_log (trigger_type, status, category_id, worker_id)"
        " values ('SCHEDULER', 'RUNNING', 303, 'gone-host:1:dead')"
    )
    settings = make_settings(database_url, simulator.base_url)
    with Worker(settings, database_url):
        pass  # starting is enough
    run = pg.execute("select * from run_log where id = 509").fetchone()
    assert run["status"] == "FAILED" and run["error_group"] == "UNKNOWN" and "abandoned" in run["error_message"]
    assert run["created_alerts"] == 1
    assert [(g["error_group"], g["cnt"]) for g in pg.execute(ops_query("3-3"))] == [("OTHER", 1)]
    joined = pg.execute(ops_query("4-4")).fetchall()
    assert [(j["run_id"], j["error_group"]) for j in joined] == [(509, "UNKNOWN")]
