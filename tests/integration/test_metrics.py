"""GET /metrics against real Postgres after real syncs (over HTTP and from the `sync` command), and its refusals."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families
from typer.testing import CliRunner

from enrolment_sync import __version__
from enrolment_sync.cli import app
from enrolment_sync.config import get_settings
from tests.conftest import Worker
from tests.console_fixtures import API_TOKEN, READONLY_PASSWORD, console_settings

ALLOWED_LABELS = {"trigger_type", "status", "error_group", "category_id", "alert_type", "severity", "queue", "code"}
ALLOWED_LABELS |= {"version", "le"}
Samples = dict[str, dict[tuple[tuple[str, str], ...], float]]


def scrape(base_url: str, **kwargs: Any) -> Samples:
    answer = httpx.get(f"{base_url}/metrics", headers={"Authorization": f"Bearer {API_TOKEN}"}, timeout=30, **kwargs)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/plain; version=")
    samples: Samples = {}
    for family in text_string_to_metric_families(answer.text):
        for s in family.samples:
            samples.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[name][tuple(sorted(labels.items()))]


@pytest.fixture
def console_worker(database_url: str, simulator: Any) -> Iterator[Worker]:
    with Worker(console_settings(database_url, simulator.base_url), database_url) as worker:
        yield worker


def test_metrics_count_what_the_runs_did(
    console_worker: Worker, simulator: Any, database_url: str, pg: psycopg.Connection[Any]
) -> None:
    auth = {"Authorization": f"Bearer {API_TOKEN}"}
    assert console_worker.sync(headers=auth).status_code == 200
    course_id = simulator.state.course_ids(303)[0]
    user_id = simulator.state.enrolments(course_id)[5]["user_id"]
    simulator.state.update_enrolment(course_id, user_id, status="CANCELLED")
    assert console_worker.sync(headers=auth).status_code == 200
    get_settings.cache_clear()
    env = {"DATABASE_URL": database_url, "KVCA_BASE_URL": simulator.base_url, "LOG_LEVEL": "WARNING"}
    try:
        cli = CliRunner().invoke(app, ["sync", "--category-id", "303", "--trigger-type", "MANUAL"], env=env)
    finally:
        get_settings.cache_clear()
    assert cli.exit_code == 0, cli.output
    simulator.state.add_fault(status=503, count=-1)
    failed = console_worker.sync(headers=auth)
    assert failed.status_code == 502 and failed.json()["error_group"] == "HTTP_5XX"

    m = scrape(console_worker.base_url)

    assert value(m, "enrolment_sync_runs_total", trigger_type="SCHEDULER", status="SUCCESS", error_group="") == 2
    assert value(m, "enrolment_sync_runs_total", trigger_type="MANUAL", status="SUCCESS", error_group="") == 1
    assert value(m, "enrolment_sync_runs_total", trigger_type="SCHEDULER", status="FAILED", error_group="HTTP_5XX") == 1
    assert sum(m["enrolment_sync_runs_total"].values()) == 4
    assert value(m, "enrolment_sync_records_changed_total") == 1

    runs = pg.execute(
        "select status, extract(epoch from finished_at - started_at)::float8 as seconds, "
        "extract(epoch from finished_at)::float8 as finished_s, summary from run_log order by id"
    ).fetchall()
    ok = [r for r in runs if r["status"] == "SUCCESS"]
    assert value(m, "enrolment_sync_run_duration_seconds_count", status="SUCCESS") == 3
    assert value(m, "enrolment_sync_run_duration_seconds_bucket", status="SUCCESS", le="+Inf") == 3
    assert value(m, "enrolment_sync_run_duration_seconds_sum", status="SUCCESS") == pytest.approx(
        sum(r["seconds"] for r in ok)
    )
    assert value(m, "enrolment_sync_run_duration_seconds_bucket", status="FAILED", le="+Inf") == 1
    assert value(m, "enrolment_sync_last_success_timestamp_seconds", category_id="303") == pytest.approx(
        max(r["finished_s"] for r in ok)
    )

    # each run's upstream answers, as its summary kept them; the failed run's 503s are counted too
    expected: dict[str, int] = {}
    for r in runs:
        for code, n in r["summary"]["upstream_codes"].items():
            expected[code] = expected.get(code, 0) + n
    assert expected["503"] >= 1 and expected["200"] >= 3 * 91
    assert {labels[0][1]: v for labels, v in m["enrolment_sync_upstream_requests_total"].items()} == expected

    open_alerts = pg.execute(
        "select alert_type, severity, count(*) as n from alert where not resolved group by 1, 2"
    ).fetchall()
    assert any(a["alert_type"] == "FAILED" for a in open_alerts)
    for a in open_alerts:
        assert value(m, "enrolment_sync_alerts_open", alert_type=a["alert_type"], severity=a["severity"]) == a["n"]

    pending = pg.execute("select count(*) as n from sheet_outbox where status = 'PENDING'").fetchone()
    assert pending is not None and pending["n"] > 0
    assert value(m, "enrolment_sync_outbox_messages", queue="sheet_outbox", status="PENDING") == pending["n"]
    assert value(m, "enrolment_sync_outbox_messages", queue="sheet_outbox", status="DEAD") == 0
    assert value(m, "enrolment_sync_outbox_oldest_open_age_seconds", queue="sheet_outbox") > 0
    assert value(m, "enrolment_sync_outbox_oldest_open_age_seconds", queue="sync_request") == 0
    assert value(m, "enrolment_sync_build_info", version=__version__) == 1

    labels = {name for series in m.values() for key in series for name, _ in key}
    assert labels <= ALLOWED_LABELS, labels - ALLOWED_LABELS


def test_metrics_refuse_without_credentials(console_worker: Worker) -> None:
    url = f"{console_worker.base_url}/metrics"
    for headers in ({}, {"Authorization": "Bearer wrong-token"}, {"Authorization": "Basic YTpi"}):
        answer = httpx.get(url, headers=headers, follow_redirects=False, timeout=30)
        assert answer.status_code == 401, answer.text
        assert "enrolment_sync_" not in answer.text
        assert answer.headers["www-authenticate"] == "Bearer"

    with httpx.Client(base_url=console_worker.base_url, timeout=30) as browser:
        login = browser.post(
            "/ops/login",
            data={"username": "관찰자", "password": READONLY_PASSWORD, "next": "/ops"},
            headers={"Origin": console_worker.base_url},
        )
        assert login.status_code == 303
        # the session cookie is scoped to /ops, where a browser sends it; /metrics takes it as well
        for answer in (
            browser.get("/ops/metrics"),
            httpx.get(url, headers={"Cookie": f"ops_session={browser.cookies['ops_session']}"}, timeout=30),
        ):
            assert answer.status_code == 200
            assert "enrolment_sync_build_info" in answer.text


def test_metrics_refuse_when_no_credential_is_configured(database_url: str, simulator: Any) -> None:
    settings = console_settings(
        database_url, simulator.base_url, ops_admin_password=None, ops_readonly_password=None, worker_api_token=None
    )
    with Worker(settings, database_url) as worker:
        answer = httpx.get(f"{worker.base_url}/metrics", timeout=30)
    assert answer.status_code == 401
