"""Step 3 end to end: a sync over HTTP -> sheet rows (fake Google Sheets) -> one digest -> the channel."""

from __future__ import annotations

from typing import Any

import psycopg

from enrolment_sync.outbox.policy import SHEET_COLUMNS
from enrolment_sync.testing.fake_sheets import RunningFakeSheets
from enrolment_sync.testing.servers import JsonReceiver
from tests.outbox_fixtures import drain, fake_sheets, outbox_settings, receiver

__all__ = ["fake_sheets", "receiver"]
TITLE = "category_303"
STATUS = SHEET_COLUMNS.index("status")


def test_sync_changes_reach_the_sheet_once_per_learner_and_one_digest_per_run(
    pg: psycopg.Connection[Any],
    database_url: str,
    simulator: Any,
    worker: Any,
    fake_sheets: RunningFakeSheets,
    receiver: JsonReceiver,
) -> None:
    settings = outbox_settings(database_url, fake_sheets, notify_urls=receiver.url())

    first = worker.sync()
    assert first.status_code == 200, first.text
    drain(settings, database_url)

    keys = fake_sheets.state.keys(TITLE)
    assert len(keys) == 89 and len(set(keys)) == 89
    digests = receiver.messages()
    assert len(digests) == 1 and "신규 수강: 89명" in digests[0]["message"]

    course_id = simulator.state.course_ids(303)[0]
    user_id = sorted(r["user_id"] for r in simulator.state.enrolments(course_id))[0]
    simulator.state.update_enrolment(course_id, user_id, status="CANCELLED")
    second = worker.sync()
    assert second.json()["summary"]["changed_records"] == 1
    drain(settings, database_url)

    rows = fake_sheets.state.rows(TITLE)
    assert [r[0] for r in rows[1:]] == keys  # same rows, same places
    changed = next(r for r in rows if r[0] == f"303:{course_id}:{user_id}")
    assert changed[STATUS] == "CANCELLED" and changed[SHEET_COLUMNS.index("last_change")] == "CHANGED"
    digests = receiver.messages()
    assert len(digests) == 2
    assert "변경: 1명" in digests[1]["message"] and user_id in digests[1]["message"]
    assert pg.execute("select count(*) as n from sheet_outbox where status <> 'DONE'").fetchone() == {"n": 0}


def test_a_high_failed_alert_of_a_real_failed_run_reaches_the_channel(
    pg: psycopg.Connection[Any], database_url: str, simulator: Any, worker: Any, receiver: JsonReceiver
) -> None:
    simulator.state.add_fault(status=503, count=-1, path_contains="/enrolments")
    failed = worker.sync()
    assert failed.status_code >= 500 and failed.json()["error_group"] == "HTTP_5XX"
    settings = outbox_settings(database_url, None, notify_urls=receiver.url())

    drain(settings, database_url, only="notify")

    got = receiver.messages()
    assert len(got) == 1
    assert "HTTP_5XX" in got[0]["title"] and f"실행(run_id): {failed.json()['run_id']}" in got[0]["message"]
