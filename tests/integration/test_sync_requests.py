"""Pulled sync requests, served over real HTTP with the scheduler loop and the request runner running:
the 202 flow, SQL callers, automatic RETRY, no retry for 4xx, the pause, the watchdog's recovery, the lease wait."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import psycopg
import pytest

from enrolment_sync.config import Settings
from tests.conftest import Worker, make_settings
from tests.waiting import wait_for

STEP1 = {"category_id": 303, "trigger_type": "SCHEDULER", "max_categories": 1, "max_users_per_course": 500}


@contextmanager
def _unattended(database_url: str, simulator: Any, **overrides: Any) -> Iterator[Worker]:
    values: dict[str, Any] = {"scheduler_tick_seconds": 0.1, "request_poll_interval_seconds": 0.1, **overrides}
    settings: Settings = make_settings(database_url, simulator.base_url, **values)
    with Worker(settings, database_url, unattended=True) as w:
        yield w


@pytest.fixture
def unattended(database_url: str, simulator: Any) -> Iterator[Worker]:
    with _unattended(database_url, simulator, kvca_retries=0, retry_delays="300ms,300ms") as w:
        yield w


def _fault(simulator: Any, status: int, count: int = 1) -> None:
    answer = httpx.post(
        f"{simulator.base_url}/_control/faults",
        json={"status": status, "count": count, "path_contains": "/categories/"},
        timeout=10,
    )
    answer.raise_for_status()


def _queue(pg: psycopg.Connection[Any], *args: Any) -> int:
    placeholders = ", ".join(["%s"] * len(args))
    row = pg.execute(f"select enrolment_sync_request({placeholders}) as id", args).fetchone()  # type: ignore[arg-type]
    return int(row["id"])


def _runs(pg: psycopg.Connection[Any]) -> list[dict[str, Any]]:
    return pg.execute(
        "select id, trigger_type, status, error_group, request_id, retry_of_run_id from run_log order by id"
    ).fetchall()


def _idle(pg: psycopg.Connection[Any]) -> bool:
    return pg.execute("select count(*) as n from sync_request where status <> 'DONE'").fetchone()["n"] == 0


def test_wait_false_answers_202_and_the_request_ends_with_the_synchronous_answer(
    database_url: str, simulator: Any, pg: psycopg.Connection[Any]
) -> None:
    token = "s3cret-token"
    auth = {"Authorization": f"Bearer {token}"}
    with _unattended(database_url, simulator, worker_api_token=token) as w:
        assert httpx.post(f"{w.base_url}/jobs/enrolment-sync?wait=false", json=STEP1).status_code == 401
        queued = httpx.post(f"{w.base_url}/jobs/enrolment-sync?wait=false", json=STEP1, headers=auth, timeout=30)
        assert queued.status_code == 202, queued.text
        body = queued.json()
        assert body["state"] == "QUEUED" and body["status_url"].endswith(f"/jobs/requests/{body['request_id']}")
        assert httpx.get(body["status_url"]).status_code == 401

        def finished() -> dict[str, Any] | None:
            state = httpx.get(body["status_url"], headers=auth, timeout=10).json()
            return state if state["state"] in {"SUCCESS", "FAILED"} else None

        done = wait_for(finished, timeout_s=30, what="the queued request to finish")
        synchronous = w.sync(STEP1, headers=auth)
        missing = httpx.get(f"{w.base_url}/jobs/requests/999999", headers=auth, timeout=10)
        bad = httpx.post(f"{w.base_url}/jobs/enrolment-sync?wait=false", json={"category_id": 0}, headers=auth)
    assert done["state"] == "SUCCESS" and done["http_status"] == 200
    result = done["result"]
    assert result["ok"] is True and result["run_id"] == done["run_id"]
    assert result["summary"]["source_records_upserted"] == 178 and result["summary"]["new_records"] == 178
    assert synchronous.status_code == 200 and set(synchronous.json()) == set(result)
    assert set(synchronous.json()["summary"]) == set(result["summary"])
    assert missing.status_code == 404
    assert bad.status_code == 422 and "category_id" in bad.json()["error"]
    runs = _runs(pg)
    assert [(r["trigger_type"], r["status"], r["request_id"]) for r in runs] == [
        ("SCHEDULER", "SUCCESS", body["request_id"]),
        ("SCHEDULER", "SUCCESS", None),  # the synchronous call serves no request
    ]


def test_a_request_queued_from_sql_is_run_by_the_worker(unattended: Worker, pg: psycopg.Connection[Any]) -> None:
    request_id = _queue(pg, 303, "SCHEDULER")
    wait_for(lambda: _idle(pg) and _runs(pg), timeout_s=30, what="the worker to run the SQL request")
    run = _runs(pg)[0]
    assert (run["trigger_type"], run["status"], run["request_id"]) == ("SCHEDULER", "SUCCESS", request_id)
    row = pg.execute("select run_id, http_status, result->>'ok' as ok from sync_request").fetchone()
    assert row == {"run_id": run["id"], "http_status": 200, "ok": "true"}


def test_a_503_is_retried_after_the_configured_delay_and_linked_to_the_failed_run(
    unattended: Worker, simulator: Any, pg: psycopg.Connection[Any]
) -> None:
    _fault(simulator, 503)
    _queue(pg, 303, "SCHEDULER")
    wait_for(lambda: len(_runs(pg)) == 2 and _idle(pg), timeout_s=30, what="the failed run and its RETRY")
    failed, retried = _runs(pg)
    assert (failed["trigger_type"], failed["status"], failed["error_group"]) == ("SCHEDULER", "FAILED", "HTTP_5XX")
    assert (retried["trigger_type"], retried["status"], retried["retry_of_run_id"]) == (
        "RETRY",
        "SUCCESS",
        failed["id"],
    )
    retry = pg.execute(
        "select retry_number, retry_of_run_id from sync_request where id = %s", (retried["request_id"],)
    ).fetchone()
    assert retry == {"retry_number": 1, "retry_of_run_id": failed["id"]}
    gap = pg.execute(
        "select (select started_at from run_log where id = %s) - finished_at as gap from run_log where id = %s",
        (retried["id"], failed["id"]),
    ).fetchone()["gap"]
    assert gap.total_seconds() >= 0.3, "the RETRY waited RETRY_DELAYS' first delay (300ms)"
    assert pg.execute("select count(*) as n from alert where source_type = 'sync_request'").fetchone()["n"] == 0


def test_an_exhausted_series_raises_one_high_failed_alert(
    unattended: Worker, simulator: Any, pg: psycopg.Connection[Any]
) -> None:
    _fault(simulator, 503, count=-1)
    _queue(pg, 303, "MANUAL")

    def exhausted() -> Any:
        return pg.execute(
            "select severity, source_id, detail, message from alert where source_type = 'sync_request'"
        ).fetchall()

    alerts = wait_for(exhausted, timeout_s=30, what="the exhausted-retry alert")
    wait_for(lambda: _idle(pg), timeout_s=60, what="the queue to empty")
    runs = _runs(pg)
    assert [(r["trigger_type"], r["error_group"]) for r in runs] == [
        ("MANUAL", "HTTP_5XX"),
        ("RETRY", "HTTP_5XX"),
        ("RETRY", "HTTP_5XX"),
    ]
    assert [r["retry_of_run_id"] for r in runs] == [None, runs[0]["id"], runs[1]["id"]]
    assert len(alerts) == 1 and alerts[0]["severity"] == "high"
    assert alerts[0]["source_id"] == "enrolment_sync:retries_exhausted:category:303"
    assert alerts[0]["detail"]["attempts"] == 3 and alerts[0]["detail"]["run_id"] == runs[2]["id"]


def test_a_403_is_not_retried(unattended: Worker, simulator: Any, pg: psycopg.Connection[Any]) -> None:
    _fault(simulator, 403)
    request_id = _queue(pg, 303, "SCHEDULER")
    wait_for(lambda: _idle(pg) and _runs(pg), timeout_s=30, what="the request to finish")
    runs = _runs(pg)
    assert [(r["status"], r["error_group"], r["request_id"]) for r in runs] == [("FAILED", "HTTP_4XX", request_id)]
    state = httpx.get(f"{unattended.base_url}/jobs/requests/{request_id}", timeout=10).json()
    assert state["state"] == "FAILED" and state["http_status"] == 502
    assert state["result"]["error_group"] == "HTTP_4XX"
    assert pg.execute("select count(*) as n from sync_request").fetchone()["n"] == 1, "no RETRY request"


def test_repeated_failures_pause_the_schedules_until_a_manual_success(
    database_url: str, simulator: Any, pg: psycopg.Connection[Any]
) -> None:
    with _unattended(database_url, simulator, kvca_retries=0, retry_delays="", schedule_pause_after_failures=2) as w:
        _fault(simulator, 403, count=-1)
        pg.execute("insert into sync_schedule (category_id, every_seconds) values (303, 1)")
        pg.execute("insert into sync_schedule (category_id, every_seconds) values (404, 1)")

        def paused() -> Any:
            return pg.execute("select * from sync_schedule where category_id = 303 and not enabled").fetchone()

        schedule = wait_for(paused, timeout_s=30, what="the schedule to pause itself")
        alert = pg.execute("select * from alert where source_type = 'sync_schedule'").fetchone()
        ticks = _ticks(pg)
        wait_for(lambda: _ticks(pg) >= ticks + 5, timeout_s=60, what="five more ticks")
        late = pg.execute(
            "select count(*) as n from sync_slot where schedule_id = %s and fired_at > %s",
            (schedule["id"], schedule["paused_at"]),
        ).fetchone()["n"]
        httpx.delete(f"{simulator.base_url}/_control/faults", timeout=10).raise_for_status()
        manual = w.sync({"category_id": 303, "trigger_type": "MANUAL"})

        def resumed() -> Any:
            return pg.execute("select enabled from sync_schedule where id = %s", (schedule["id"],)).fetchone()[
                "enabled"
            ]

        wait_for(resumed, timeout_s=60, what="a manual success to resume the schedule")
        resolved = wait_for(
            lambda: pg.execute("select resolved, resolved_by from alert where id = %s", (alert["id"],)).fetchone()[
                "resolved"
            ],
            timeout_s=60,
            what="the pause alert to resolve",
        )
    assert schedule["paused_auto"] and "2" in schedule["paused_reason"]
    assert (alert["alert_type"], alert["severity"]) == ("FAILED", "high")
    assert alert["source_id"] == "enrolment_sync:schedule_paused:category:303"
    assert alert["detail"]["schedule_ids"] == [schedule["id"]], "only the failing category's schedules"
    assert late == 0, "no slot fires while paused"
    assert manual.status_code == 200 and resolved


def _ticks(pg: psycopg.Connection[Any]) -> int:
    row = pg.execute("select coalesce(sum((state->>'ticks')::int), 0) as n from scheduler_heartbeat").fetchone()
    return int(row["n"])


def test_a_stale_slot_alert_is_resolved_by_the_next_success(
    database_url: str, simulator: Any, pg: psycopg.Connection[Any]
) -> None:
    pg.execute(
        "insert into sync_schedule (category_id, cron_expr, timezone, created_at, enabled_since)"
        " values (303, '*/5 * * * *', 'Asia/Seoul', now() - interval '1 hour', now() - interval '1 hour')"
    )
    _fault(simulator, 403)  # the caught-up slot's run fails; the watchdog still sees a stale slot
    with _unattended(database_url, simulator, schedule_grace_minutes=2, retry_delays="") as w:
        stale = wait_for(
            lambda: pg.execute("select * from alert where alert_type = 'STALE'").fetchone(),
            timeout_s=30,
            what="the STALE alert",
        )
        wait_for(lambda: _idle(pg) and _runs(pg), timeout_s=30, what="the caught-up slot's run")
        assert w.sync({"category_id": 303, "trigger_type": "MANUAL"}).status_code == 200
        resolved = wait_for(
            lambda: pg.execute("select resolved_by from alert where id = %s", (stale["id"],)).fetchone()["resolved_by"],
            timeout_s=60,
            what="the STALE alert to resolve",
        )
    assert stale["source_id"] == "enrolment_sync:schedule:1" and stale["severity"] == "high"
    assert "KST" in stale["detail"]["slot_kst"]
    success = pg.execute("select id from run_log where status = 'SUCCESS'").fetchone()["id"]
    assert resolved == f"run_id={success} (SUCCESS)"


def test_a_pulled_request_waits_for_the_lease_then_fails_as_a_lock_conflict(
    database_url: str, simulator: Any, pg: psycopg.Connection[Any]
) -> None:
    pg.execute(
        "insert into job_lock (job_name, locked_by, run_id, lock_expires_at)"
        " values ('enrolment_sync', 'another-host', 1, now() + interval '1 hour')"
    )
    with _unattended(database_url, simulator, request_lock_wait_seconds=1) as _w:
        waiting_id = _queue(pg, 303, "MANUAL")
        wait_for(
            lambda: pg.execute("select status from sync_request").fetchone()["status"] == "PROCESSING",
            timeout_s=60,
            what="the request to be claimed",
        )
        assert _runs(pg) == [], "a waiting request logs no conflict while it waits"
        pg.execute("delete from job_lock")  # the other host's run ends: the waiting request gets the lease
        wait_for(lambda: _idle(pg), timeout_s=30, what="the waiting request to run")
        pg.execute(
            "insert into job_lock (job_name, locked_by, run_id, lock_expires_at)"
            " values ('enrolment_sync', 'another-host', 1, now() + interval '1 hour')"
        )
        blocked_id = _queue(pg, 303, "MANUAL")
        wait_for(lambda: _idle(pg), timeout_s=30, what="the blocked request to give up")
    runs = _runs(pg)
    assert [(r["request_id"], r["status"], r["error_group"]) for r in runs] == [
        (waiting_id, "SUCCESS", None),
        (blocked_id, "FAILED", "LOCK_CONFLICT"),
    ]
    blocked = pg.execute("select http_status, result from sync_request where id = %s", (blocked_id,)).fetchone()
    assert blocked["http_status"] == 409 and "job_lock active" in blocked["result"]["error"]
    assert pg.execute("select count(*) as n from sync_request").fetchone()["n"] == 2, "a lock conflict is not retried"


def test_healthz_reports_the_scheduler_heartbeat(
    database_url: str, simulator: Any, pg: psycopg.Connection[Any]
) -> None:
    settings = make_settings(database_url, simulator.base_url)
    with _unattended(database_url, simulator) as full, Worker(settings, database_url) as api_only:
        wait_for(lambda: _ticks(pg) >= 2, timeout_s=60, what="the loop to beat")
        own = httpx.get(f"{full.base_url}/healthz", timeout=10)
        other = httpx.get(f"{api_only.base_url}/healthz", timeout=10)
        _queue(pg, 303)
        wait_for(lambda: _idle(pg) and _runs(pg), timeout_s=30, what="the loop's runner to run a request")
        assert _runs(pg)[0]["status"] == "SUCCESS"
    assert own.status_code == 200 and own.json()["scheduler"]["alive"] is True
    assert own.json()["scheduler"]["last_heartbeat_age_s"] < 5
    assert other.status_code == 200 and other.json()["scheduler"]["running"] is False
    assert other.json()["scheduler"]["latest_heartbeat_age_s"] < 5, "an API-only process shows the latest beat"
    stopped = pg.execute("select stopped_at, state from scheduler_heartbeat").fetchone()
    assert stopped["stopped_at"] is not None and stopped["state"]["runner"]["requests_run"] == 1
