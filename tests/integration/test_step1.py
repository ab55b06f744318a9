"""Step 1's example against real Postgres and the simulator over real HTTP."""

from __future__ import annotations

import concurrent.futures
import time
from typing import Any

import httpx
import psycopg

from enrolment_sync.demo import STEP1_BODY as STEP1
from enrolment_sync.testing.kvca import RunningSimulator, SimulatorConfig
from tests.conftest import Worker, make_settings

SUMMARY_KEYS = [
    "categories_processed",
    "courses_processed",
    "status_rows_processed",
    "details_processed",
    "source_records_upserted",
    "new_records",
    "changed_records",
    "created_alerts",
]


def _versions(pg: psycopg.Connection[Any]) -> dict[str, str]:
    rows = pg.execute("select source_type || '/' || source_id as k, xmin::text as x from source_record").fetchall()
    return {r["k"]: r["x"] for r in rows}


def test_step1_example_three_runs(worker: Worker, simulator: Any, pg: psycopg.Connection[Any]) -> None:
    first = worker.sync(STEP1)
    assert first.status_code == 200, first.text
    body = first.json()
    assert body["ok"] is True
    assert list(body["summary"]) == SUMMARY_KEYS
    assert body["summary"] == {
        "categories_processed": 1,
        "courses_processed": 1,
        "status_rows_processed": 89,
        "details_processed": 89,
        "source_records_upserted": 178,
        "new_records": 178,
        "changed_records": 0,
        "created_alerts": 0,
    }
    assert pg.execute("select count(*) as n from source_record").fetchone()["n"] == 178

    course_id = simulator.state.course_ids(303)[0]
    user_id = simulator.state.enrolments(course_id)[10]["user_id"]
    simulator.state.update_enrolment(course_id, user_id, status="CANCELLED")
    before = _versions(pg)

    second = worker.sync(STEP1).json()
    assert second["summary"] == {
        "categories_processed": 1,
        "courses_processed": 1,
        "status_rows_processed": 89,
        "details_processed": 89,
        "source_records_upserted": 178,
        "new_records": 0,
        "changed_records": 1,
        "created_alerts": 1,
    }
    after = _versions(pg)
    key = f"303:{course_id}:{user_id}"
    rewritten = {k for k in after if after[k] != before[k]}
    assert rewritten == {f"enrolment_status/{key}"}

    alert = pg.execute("select * from alert where alert_type = 'CHANGED'").fetchone()
    assert alert["source_id"] == key
    assert alert["severity"] == "high"
    assert alert["detail"]["before"]["status"] != "CANCELLED"
    assert alert["detail"]["after"]["status"] == "CANCELLED"
    assert alert["detail"]["changed_fields"][0] == "status"
    outbox = pg.execute("select source_id, payload from sheet_outbox where run_id = %s", (second["run_id"],)).fetchall()
    assert [r["source_id"] for r in outbox] == [key]
    assert outbox[0]["payload"]["change"] == "CHANGED"

    third = worker.sync(STEP1).json()
    assert third["summary"]["source_records_upserted"] == 178
    assert (
        third["summary"]["new_records"],
        third["summary"]["changed_records"],
        third["summary"]["created_alerts"],
    ) == (0, 0, 0)
    assert _versions(pg) == after, "an unchanged record was rewritten"
    assert third["report"]["records_written"] == 0

    runs = pg.execute("select * from run_log order by id").fetchall()
    assert [r["status"] for r in runs] == ["SUCCESS"] * 3
    assert [(r["total_records"], r["changed_records"], r["created_alerts"]) for r in runs] == [
        (178, 0, 0),
        (178, 1, 1),
        (178, 0, 0),
    ]
    assert all(r["trigger_type"] == "SCHEDULER" and r["finished_at"] is not None for r in runs)
    assert pg.execute("select count(*) as n from job_lock").fetchone()["n"] == 0


def test_typed_columns_and_unknown_fields_kept(worker: Worker, pg: psycopg.Connection[Any]) -> None:
    assert worker.sync(STEP1).status_code == 200
    row = pg.execute(
        "select * from source_record where source_type = 'enrolment_status' order by source_id limit 1"
    ).fetchone()
    payload = row["payload"]
    assert row["source_id"] == f"303:{payload['course_id']}:{payload['user_id']}"
    assert row["status"] == payload["status"] and row["status_msg"] == payload["status_msg"]
    known = {"user_id", "course_id", "status", "status_msg", "gc_date", "sjc_date", "update_time"}
    assert set(payload) - known, "the simulator's extra field must be kept in the payload"
    detail = pg.execute(
        "select payload from source_record where source_type = 'enrolment_detail' and source_id = %s",
        (row["source_id"],),
    ).fetchone()
    assert "progress_rate" in detail["payload"]


