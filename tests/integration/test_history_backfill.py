"""Migration 0005's backfill: CHANGED alerts raised by real syncs become history rows once, the stored records get
their first-seen and missing rows, and the migration reports what it created."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from importlib import resources
from typing import Any

import httpx
import psycopg
import pytest
from typer.testing import CliRunner

from enrolment_sync import db
from enrolment_sync.cli import app
from enrolment_sync.clock import ManualClock
from enrolment_sync.config import get_settings
from tests.conftest import Worker

STEP1 = {"category_id": 303, "trigger_type": "SCHEDULER"}
COMPARED = (
    "source_id",
    "change",
    "old_status",
    "new_status",
    "old_status_msg",
    "new_status_msg",
    "old_gc_date",
    "new_gc_date",
    "old_sjc_date",
    "new_sjc_date",
    "changed_at",
)
MIGRATION = "0005_status_history"


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(dt.datetime(2026, 11, 20, 1, 0, tzinfo=dt.UTC))


@pytest.fixture
def bworker(settings: Any, database_url: str, clock: ManualClock) -> Iterator[Worker]:
    with Worker(settings, database_url, clock=clock) as w:
        yield w


def control(simulator: Any, action: str, **body: Any) -> None:
    answer = httpx.post(f"{simulator.base_url}/_control/enrolments/{action}", json=body, timeout=10)
    assert answer.status_code == 200, answer.text


def other(status: str, *avoid: str) -> str:
    return next(s for s in ("IN_PROGRESS", "CANCELLED", "FAILED", "ENROLLED") if s != status and s not in avoid)


def history(pg: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
    rows = pg.execute("select * from status_history").fetchall()
    return sorted(tuple(r[c] for c in COMPARED) for r in rows)


def forget_history(pg: psycopg.Connection[Any]) -> None:
    """Back to the schema before 0005, with the records and alerts the syncs left."""
    pg.execute("drop table status_history")
    pg.execute("delete from schema_migration where name = %s", (MIGRATION,))


def test_backfill_rebuilds_the_history_the_sync_wrote(
    bworker: Worker, simulator: Any, pg: psycopg.Connection[Any], clock: ManualClock, database_url: str
) -> None:
    course_id = simulator.state.course_ids(303)[0]
    twice, msg_only, leaver = simulator.state.enrolments(course_id)[:3]
    assert bworker.sync(STEP1).status_code == 200
    # twice: two status changes inside the cooldown (the second is counted on the first alert, under detail.latest)
    first_change = other(twice["status"])
    control(simulator, "update", course_id=course_id, user_id=twice["user_id"], status=first_change)
    control(simulator, "update", course_id=course_id, user_id=msg_only["user_id"], status_msg="서류 보완 요청")
    clock.advance(minutes=5)
    assert bworker.sync(STEP1).json()["summary"]["created_alerts"] == 2
    control(simulator, "update", course_id=course_id, user_id=twice["user_id"], status=other(first_change))
    clock.advance(minutes=5)
    assert bworker.sync(STEP1).json()["summary"]["created_alerts"] == 0  # absorbed into the open alert
    control(simulator, "remove", course_id=course_id, user_id=leaver["user_id"])
    clock.advance(minutes=5)
    assert bworker.sync(STEP1).json()["report"]["vanished_records"] == 1
    written_by_sync = history(pg)
    assert len(written_by_sync) == 89 + 3 + 1

    forget_history(pg)
    notices: list[str] = []
    assert db.migrate(db.parse_target(database_url), notices=notices.append) == [MIGRATION]
    assert notices == [
        "status_history backfill: 3 rows from 2 CHANGED alerts (0 of them without dates: unreadable date text),"
        " 89 first-seen rows for stored records, 0 catch-up rows, 1 missing rows"
    ]
    assert history(pg) == written_by_sync
    kinds = pg.execute("select backfill, count(*)::int as n from status_history group by 1 order by 1").fetchall()
    assert [(r["backfill"], r["n"]) for r in kinds] == [("alert", 2), ("alert_latest", 1), ("record", 90)]

    # the migration's SQL run again by hand (say, in the SQL editor) creates nothing
    again: list[str] = []
    sql = resources.files("enrolment_sync").joinpath(f"sql/migrations/{MIGRATION}.sql").read_text("utf-8")
    backfill = sql[sql.index("do $backfill$") :]
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.add_notice_handler(lambda d: again.append(d.message_primary or ""))
        conn.execute(backfill.encode())
    assert again and again[0].startswith("status_history backfill: 0 rows from 2 CHANGED alerts")
    assert again[0].endswith("0 first-seen rows for stored records, 0 catch-up rows, 0 missing rows")
    assert history(pg) == written_by_sync

    # once the sync writes history itself, the backfill stands aside
    control(simulator, "update", course_id=course_id, user_id=msg_only["user_id"], status_msg="보완 완료")
    clock.advance(hours=2)
    assert bworker.sync(STEP1).status_code == 200
    skipped: list[str] = []
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.add_notice_handler(lambda d: skipped.append(d.message_primary or ""))
        conn.execute(backfill.encode())
    assert skipped == ["status_history backfill: skipped, the sync already writes history"]


def test_backfill_catches_up_where_an_alert_is_gone(
    bworker: Worker, simulator: Any, pg: psycopg.Connection[Any], clock: ManualClock, database_url: str
) -> None:
    course_id = simulator.state.course_ids(303)[0]
    learner = simulator.state.enrolments(course_id)[0]
    key = f"303:{course_id}:{learner['user_id']}"
    assert bworker.sync(STEP1).status_code == 200
    middle = other(learner["status"])
    control(simulator, "update", course_id=course_id, user_id=learner["user_id"], status=middle)
    clock.advance(minutes=5)
    bworker.sync(STEP1)
    last = other(middle, learner["status"])
    control(simulator, "update", course_id=course_id, user_id=learner["user_id"], status=last)
    clock.advance(hours=2)  # past the cooldown: a second alert
    bworker.sync(STEP1)
    written_by_sync = history(pg)

    forget_history(pg)
    pg.execute("delete from alert where id = (select max(id) from alert where source_id = %s)", (key,))
    notices: list[str] = []
    db.migrate(db.parse_target(database_url), notices=notices.append)
    assert "1 rows from 1 CHANGED alerts" in notices[0] and "1 catch-up rows" in notices[0]
    rows = pg.execute(
        "select change, old_status, new_status, changed_at, backfill from status_history"
        " where source_id = %s order by changed_at, id",
        (key,),
    ).fetchall()
    assert [(r["change"], r["old_status"], r["new_status"]) for r in rows] == [
        ("NEW", None, learner["status"]),
        ("CHANGED", learner["status"], middle),
        ("CHANGED", middle, last),
    ]
    assert rows[2]["changed_at"] == clock.now() and rows[2]["backfill"] == "record"
    others = [r for r in history(pg) if r[0] != key]
    assert others == [r for r in written_by_sync if r[0] != key]


def test_migrate_command_prints_what_the_backfill_created(
    bworker: Worker, simulator: Any, pg: psycopg.Connection[Any], database_url: str
) -> None:
    assert bworker.sync(STEP1).status_code == 200
    forget_history(pg)
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(app, ["migrate"], env={"DATABASE_URL": database_url, "LOG_LEVEL": "WARNING"})
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    assert "89 first-seen rows for stored records" in result.stdout
    assert f"applied: {MIGRATION}" in result.stdout


def test_status_history_has_rls_and_no_policy(pg: psycopg.Connection[Any]) -> None:
    row = pg.execute(
        "select c.relrowsecurity, (select count(*) from pg_policy p where p.polrelid = c.oid)::int as policies"
        " from pg_class c where c.oid = 'status_history'::regclass"
    ).fetchone()
    assert row == {"relrowsecurity": True, "policies": 0}
