"""An upstream that lies (issue 10, items 8, 10, 13, 14): through the simulator over loopback HTTP."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any
from urllib.parse import unquote

import httpx
import psycopg
import pytest

from tests.conftest import Worker, make_settings
from tests.waiting import wait_for

COURSES_PATH = "/api/v1/categories/303/courses"


def _requests(sim: Any, kind: str) -> list[dict[str, Any]]:
    return [r for r in sim.state.requests() if r["kind"] == kind]


@pytest.fixture
def make_worker(database_url: str, simulator: Any) -> Iterator[Any]:
    started: list[Worker] = []

    def start(**overrides: Any) -> Worker:
        worker = Worker(make_settings(database_url, simulator.base_url, **overrides), database_url)
        started.append(worker.__enter__())
        return worker

    yield start
    for worker in started:
        worker.__exit__(None, None, None)


# -- 8: paging ------------------------------------------------------------------------------


def test_a_course_list_claiming_more_pages_than_the_cap_fails_the_run_naming_the_endpoint(
    make_worker: Any, simulator: Any, pg: psycopg.Connection[Any]
) -> None:
    simulator.state.claim_total_pages(COURSES_PATH, 100_000)
    worker = make_worker(kvca_max_pages=1000)

    answer = worker.sync()

    body = answer.json()
    assert body["ok"] is False, body
    assert COURSES_PATH in body["error"] and "KVCA_MAX_PAGES=1000" in body["error"], body
    assert len(_requests(simulator, "courses")) == 1  # no page beyond the first was asked for
    run = pg.execute("select status, error_message from run_log where id = %s", (body["run_id"],)).fetchone()
    assert run is not None and run["status"] == "FAILED" and COURSES_PATH in run["error_message"]


def test_paging_stops_at_the_first_empty_page_and_healthz_answers_meanwhile(
    make_worker: Any, simulator: Any, pg: psycopg.Connection[Any]
) -> None:
    simulator.state.claim_total_pages(COURSES_PATH, 200_000)
    # page 2 answers slowly: the sync is under way while /healthz is asked
    simulator.state.add_fault(timeout=True, hang_s=4.0, path_contains=f"{COURSES_PATH}?page=2&")
    worker = make_worker(kvca_max_pages=200_000, kvca_max_concurrency=8)
    answers: list[httpx.Response] = []
    sync = threading.Thread(target=lambda: answers.append(worker.sync()))
    sync.start()
    try:
        wait_for(
            lambda: simulator.state.stats()["in_flight"] > 0 and _requests(simulator, "courses")[1:], what="page 2"
        )
        health = httpx.get(f"{worker.base_url}/healthz", timeout=3.0)
        running = pg.execute("select count(*) as n from run_log where status = 'RUNNING'").fetchone()
    finally:
        sync.join(timeout=60)
    assert health.status_code == 200 and health.json()["ok"] is True
    assert running is not None and running["n"] == 1, "the sync had ended before /healthz answered"
    assert answers and answers[0].json()["ok"] is True, answers
    # page 1, then one window of max_concurrency pages (2..9): page 2 is empty, so no further window
    assert len(_requests(simulator, "courses")) <= 1 + 8


# -- 10: path segments ----------------------------------------------------------------------

ODD_USER_IDS = ["../../x", "a/b", "q?x=1", "h#frag", "with space", "김철수", "..", ".", "%2F", "a%20b"]


def test_user_ids_are_one_percent_encoded_segment_each(
    make_worker: Any, simulator: Any, pg: psycopg.Connection[Any]
) -> None:
    for user_id in ODD_USER_IDS:
        simulator.state.add_enrolment(9001, user_id, "IN_PROGRESS")
    worker = make_worker()

    body = worker.sync().json()

    assert body["ok"] is True, body
    assert body["report"]["details_skipped"] == 0, body
    stored = pg.execute(
        "select user_id, payload from source_record where source_type = 'enrolment_detail' and user_id = any(%s)",
        (ODD_USER_IDS,),
    ).fetchall()
    assert sorted(r["user_id"] for r in stored) == sorted(ODD_USER_IDS)
    assert all(r["payload"]["user_id"] == r["user_id"] for r in stored)
    asked = {r["target"] for r in _requests(simulator, "detail")}
    assert all("?" not in t and t.startswith("/api/v1/courses/9001/enrolments/") for t in asked), asked
    assert set(ODD_USER_IDS) <= {unquote(t.rsplit("/", 1)[-1]) for t in asked}
    assert "404" not in simulator.state.stats()["responses_by_status"]


# -- 13: request rate -----------------------------------------------------------------------


def test_requests_keep_within_the_rate_limit(make_worker: Any, simulator: Any) -> None:
    rate = 40
    worker = make_worker(kvca_max_requests_per_second=rate, kvca_max_concurrency=8)

    assert worker.sync().json()["ok"] is True
    times = sorted(r["t"] for r in simulator.state.requests())
    assert len(times) > 2 * rate  # enough requests for the limit to matter (89 details and the lists)
    # the limiter lets a tenth of the rate through at once; the margin is for arrivals the loaded server
    # stamps late and close together (old code: all of them within one second)
    busiest = max(sum(1 for t in times[i:] if t < start + 1.0) for i, start in enumerate(times))
    assert busiest <= rate * 1.25, busiest
    burst = rate // 10
    assert (len(times) - burst) / (times[-1] - times[0]) <= rate * 1.15


# -- 14: a body that drips in ---------------------------------------------------------------


def test_a_slow_drip_body_times_out_as_timeout(make_worker: Any, simulator: Any, pg: psycopg.Connection[Any]) -> None:
    # every piece arrives well within the timeout; the whole answer does not
    simulator.state.add_fault(drip_s=4.0, count=-1, path_contains="/categories/303")
    worker = make_worker(kvca_timeout_seconds=1.0, kvca_retries=0)

    answer = worker.sync()

    body = answer.json()
    assert answer.status_code == 504 and body["error_group"] == "TIMEOUT", body
    run = pg.execute("select error_group from run_log where id = %s", (body["run_id"],)).fetchone()
    assert run is not None and run["error_group"] == "TIMEOUT"