def test_concurrent_requests_one_runs_rest_409(database_url: str, pg: psycopg.Connection[Any]) -> None:
    # 89 details at 8 in flight and 60 ms each: the first run lasts about 0.7 s, far longer than the others take
    # to arrive
    with RunningSimulator(SimulatorConfig(courses=1, users=89, latency_ms=60)) as sim:
        settings = make_settings(database_url, sim.base_url)
        with Worker(settings, database_url) as w, concurrent.futures.ThreadPoolExecutor(6) as pool:
            answers = list(pool.map(lambda _: w.sync(STEP1), range(6)))
    statuses = sorted(a.status_code for a in answers)
    assert statuses == [200, 409, 409, 409, 409, 409]
    for answer in answers:
        if answer.status_code == 409:
            body = answer.json()
            assert body["ok"] is False and body["error_group"] == "LOCK_CONFLICT"
            assert "job_lock active" in body["error"]
    failed = pg.execute("select * from run_log where status = 'FAILED'").fetchall()
    assert len(failed) == 5
    for run in failed:
        assert "job_lock active" in run["error_message"] and " 409 " not in run["error_message"]
        assert run["error_group"] == "LOCK_CONFLICT" and run["finished_at"] is not None
    assert pg.execute("select count(*) as n from run_log where status = 'SUCCESS'").fetchone()["n"] == 1
    assert pg.execute("select count(*) as n from source_record").fetchone()["n"] == 178


def test_details_fetched_concurrently(database_url: str) -> None:
    """With 50 ms latency, one-at-a-time would need 89 x 50 ms = 4.45 s for the details alone."""
    with RunningSimulator(SimulatorConfig(courses=1, users=89, latency_ms=50)) as sim:
        settings = make_settings(database_url, sim.base_url, kvca_max_concurrency=8)
        with Worker(settings, database_url) as w:
            started = time.monotonic()
            answer = w.sync(STEP1)
            elapsed = time.monotonic() - started
            stats = httpx.get(f"{sim.base_url}/_control/stats").json()
    assert answer.status_code == 200
    assert stats["max_in_flight"] == 8, "details must be fetched 8 at a time (KVCA_MAX_CONCURRENCY)"
    assert elapsed < 4.45, f"the sync took {elapsed:.2f}s, as long as fetching one detail at a time"


def test_vanished_learner_marked_not_deleted(worker: Worker, simulator: Any, pg: psycopg.Connection[Any]) -> None:
    assert worker.sync(STEP1).status_code == 200
    course_id = simulator.state.course_ids(303)[0]
    user_id = simulator.state.enrolments(course_id)[0]["user_id"]
    simulator.state.remove_enrolment(course_id, user_id)
    body = worker.sync(STEP1).json()
    assert body["summary"]["status_rows_processed"] == 88
    assert body["report"]["vanished_records"] == 1
    rows = pg.execute(
        "select source_type, missing_since from source_record where user_id = %s and course_id = %s",
        (user_id, course_id),
    ).fetchall()
    assert len(rows) == 2 and all(r["missing_since"] is not None for r in rows)
    summary = pg.execute("select summary from run_log order by id desc limit 1").fetchone()["summary"]
    assert summary["vanished_records"] == [f"303:{course_id}:{user_id}"]
    # back again: the mark is cleared
    simulator.state.add_enrolment(course_id, user_id)
    worker.sync(STEP1)
    rows = pg.execute(
        "select missing_since from source_record where user_id = %s and course_id = %s", (user_id, course_id)
    ).fetchall()
    assert all(r["missing_since"] is None for r in rows)


def test_detail_404_is_skipped_and_reported(worker: Worker, simulator: Any, pg: psycopg.Connection[Any]) -> None:
    course_id = simulator.state.course_ids(303)[0]
    user_id = simulator.state.enrolments(course_id)[5]["user_id"]
    simulator.state.remove_detail_only(course_id, user_id)
    answer = worker.sync(STEP1)
    assert answer.status_code == 200
    body = answer.json()
    assert body["summary"]["status_rows_processed"] == 89
    assert body["summary"]["details_processed"] == 88
    assert body["summary"]["source_records_upserted"] == 177
    assert body["report"]["details_skipped"] == 1
    summary = pg.execute("select summary from run_log").fetchone()["summary"]
    assert summary["details_skipped"] == [f"303:{course_id}:{user_id}"]


def test_capped_course_is_reported(worker: Worker, pg: psycopg.Connection[Any]) -> None:
    body = worker.sync({**STEP1, "max_users_per_course": 30}).json()
    assert body["summary"]["status_rows_processed"] == 30
    assert body["summary"]["source_records_upserted"] == 60
    capped = body["report"]["capped_courses"]
    assert len(capped) == 1 and capped[0]["total_items"] == 89 and capped[0]["taken"] == 30
    run = pg.execute("select summary from run_log").fetchone()
    assert run["summary"]["capped_courses"] == capped
    # a capped course never marks the learners beyond the cap as vanished
    worker.sync(STEP1)
    again = worker.sync({**STEP1, "max_users_per_course": 30}).json()
    assert again["report"]["vanished_records"] == 0


