"""Status history through real syncs against the simulator (its /_control routes over loopback HTTP): the
history rows, a learner's timeline, daily counts, the exports and the CLI commands."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from typer.testing import CliRunner

from enrolment_sync.alerts import STATUS_KO
from enrolment_sync.cli import app
from enrolment_sync.clock import ManualClock
from enrolment_sync.config import get_settings
from enrolment_sync.history import timeline
from enrolment_sync.reports import STATUSES, daily_counts
from tests.conftest import Worker

STEP1 = {"category_id": 303, "trigger_type": "SCHEDULER", "max_categories": 1, "max_users_per_course": 500}
# 2026-11-20 14:30 UTC is 23:30 KST: the first sync belongs to KST day 11-20, one an hour later to 11-21
START = dt.datetime(2026, 11, 20, 14, 30, tzinfo=dt.UTC)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(START)


@pytest.fixture
def hworker(settings: Any, database_url: str, clock: ManualClock) -> Iterator[Worker]:
    with Worker(settings, database_url, clock=clock) as w:
        yield w


def control(simulator: Any, action: str, **body: Any) -> dict[str, Any]:
    answer = httpx.post(f"{simulator.base_url}/_control/enrolments/{action}", json=body, timeout=10)
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


def sync_ok(worker: Worker) -> dict[str, Any]:
    answer = worker.sync(STEP1)
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


def history_rows(pg: psycopg.Connection[Any], run_id: int | None = None) -> list[dict[str, Any]]:
    return pg.execute(
        "select * from status_history where %(run_id)s::bigint is null or run_id = %(run_id)s order by id",
        {"run_id": run_id},
    ).fetchall()


def status_counts(pg: psycopg.Connection[Any]) -> dict[str, int]:
    """The oracle for the report: what source_record says now (MISSING for records marked missing)."""
    rows = pg.execute(
        "select case when missing_since is null then status else 'MISSING' end as s, count(*)::int as n"
        " from source_record where source_type = 'enrolment_status' and category_id = 303 group by 1"
    ).fetchall()
    return {r["s"]: r["n"] for r in rows}


def first_users(simulator: Any, n: int) -> tuple[int, list[dict[str, Any]]]:
    course_id = simulator.state.course_ids(303)[0]
    return course_id, simulator.state.enrolments(course_id)[:n]


def test_history_timeline_and_daily_counts_follow_the_syncs(
    hworker: Worker, simulator: Any, pg: psycopg.Connection[Any], clock: ManualClock
) -> None:
    course_id, (changer, leaver, *_) = first_users(simulator, 3)
    u, v = changer["user_id"], leaver["user_id"]
    new_status = "CANCELLED" if changer["status"] != "CANCELLED" else "IN_PROGRESS"

    first = sync_ok(hworker)
    rows = history_rows(pg, first["run_id"])
    assert len(rows) == 89, "one NEW row per status record, none for details"
    assert {r["change"] for r in rows} == {"NEW"}
    assert all(r["changed_at"] == START and r["old_status"] is None for r in rows)
    day1 = status_counts(pg)

    # unchanged re-sync: no history row, counted from Postgres
    before = pg.execute("select count(*) as n, max(id) as top from status_history").fetchone()
    clock.advance(minutes=10)
    again = sync_ok(hworker)
    assert again["report"]["records_written"] == 0
    assert pg.execute("select count(*) as n, max(id) as top from status_history").fetchone() == before

    # one learner's status changes upstream (11-21 KST)
    control(simulator, "update", course_id=course_id, user_id=u, status=new_status)
    clock.advance(hours=1)
    second = sync_ok(hworker)
    rows = history_rows(pg, second["run_id"])
    assert [(r["source_id"], r["change"], r["old_status"], r["new_status"]) for r in rows] == [
        (f"303:{course_id}:{u}", "CHANGED", changer["status"], new_status)
    ]
    assert rows[0]["changed_at"] == clock.now() and rows[0]["new_status_msg"] != rows[0]["old_status_msg"]
    day2 = status_counts(pg)

    # another learner leaves (11-22 KST) ...
    control(simulator, "remove", course_id=course_id, user_id=v)
    clock.advance(hours=24)
    third = sync_ok(hworker)
    rows = history_rows(pg, third["run_id"])
    assert [(r["change"], r["old_status"], r["new_status"]) for r in rows] == [("MISSING", leaver["status"], None)]
    day3 = status_counts(pg)

    # ... and comes back (11-23 KST), enrolled afresh
    control(simulator, "add", course_id=course_id, user_id=v, status="ENROLLED")
    clock.advance(hours=24)
    fourth = sync_ok(hworker)
    rows = history_rows(pg, fourth["run_id"])
    assert [(r["change"], r["old_status"], r["new_status"]) for r in rows] == [("RETURNED", None, "ENROLLED")]
    day4 = status_counts(pg)

    with psycopg.connect(pg.info.dsn) as conn:
        entries = timeline(conn, 303, u)
        assert [(e.change, e.old_status, e.new_status) for e in entries] == [
            ("NEW", None, changer["status"]),
            ("CHANGED", changer["status"], new_status),
        ]
        old = changer["status"]
        assert entries[1].what().startswith(f"{STATUS_KO[old]}({old}) → {STATUS_KO[new_status]}({new_status})")
        assert [e.change for e in timeline(conn, 303, v)] == ["NEW", "MISSING", "RETURNED"]
        assert timeline(conn, 303, "nobody") == []

        days = daily_counts(conn, 303, dt.date(2026, 11, 19), dt.date(2026, 11, 24))
    assert [d.day for d in days] == [dt.date(2026, 11, 19) + dt.timedelta(days=i) for i in range(6)]
    assert days[0].counts == {}, "nothing was known before the first sync"
    assert [d.counts for d in days[1:]] == [day1, day2, day3, day4, day4]
    assert days[3].of("MISSING") == 1 and days[3].listed == 88


@pytest.fixture
def cli_env(database_url: str, simulator: Any) -> Iterator[dict[str, str]]:
    get_settings.cache_clear()
    yield {"DATABASE_URL": database_url, "KVCA_BASE_URL": simulator.base_url, "LOG_LEVEL": "WARNING"}
    get_settings.cache_clear()


def test_history_report_and_export_commands(
    cli_env: dict[str, str], simulator: Any, pg: psycopg.Connection[Any], tmp_path: Path
) -> None:
    runner = CliRunner()
    course_id, (changer, *_) = first_users(simulator, 1)
    assert runner.invoke(app, ["sync", "--category-id", "303"], env=cli_env).exit_code == 0
    target = "CANCELLED" if changer["status"] != "CANCELLED" else "COMPLETED"
    control(simulator, "update", course_id=course_id, user_id=changer["user_id"], status=target)
    assert runner.invoke(app, ["sync", "--category-id", "303"], env=cli_env).exit_code == 0

    shown = runner.invoke(
        app, ["history", "--category-id", "303", "--user-id", changer["user_id"]], env={**cli_env, "COLUMNS": "250"}
    )
    assert shown.exit_code == 0, shown.output
    changed_at = pg.execute("select max(changed_at) as t from status_history").fetchone()["t"]
    assert changed_at.astimezone(dt.timezone(dt.timedelta(hours=9))).strftime("%Y-%m-%d %H:%M:%S KST") in shown.stdout
    assert "신규" in shown.stdout and "변경" in shown.stdout and f"({target})" in shown.stdout

    missing = runner.invoke(app, ["history", "--category-id", "303", "--user-id", "nobody"], env=cli_env)
    assert missing.exit_code == 1 and "no history" in missing.output

    report = runner.invoke(app, ["report", "--category-id", "303"], env={**cli_env, "COLUMNS": "250"})
    assert report.exit_code == 0, report.output
    today = dt.datetime.now(dt.timezone(dt.timedelta(hours=9))).date().isoformat()
    line = next(row for row in report.stdout.splitlines() if today in row)
    numbers = [int(cell) for cell in line.replace("│", " ").split()[1:]]
    now = status_counts(pg)
    assert numbers == [*(now.get(s, 0) for s in STATUSES), 0, 89]
    backwards = runner.invoke(
        app, ["report", "--category-id", "303", "--from", "2026-11-22", "--to", "2026-11-21"], env=cli_env
    )
    assert backwards.exit_code == 2 and "after" in backwards.output
    bad_date = runner.invoke(app, ["report", "--category-id", "303", "--from", "22/11/2026"], env=cli_env)
    assert bad_date.exit_code == 2 and "--from" in bad_date.output

    for fmt in ("csv", "xlsx"):
        out = tmp_path / f"cohort.{fmt}"
        result = runner.invoke(
            app, ["export", "--category-id", "303", "--format", fmt, "--output", str(out)], env=cli_env
        )
        assert result.exit_code == 0, result.output
        assert "89 records" in result.stdout and out.stat().st_size > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cohort.csv", "cohort.xlsx"], "no partial file left"
    wrong = runner.invoke(
        app, ["export", "--category-id", "303", "--format", "pdf", "--output", str(tmp_path / "x")], env=cli_env
    )
    assert wrong.exit_code == 2 and "--format" in wrong.output
