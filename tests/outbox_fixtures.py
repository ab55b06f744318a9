"""Fixtures of the outbox tests: the fake Sheets API and a JSON webhook receiver running, helpers."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg.types.json import Jsonb

from enrolment_sync.config import Settings
from enrolment_sync.outbox.worker import Consumers, Counters, Only, build, run_consumers
from enrolment_sync.testing.fake_sheets import RunningFakeSheets
from enrolment_sync.testing.servers import JsonReceiver
from tests.conftest import make_settings

UNUSED_KVCA = "http://127.0.0.1:9"  # the outbox never calls upstream


@pytest.fixture
def fake_sheets() -> Iterator[RunningFakeSheets]:
    with RunningFakeSheets() as fake:
        yield fake


@pytest.fixture
def receiver() -> Iterator[JsonReceiver]:
    with JsonReceiver() as r:
        yield r


def outbox_settings(database_url: str, fake: RunningFakeSheets | None, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "outbox_backoff_base_seconds": 0.01,
        "outbox_backoff_max_seconds": 0.05,
        "outbox_poll_interval_seconds": 0.05,
        "outbox_max_attempts": 3,
        "outbox_lease_seconds": 30,
        "sheets_writes_per_minute": 100_000,
        "sheets_reads_per_minute": 100_000,
    }
    if fake is not None:
        values |= {"google_sheet_id": fake.spreadsheet_id, "google_sheets_api_url": fake.base_url}
    kvca_base_url = overrides.pop("kvca_base_url", UNUSED_KVCA)
    values |= overrides
    return make_settings(database_url, kvca_base_url, **values)


def fast_google(consumers: Consumers) -> None:
    """Backoff of the in-call API retries in milliseconds (tests)."""
    target = consumers.target
    if target is not None and hasattr(target, "backoff_base_s"):
        target.backoff_base_s = 0.01  # type: ignore[attr-defined]
        target.backoff_max_s = 0.05  # type: ignore[attr-defined]


def drain(
    settings: Settings, database_url: str, *, only: Only | None = None, batch: int | None = None, **kwargs: Any
) -> Counters:
    """Run the consumers in this thread until nothing is ready (`outbox run --once`)."""
    stop = threading.Event()
    consumers = build(settings, database_url, only=only, batch=batch, stop=stop, **kwargs)
    fast_google(consumers)
    try:
        return run_consumers(consumers, settings, once=True, stop=stop)
    finally:
        consumers.close()


def payload(
    category_id: int, course_id: int, user_id: str, *, run_id: int = 1, change: str = "NEW", **extra: Any
) -> dict[str, Any]:
    return {
        "change": change,
        "run_id": run_id,
        "category_id": category_id,
        "course_id": course_id,
        "course_name": "투자심사 실무",
        "user_id": user_id,
        "status": "IN_PROGRESS",
        "status_msg": "수강중",
        "gc_date": "2026-11-02",
        "sjc_date": None,
        "update_time": "2026-11-20T10:11:12+09:00",
        "progress_rate": 72.5,
        "attendance_rate": 90.0,
        "exam_score": None,
        "completed": False,
        "completion_date": None,
        **extra,
    }


def insert_run(pg: psycopg.Connection[Any], category_id: int = 303, status: str = "SUCCESS") -> int:
    row = pg.execute(
        "insert into run_log (trigger_type, status, category_id, finished_at, error_message) "
        "values ('SCHEDULER', %s, %s, case when %s = 'RUNNING' then null else now() end, "
        "case when %s = 'FAILED' then 'GET /api/v1/courses/9001/enrolments -> 503 Service Unavailable' end) "
        "returning id",
        (status, category_id, status, status),
    ).fetchone()
    assert row is not None
    return int(row["id"])  # type: ignore[call-overload]


def enqueue_sheet(
    pg: psycopg.Connection[Any],
    count: int,
    *,
    category_id: int = 303,
    course_id: int = 9001,
    run_id: int = 1,
    start: int = 1,
    change: str = "NEW",
    **extra: Any,
) -> list[str]:
    """Queue `count` sheet messages the way the sync does (one per learner); returns their source_ids."""
    rows = []
    for n in range(start, start + count):
        user_id = f"u{n:06d}"
        source_id = f"{category_id}:{course_id}:{user_id}"
        rows.append(
            {
                "category_id": category_id,
                "source_id": source_id,
                "payload": payload(category_id, course_id, user_id, run_id=run_id, change=change, **extra),
            }
        )
    pg.execute(
        "insert into sheet_outbox (run_id, category_id, source_id, payload) "
        "select %(run_id)s, r.category_id, r.source_id, r.payload "
        "from jsonb_to_recordset(%(rows)s::jsonb) as r(category_id bigint, source_id text, payload jsonb)",
        {"rows": Jsonb(rows), "run_id": run_id},
    )
    return [r["source_id"] for r in rows]