def test_max_categories_takes_subcategories(database_url: str, pg: psycopg.Connection[Any]) -> None:
    with RunningSimulator(SimulatorConfig(courses=2, users=10, subcategories=3)) as sim:
        settings = make_settings(database_url, sim.base_url)
        with Worker(settings, database_url) as w:
            body = w.sync({"category_id": 303, "max_categories": 3}).json()
    assert body["summary"]["categories_processed"] == 3
    assert body["summary"]["courses_processed"] == 6
    cats = pg.execute("select distinct category_id from source_record order by 1").fetchall()
    assert [r["category_id"] for r in cats] == [303, 304, 305]


def test_changed_alert_cooldown_counts_repeats(database_url: str, simulator: Any, pg: psycopg.Connection[Any]) -> None:
    import datetime as dt

    from enrolment_sync.clock import ManualClock

    clock = ManualClock(dt.datetime.now(dt.UTC))
    settings = make_settings(database_url, simulator.base_url, alert_cooldown_minutes=60)
    course_id = simulator.state.course_ids(303)[0]
    user_id = simulator.state.enrolments(course_id)[7]["user_id"]
    with Worker(settings, database_url, clock=clock) as w:
        assert w.sync(STEP1).status_code == 200
        simulator.state.update_enrolment(course_id, user_id, status_msg="휴강 신청")
        first = w.sync(STEP1).json()
        clock.advance(minutes=30)
        simulator.state.update_enrolment(course_id, user_id, status="CANCELLED")
        repeat = w.sync(STEP1).json()
        clock.advance(minutes=31)
        simulator.state.update_enrolment(course_id, user_id, status="ENROLLED")
        after = w.sync(STEP1).json()
    assert (first["summary"]["changed_records"], first["summary"]["created_alerts"]) == (1, 1)
    assert (repeat["summary"]["changed_records"], repeat["summary"]["created_alerts"]) == (1, 0)
    assert repeat["report"]["suppressed_alerts"] == 1
    assert (after["summary"]["changed_records"], after["summary"]["created_alerts"]) == (1, 1)
    alerts = pg.execute("select * from alert where alert_type = 'CHANGED' order by id").fetchall()
    assert len(alerts) == 2
    assert alerts[0]["occurrences"] == 2 and alerts[0]["last_run_id"] == repeat["run_id"]
    assert alerts[0]["severity"] == "high", "a worse repeat raises the open alert's severity (low -> high)"
    assert alerts[0]["detail"]["changed_fields"][0] == "status_msg"  # the first change stays as it was ...
    [kept] = alerts[0]["detail"]["repeats"]  # ... and the repeat is kept beside it
    assert kept["detail"]["after"]["status"] == "CANCELLED" and kept["run_id"] == repeat["run_id"]
    assert kept["severity"] == "high"
    # the message tells the latest state: the latest change and its severity, not the first one's
    assert "[high]" in alerts[0]["message"] and "CANCELLED" in alerts[0]["message"]
    assert "반복 2회째" in alerts[0]["message"]
    assert alerts[1]["severity"] == "medium" and alerts[1]["run_id"] == after["run_id"]


def test_empty_category_and_empty_courses(database_url: str, pg: psycopg.Connection[Any]) -> None:
    for courses, users in ((0, 0), (2, 0)):
        with RunningSimulator(SimulatorConfig(courses=courses, users=users)) as sim:
            settings = make_settings(database_url, sim.base_url)
            with Worker(settings, database_url) as w:
                answer = w.sync(STEP1)
        assert answer.status_code == 200, answer.text
        assert answer.json()["summary"] == {
            "categories_processed": 1,
            "courses_processed": courses,
            "status_rows_processed": 0,
            "details_processed": 0,
            "source_records_upserted": 0,
            "new_records": 0,
            "changed_records": 0,
            "created_alerts": 0,
        }
    assert pg.execute("select count(*) as n from source_record").fetchone()["n"] == 0


def test_unknown_category_is_a_4xx_failure(worker: Worker, pg: psycopg.Connection[Any]) -> None:
    answer = worker.sync({"category_id": 999})
    assert answer.status_code == 502
    body = answer.json()
    assert body["error_group"] == "HTTP_4XX" and body["http_status_code"] == 404
    assert "/api/v1/categories/999" in body["error"]


def test_a_course_dropped_from_its_category_is_marked_missing(database_url: str, pg: psycopg.Connection[Any]) -> None:
    with RunningSimulator(SimulatorConfig(courses=2, users=10)) as sim:
        settings = make_settings(database_url, sim.base_url)
        with Worker(settings, database_url) as w:
            assert w.sync(STEP1).json()["summary"]["courses_processed"] == 2
            dropped = sim.state.course_ids(303)[1]
            sim.state.unlist_course(dropped)
            body = w.sync(STEP1).json()
    assert body["summary"]["courses_processed"] == 1
    assert body["report"]["vanished_records"] == 10
    rows = pg.execute(
        "select course_id, count(*) filter (where missing_since is not null) as missing, count(*) as n"
        " from source_record group by course_id order by course_id"
    ).fetchall()
    assert [(r["missing"], r["n"]) for r in rows] == [(0, 20), (20, 20)]
    assert rows[1]["course_id"] == dropped
