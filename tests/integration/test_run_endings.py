"""Runs end cleanly whatever the database does at the end, alerts stay per cohort, and every error answer of
the API is JSON. Faults are real: a trigger that kills its own connection, or one that raises."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import httpx
import psycopg
import pytest

from enrolment_sync.testing.kvca import RunningSimulator, SimulatorConfig
from tests.conftest import Worker, make_settings
from tests.waiting import wait_for

JOB_LOCK_HELD = (
    "insert into job_lock (job_name, locked_by, run_id, lock_expires_at)"
    " values ('enrolment_sync', 'other-host:4242:abcd', 999, now() + interval '10 minutes')"
)


def _fault_on_finish(pg: psycopg.Connection[Any], *, times: int, action: str) -> None:
    """The first `times` attempts to close a run (RUNNING -> SUCCESS) hit `action`."""
    pg.execute("create sequence finish_fault")
    pg.execute(
        f"""
        create function finish_fault() returns trigger language plpgsql as $$
        begin
            if nextval('finish_fault') <= {times} then
                {action};
            end if;
            return new;
        end $$;
        create trigger finish_fault before update on run_log
            for each row when (old.status = 'RUNNING' and new.status = 'SUCCESS')
            execute function finish_fault();
        """
    )


def test_a_connection_lost_while_finishing_is_retried(worker: Worker, pg: psycopg.Connection[Any]) -> None:
    _fault_on_finish(pg, times=1, action="perform pg_terminate_backend(pg_backend_pid())")
    answer = worker.sync()
    assert answer.status_code == 200, answer.text
    assert answer.json()["ok"] is True
    run = pg.execute("select * from run_log").fetchone()
    assert run["status"] == "SUCCESS" and run["total_records"] == 178
    assert pg.execute("select count(*) as n from job_lock").fetchone()["n"] == 0
    assert pg.execute("select last_value from finish_fault").fetchone()["last_value"] == 2  # failed once, then done
    assert worker.sync({"category_id": 303, "trigger_type": "RETRY"}).status_code == 200


def test_a_run_that_cannot_be_closed_gives_its_lease_back_and_answers_json(
    worker: Worker, pg: psycopg.Connection[Any]
) -> None:
    _fault_on_finish(pg, times=1000, action="raise exception 'disk full at /var/lib/postgresql (secret-ish internals)'")
    answer = worker.sync()
    assert answer.status_code == 500
    assert answer.headers["content-type"] == "application/json"
    body = answer.json()
    assert body["ok"] is False and "could not be recorded as finished" in body["error"]
    assert "disk full" not in body["error"] and "Traceback" not in answer.text
    # the lease was given back at once: the next request runs (it cannot finish either), no 409
    assert pg.execute("select count(*) as n from job_lock").fetchone()["n"] == 0
    again = worker.sync({"category_id": 303, "trigger_type": "RETRY"})
    assert again.status_code == 500 and again.json()["ok"] is False


def test_unknown_paths_and_methods_answer_json(worker: Worker) -> None:
    missing = httpx.get(f"{worker.base_url}/jobs/nope")
    assert missing.status_code == 404 and missing.json() == {"ok": False, "error": "Not Found"}
    wrong = httpx.get(f"{worker.base_url}/jobs/enrolment-sync")
    assert wrong.status_code == 405 and wrong.json()["ok"] is False


def test_a_lock_conflict_run_and_its_alert_are_one_transaction(worker: Worker, pg: psycopg.Connection[Any]) -> None:
    pg.execute(JOB_LOCK_HELD)
    pg.execute("create sequence alert_fault")
    pg.execute(
        """
        create function alert_fault() returns trigger language plpgsql as $$
        begin
            if nextval('alert_fault') = 1 then
                raise exception 'alert insert failed';
            end if;
            return new;
        end $$;
        create trigger alert_fault before insert on alert
            for each row when (new.alert_type = 'FAILED') execute function alert_fault();
        """
    )
    crashed = worker.sync()
    assert crashed.status_code == 500
    conflict = worker.sync()
    assert conflict.status_code == 409
    runs = pg.execute("select id, created_alerts from run_log where error_group = 'LOCK_CONFLICT'").fetchall()
    # no FAILED run without its alert: the crashed one left nothing, the next one has both
    assert runs == [{"id": conflict.json()["run_id"], "created_alerts": 1}]
    alert = pg.execute("select * from alert where alert_type = 'FAILED'").fetchone()
    assert alert["detail"]["run_id"] == conflict.json()["run_id"]
    assert crashed.json()["ok"] is False  # and the crash answered JSON, not text/plain


@pytest.fixture
def two_cohorts() -> Iterator[Any]:
    with RunningSimulator(SimulatorConfig(courses=1, users=5, subcategories=1)) as sim:
        yield sim


def test_one_cohorts_success_keeps_anothers_failure_open(
    database_url: str, two_cohorts: Any, pg: psycopg.Connection[Any]
) -> None:
    sim = two_cohorts
    settings = make_settings(database_url, sim.base_url, kvca_retries=0, alert_cooldown_minutes=60)
    with Worker(settings, database_url) as w:
        sim.state.add_fault(status=503, count=-1, path_contains="/categories/303")
        assert w.sync({"category_id": 303}).status_code == 502
        [alert] = pg.execute("select * from alert where alert_type = 'FAILED'").fetchall()
        assert alert["source_id"] == "enrolment_sync:HTTP_5XX"  # the seed's key

        assert w.sync({"category_id": 304}).status_code == 200
        still = pg.execute("select * from alert where id = %s", (alert["id"],)).fetchone()
        assert still["resolved"] is False, "304's success must not resolve 303's failure"
        assert still["detail"]["failing_categories"] == [303]

        failed_again = w.sync({"category_id": 303})
        assert failed_again.status_code == 502
        assert pg.execute("select count(*) as n from alert where alert_type = 'FAILED'").fetchone()["n"] == 1
        assert pg.execute(
            "select created_alerts from run_log where id = %s", (failed_again.json()["run_id"],)
        ).fetchone() == {"created_alerts": 0}

        sim.state.clear_faults()
        sim.state.add_fault(status=503, count=-1, path_contains="/categories/304")
        assert w.sync({"category_id": 304}).status_code == 502  # 304 now counts on the same alert
        sim.state.clear_faults()
        recovered_303 = w.sync({"category_id": 303})
        assert recovered_303.status_code == 200
        mid = pg.execute("select * from alert where id = %s", (alert["id"],)).fetchone()
        assert mid["resolved"] is False and mid["detail"]["failing_categories"] == [304]
        assert [r["category_id"] for r in mid["detail"]["recovered_categories"]] == [303]
        assert mid["detail"]["recovered_categories"][0]["run_id"] == recovered_303.json()["run_id"]

        last = w.sync({"category_id": 304})
        assert last.status_code == 200
    done = pg.execute("select * from alert where id = %s", (alert["id"],)).fetchone()
    assert done["resolved"] is True and done["detail"]["failing_categories"] == []
    assert f"run_id={last.json()['run_id']}" in done["resolved_by"] and "category 304" in done["resolved_by"]
    assert [r["category_id"] for r in done["detail"]["recovered_categories"]] == [303, 304]


def test_concurrent_conflicts_under_repeatable_read_raise_one_alert(
    database_url: str, simulator: Any, pg: psycopg.Connection[Any]
) -> None:
    dbname = pg.execute("select current_database() as d").fetchone()["d"]
    pg.execute(f"alter database {dbname} set default_transaction_isolation = 'repeatable read'")
    pg.execute(JOB_LOCK_HELD)
    requests = 5
    key = "FAILED:run_log:enrolment_sync:LOCK_CONFLICT"
    settings = make_settings(database_url, simulator.base_url)
    answers: list[int] = []
    with psycopg.connect(database_url, autocommit=True) as holder, Worker(settings, database_url) as w:
        holder.execute("select pg_advisory_lock(hashtextextended(%s, 0))", (key,))

        def call() -> None:
            answers.append(w.sync().status_code)

        threads = [threading.Thread(target=call) for _ in range(requests)]
        for t in threads:
            t.start()
        wait_for(
            lambda: (
                pg.execute(
                    "select count(distinct l.pid) as n from pg_locks l join pg_stat_activity a on a.pid = l.pid"
                    " where not l.granted and a.datname = current_database()"
                ).fetchone()["n"]
                == requests
            ),
            what="every conflicting request waiting",
        )
        holder.execute("select pg_advisory_unlock(hashtextextended(%s, 0))", (key,))
        for t in threads:
            t.join(timeout=60)
    assert answers == [409] * requests
    alerts = pg.execute("select occurrences from alert where alert_type = 'FAILED'").fetchall()
    assert alerts == [{"occurrences": requests}], alerts
    assert pg.execute("select count(*) as n from run_log where error_group = 'LOCK_CONFLICT'").fetchone()["n"] == (
        requests
    )
