"""Step 2 §5's verification scenario through the simulator, with an injectable clock for the cooldown."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import psycopg
import pytest

from enrolment_sync import db
from enrolment_sync.clock import ManualClock
from enrolment_sync.demo import ops_query
from enrolment_sync.staleness import check_staleness
from tests.conftest import Worker, make_settings

EXPECTED = {
    # name: (error_group, severity, worker HTTP status, upstream status)
    "503": ("HTTP_5XX", "high", 502, 503),
    "409": ("HTTP_409", "medium", 502, 409),
    "403": ("HTTP_4XX", "medium", 502, 403),
    "timeout": ("TIMEOUT", "high", 504, None),
    "credentials": ("HTTP_4XX", "medium", 502, 401),
    "lock": ("LOCK_CONFLICT", "low", 409, None),
}


def induce(name: str, sim: Any, pg: psycopg.Connection[Any]) -> None:
    sim.state.clear_faults()
    sim.state.set_credentials("demo-client", "demo-secret")
    pg.execute("delete from job_lock")
    if name in {"503", "409", "403"}:
        sim.state.add_fault(status=int(name), count=-1, path_contains="/enrolments")
    elif name == "timeout":
        sim.state.add_fault(timeout=True, hang_s=1.0, count=-1, path_contains="/courses/")
    elif name == "credentials":
        sim.state.set_credentials("demo-client", "rotated-secret")
    elif name == "lock":
        pg.execute(
            "insert into job_lock (job_name, locked_by, run_id, lock_expires_at)"
            " values ('enrolment_sync', 'other-host:4242:abcd', 999, now() + interval '10 minutes')"
        )


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(dt.datetime.now(dt.UTC))


@pytest.fixture
def fworker(database_url: str, simulator: Any, clock: ManualClock) -> Any:
    settings = make_settings(
        database_url, simulator.base_url, kvca_timeout_seconds=0.3, kvca_retries=1, alert_cooldown_minutes=60
    )
    with Worker(settings, database_url, clock=clock) as w:
        yield w


def test_step2_scenario(fworker: Worker, simulator: Any, pg: psycopg.Connection[Any], clock: ManualClock) -> None:
    good = fworker.sync()
    assert good.status_code == 200
    assert pg.execute("select status from run_log").fetchone()["status"] == "SUCCESS"

    first_alert: dict[str, int] = {}
    for name, (group, severity, http, upstream) in EXPECTED.items():
        induce(name, simulator, pg)
        answer = fworker.sync()
        assert answer.status_code == http, (name, answer.text)
        body = answer.json()
        assert body["ok"] is False and body["error_group"] == group
        assert "Traceback" not in body["error"] and "secret" not in body["error"]
        run = pg.execute("select * from run_log where id = %s", (body["run_id"],)).fetchone()
        assert run["status"] == "FAILED" and run["error_group"] == group, name
        assert run["http_status_code"] == upstream
        assert run["error_message"] == body["error"]
        if group in first_alert:  # wrong credentials after the 403: the same HTTP_4XX key, inside the cooldown
            assert run["created_alerts"] == 0, name
            alert = pg.execute("select * from alert where id = %s", (first_alert[group],)).fetchone()
            assert alert["last_run_id"] == run["id"]
        else:
            assert run["created_alerts"] == 1, name
            alert = pg.execute(
                "select * from alert where alert_type = 'FAILED' and detail->>'run_id' = %s", (str(run["id"]),)
            ).fetchone()
            assert alert is not None, name
            assert alert["detail"]["http_status_code"] == upstream
            assert alert["detail"]["error_message"] == run["error_message"]
        assert alert["source_type"] == "run_log" and alert["source_id"] == f"enrolment_sync:{group}"
        assert alert["severity"] == severity
        assert alert["detail"]["error_group"] == group
        first_alert.setdefault(group, alert["id"])

        # the same failure again inside the cooldown: no new alert, but counted on the open one
        clock.advance(minutes=5)
        again = fworker.sync()
        assert again.status_code == http
        rerun = pg.execute("select * from run_log where id = %s", (again.json()["run_id"],)).fetchone()
        assert rerun["created_alerts"] == 0, name
        counted = pg.execute("select * from alert where id = %s", (first_alert[group],)).fetchone()
        assert counted["occurrences"] >= 2 and counted["last_run_id"] == rerun["id"]

    # HTTP_4XX happened twice above (403, then wrong credentials) inside one cooldown: one alert
    failed_alerts = pg.execute("select source_id, count(*) as n from alert where alert_type = 'FAILED' group by 1")
    assert {r["source_id"]: r["n"] for r in failed_alerts} == {f"enrolment_sync:{g}": 1 for g, *_ in EXPECTED.values()}

    # 3-3 puts every failure in the worker's group (HTTP_4XX is OTHER there)
    ours: dict[str, int] = {}
    for row in pg.execute("select error_group from run_log where status = 'FAILED'"):
        key = "OTHER" if row["error_group"] == "HTTP_4XX" else row["error_group"]
        ours[key] = ours.get(key, 0) + 1
    assert {r["error_group"]: r["cnt"] for r in pg.execute(ops_query("3-3"))} == ours

    # 4-4 joins every FAILED run that created an alert to it
    joined = pg.execute(ops_query("4-4")).fetchall()
    creators = {r["id"] for r in pg.execute("select id from run_log where status = 'FAILED' and created_alerts = 1")}
    assert {j["run_id"] for j in joined if j["alert_id"] is not None} == creators

    # after the cooldown the same failure raises a new alert
    clock.advance(minutes=61)
    induce("503", simulator, pg)
    late = fworker.sync().json()
    assert (
        pg.execute("select created_alerts from run_log where id = %s", (late["run_id"],)).fetchone()["created_alerts"]
        == 1
    )
    assert (
        pg.execute("select count(*) as n from alert where source_id = 'enrolment_sync:HTTP_5XX'").fetchone()["n"] == 2
    )

    # recovery: the first success resolves the open FAILED alerts, so 3-5 shows only live problems
    induce("none", simulator, pg)
    assert fworker.sync().status_code == 200
    open_failed = pg.execute("select count(*) as n from alert where alert_type = 'FAILED' and not resolved")
    assert open_failed.fetchone()["n"] == 0
    assert all(a["alert_type"] != "FAILED" for a in pg.execute(ops_query("3-5")))
    resolved = pg.execute("select resolved_at, resolved_by from alert where alert_type = 'FAILED'").fetchall()
    assert all(r["resolved_at"] is not None and "SUCCESS" in r["resolved_by"] for r in resolved)


@pytest.mark.parametrize("fault", ["two_502", "one_429", "expired_token"])
def test_transient_faults_are_retried(
    fault: str, database_url: str, simulator: Any, pg: psycopg.Connection[Any]
) -> None:
    settings = make_settings(database_url, simulator.base_url, kvca_retries=3)
    with Worker(settings, database_url) as w:
        if fault == "expired_token":
            assert w.sync().status_code == 200  # a token is issued and cached... by a fresh client each run
            simulator.state.add_fault(status=401, count=1, path_contains="/enrolments")
        elif fault == "two_502":
            simulator.state.add_fault(status=502, count=2, path_contains="/enrolments")
        else:
            simulator.state.add_fault(status=429, count=1, retry_after=1, path_contains="/courses")
        simulator.state.reset_stats()
        answer = w.sync()
    assert answer.status_code == 200, answer.text
    stats = simulator.state.stats()
    expected_status = {"two_502": "502", "one_429": "429", "expired_token": "401"}[fault]
    assert stats["responses_by_status"].get(expected_status, 0) >= 1
    assert pg.execute("select count(*) as n from run_log where status = 'FAILED'").fetchone()["n"] == 0
    assert pg.execute("select count(*) as n from alert where alert_type = 'FAILED'").fetchone()["n"] == 0


def test_token_expiry_mid_run_is_renewed(database_url: str, simulator: Any) -> None:
    """The token really expires upstream while the run goes on: renewed once, the run succeeds."""
    from enrolment_sync.kvca.client import KvcaClient

    async def go() -> int:
        async with KvcaClient(base_url=simulator.base_url, client_id="demo-client", client_secret="demo-secret") as c:
            await c.get_category(303)
            simulator.state.expire_tokens()
            await c.list_courses(303)
            return c.stats.token_renewals

    assert asyncio.run(go()) == 1


def test_retry_trigger_is_an_ordinary_logged_run(worker: Worker, pg: psycopg.Connection[Any]) -> None:
    assert worker.sync({"category_id": 303, "trigger_type": "RETRY"}).status_code == 200
    assert pg.execute("select trigger_type, status from run_log").fetchone() == {
        "trigger_type": "RETRY",
        "status": "SUCCESS",
    }


def test_manual_resolve_by_command(database_url: str, simulator: Any, pg: psycopg.Connection[Any]) -> None:
    from typer.testing import CliRunner

    from enrolment_sync.cli import app
    from enrolment_sync.config import get_settings

    settings = make_settings(database_url, simulator.base_url)
    simulator.state.add_fault(status=503, count=-1)
    with Worker(settings, database_url) as w:
        assert w.sync().status_code == 502
    alert_id = pg.execute("select id from alert").fetchone()["id"]
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(app, ["alerts", "resolve", str(alert_id)], env={"DATABASE_URL": database_url})
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    row = pg.execute("select resolved, resolved_by from alert where id = %s", (alert_id,)).fetchone()
    assert row == {"resolved": True, "resolved_by": "operator"}


def test_staleness_alert_once_per_cooldown(database_url: str, simulator: Any, pg: psycopg.Connection[Any]) -> None:
    clock = ManualClock(dt.datetime.now(dt.UTC))
    settings = make_settings(database_url, simulator.base_url, stale_after_hours=26, alert_cooldown_minutes=60)
    with Worker(settings, database_url, clock=clock) as w:
        assert w.sync().status_code == 200
        clock.advance(hours=27)
        simulator.state.add_fault(status=503, count=-1)
        assert w.sync().status_code == 502  # this request notices the category is stale

    async def check() -> list[dict[str, Any]]:
        database = db.Database(db.parse_target(database_url), min_size=1, max_size=1)
        await database.open()
        try:
            return await check_staleness(database, settings, clock)
        finally:
            await database.close()

    stale = pg.execute("select * from alert where alert_type = 'STALE'").fetchall()
    assert len(stale) == 1 and stale[0]["severity"] == "high" and stale[0]["source_id"].endswith(":303")
    again = asyncio.run(check())  # the scheduler's `enrolment-sync check`, inside the cooldown
    assert again[0]["category_id"] == 303 and again[0]["alert_created"] is False
    clock.advance(minutes=61)
    assert asyncio.run(check())[0]["alert_created"] is True
    assert pg.execute("select count(*) as n from alert where alert_type = 'STALE'").fetchone()["n"] == 2
