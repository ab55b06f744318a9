"""Sheet consumer against a real Postgres and the fake Sheets API on loopback (through gspread)."""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

import psycopg

from enrolment_sync.outbox.policy import SHEET_COLUMNS
from enrolment_sync.outbox.workbook import read_local_sheet
from enrolment_sync.outbox.worker import build, run_consumers
from enrolment_sync.testing.fake_sheets import RunningFakeSheets
from tests.outbox_fixtures import (
    drain,
    enqueue_sheet,
    fake_sheets,
    fast_google,
    outbox_settings,
)
from tests.waiting import wait_for

__all__ = ["fake_sheets"]
TITLE = "category_303"
STATUS = SHEET_COLUMNS.index("status")


def statuses(pg: psycopg.Connection[Any], table: str = "sheet_outbox") -> Counter[str]:
    return Counter(r["status"] for r in pg.execute(f"select status from {table}").fetchall())


def test_rows_are_written_once_with_a_header_in_a_few_calls(
    pg: psycopg.Connection[Any], database_url: str, fake_sheets: RunningFakeSheets
) -> None:
    keys = enqueue_sheet(pg, 89)
    enqueue_sheet(pg, 5, category_id=304, course_id=9002)

    counters = drain(outbox_settings(database_url, fake_sheets), database_url, only="sheet")

    rows = fake_sheets.state.rows(TITLE)
    assert rows[0] == list(SHEET_COLUMNS)
    assert fake_sheets.state.keys(TITLE) == keys
    assert rows[1][STATUS] == "IN_PROGRESS"
    assert len(fake_sheets.state.keys("category_304")) == 5
    assert statuses(pg) == {"DONE": 94}
    assert counters.sheet_done == 94 and counters.rows_appended == 94
    calls = fake_sheets.state.stats()
    # one batch: metadata once, then per worksheet addSheet + batchGet + batchUpdate (header) + append
    assert calls["total"] <= 9, calls


def test_a_redelivered_message_rewrites_its_row_instead_of_adding_one(
    pg: psycopg.Connection[Any], database_url: str, fake_sheets: RunningFakeSheets
) -> None:
    settings = outbox_settings(database_url, fake_sheets)
    enqueue_sheet(pg, 10)
    drain(settings, database_url, only="sheet")
    # as if the consumer had died after writing but before marking done: the same messages come back
    pg.execute("update sheet_outbox set status = 'PENDING', next_attempt_at = now()")
    pg.execute(
        "update sheet_outbox set payload = payload || '{\"status\": \"COMPLETED\"}' where source_id like '%u000003'"
    )

    counters = drain(settings, database_url, only="sheet")

    keys = fake_sheets.state.keys(TITLE)
    assert len(keys) == 10 and len(set(keys)) == 10
    assert counters.rows_updated == 10 and counters.rows_appended == 0
    assert fake_sheets.state.rows(TITLE)[3][STATUS] == "COMPLETED"


def test_a_change_updates_the_row_in_place_and_new_learners_are_appended(
    pg: psycopg.Connection[Any], database_url: str, fake_sheets: RunningFakeSheets
) -> None:
    settings = outbox_settings(database_url, fake_sheets)
    enqueue_sheet(pg, 3)
    drain(settings, database_url, only="sheet")
    enqueue_sheet(pg, 1, start=2, run_id=2, change="CHANGED", status="CANCELLED", status_msg="수강취소")
    enqueue_sheet(pg, 1, start=4, run_id=2)

    drain(settings, database_url, only="sheet")

    rows = fake_sheets.state.rows(TITLE)
    assert [r[0] for r in rows[1:]] == ["303:9001:u000001", "303:9001:u000002", "303:9001:u000003", "303:9001:u000004"]
    assert rows[2][STATUS] == "CANCELLED" and rows[2][SHEET_COLUMNS.index("last_change")] == "CHANGED"


def test_429_and_5xx_back_off_and_the_batch_still_lands(
    pg: psycopg.Connection[Any], database_url: str, fake_sheets: RunningFakeSheets
) -> None:
    enqueue_sheet(pg, 20)
    fake_sheets.state.add_fault(429, 2, kind="write", retry_after=0)
    fake_sheets.state.add_fault(503, 1, kind="read")

    counters = drain(outbox_settings(database_url, fake_sheets), database_url, only="sheet")

    assert statuses(pg) == {"DONE": 20}
    assert len(fake_sheets.state.keys(TITLE)) == 20
    assert counters.sheet_retried == 0  # absorbed by the in-call backoff
    quota = pg.execute("select tokens from outbox_quota where name = 'sheets:write'").fetchone()
    assert quota is not None  # the shared bucket exists (and was drained by the 429)


def test_an_append_that_landed_but_answered_503_is_not_repeated(
    pg: psycopg.Connection[Any], database_url: str, fake_sheets: RunningFakeSheets
) -> None:
    enqueue_sheet(pg, 5)
    fake_sheets.state.fail_after_apply("values.append", 503)
    settings = outbox_settings(database_url, fake_sheets, outbox_backoff_base_seconds=0, outbox_backoff_max_seconds=0)

    counters = drain(settings, database_url, only="sheet")

    # the append is not repeated in place: the worksheet's write starts again from column A, finds the rows the
    # first append had added, and updates them
    assert counters.sheet_retried == 0 and counters.rows_updated == 5 and counters.rows_appended == 0
    assert fake_sheets.state.stats()["values.append"] == 1
    assert statuses(pg) == {"DONE": 5}
    keys = fake_sheets.state.keys(TITLE)
    assert len(keys) == 5 and len(set(keys)) == 5


def test_an_api_that_keeps_failing_backs_off_then_parks_the_messages_with_an_alert(
    pg: psycopg.Connection[Any], database_url: str, fake_sheets: RunningFakeSheets
) -> None:
    settings = outbox_settings(
        database_url, fake_sheets, outbox_max_attempts=2, outbox_backoff_base_seconds=60, outbox_backoff_max_seconds=120
    )
    enqueue_sheet(pg, 4)
    fake_sheets.state.add_fault(503, -1, endpoint="values.append")

    drain(settings, database_url, only="sheet")
    first = pg.execute(
        "select attempts, status, last_error, next_attempt_at > now() as later from sheet_outbox"
    ).fetchall()
    assert all(r["attempts"] == 1 and r["status"] == "PENDING" and r["later"] for r in first)
    assert "503" in first[0]["last_error"]

    pg.execute("update sheet_outbox set next_attempt_at = now()")  # skip the backoff instead of sleeping
    drain(settings, database_url, only="sheet")

    assert statuses(pg) == {"DEAD": 4}
    alert = pg.execute("select * from alert where alert_type = 'DEAD_LETTER'").fetchone()
    assert alert is not None and alert["severity"] == "high" and alert["detail"]["count"] == 4
    note = pg.execute("select * from notification_outbox where kind = 'DEAD_MESSAGE'").fetchone()
    assert note is not None and note["alert_id"] == alert["id"] and note["payload"]["count"] == 4
    assert pg.execute("select bool_and(dead_alerted) as a from sheet_outbox").fetchone() == {"a": True}
    # dead messages are not retried
    assert drain(settings, database_url, only="sheet").sheet_done == 0


def test_every_dead_batch_is_announced_even_inside_the_cooldown_and_after_a_crash(
    pg: psycopg.Connection[Any], database_url: str, fake_sheets: RunningFakeSheets
) -> None:
    settings = outbox_settings(database_url, fake_sheets, outbox_max_attempts=1)
    fake_sheets.state.add_fault(503, -1, endpoint="values.append")
    enqueue_sheet(pg, 3)
    drain(settings, database_url, only="sheet")  # first batch dead: alert created, notice queued
    enqueue_sheet(pg, 2, start=10)
    drain(settings, database_url, only="sheet")  # second batch dead inside the cooldown: counted, and announced
    # a consumer that died after parking but before announcing: the next sweep announces it
    enqueue_sheet(pg, 1, start=20)
    pg.execute("update sheet_outbox set status = 'DEAD', last_error = 'crashed' where status = 'PENDING'")
    drain(settings, database_url, only="sheet")

    alerts = pg.execute("select occurrences, detail from alert where alert_type = 'DEAD_LETTER'").fetchall()
    assert len(alerts) == 1 and alerts[0]["occurrences"] == 3
    notes = pg.execute(
        "select payload->>'count' as n from notification_outbox where kind = 'DEAD_MESSAGE' order by id"
    ).fetchall()
    assert [r["n"] for r in notes] == ["3", "2", "1"]
    assert pg.execute("select count(*) as n from sheet_outbox where not dead_alerted").fetchone() == {"n": 0}


def test_a_learner_with_an_older_open_message_waits_for_it(
    pg: psycopg.Connection[Any], database_url: str, fake_sheets: RunningFakeSheets
) -> None:
    enqueue_sheet(pg, 2, run_id=1)
    enqueue_sheet(pg, 1, run_id=2, change="CHANGED", status="COMPLETED")
    older = pg.execute("select id from sheet_outbox where run_id = 1 and source_id like '%u000001'").fetchone()
    assert older is not None
    pg.execute("update sheet_outbox set next_attempt_at = now() + interval '1 hour' where id = %s", (older["id"],))

    drain(outbox_settings(database_url, fake_sheets), database_url, only="sheet")

    # only u000002 was written: u000001's newer message waits behind its older one in backoff
    assert fake_sheets.state.keys(TITLE) == ["303:9001:u000002"]
    assert statuses(pg) == {"DONE": 1, "PENDING": 2}


def test_two_consumers_in_parallel_process_each_message_once(
    pg: psycopg.Connection[Any], database_url: str, fake_sheets: RunningFakeSheets
) -> None:
    settings = outbox_settings(database_url, fake_sheets)
    for category_id in (303, 304):
        enqueue_sheet(pg, 1000, category_id=category_id)
    stops = [threading.Event(), threading.Event()]
    consumers = [build(settings, database_url, only="sheet", batch=100, stop=s) for s in stops]
    for c in consumers:
        fast_google(c)
    results: list[Any] = [None, None]
    both_ready = threading.Barrier(2)

    def go(i: int) -> None:
        both_ready.wait(timeout=30)  # start together, so each really competes for the 20 batches
        results[i] = run_consumers(consumers[i], settings, once=True, stop=stops[i])

    threads = [threading.Thread(target=go, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    for c in consumers:
        c.close()

    assert all(r is not None for r in results)
    assert results[0].sheet_done > 0 and results[1].sheet_done > 0  # both took part
    assert results[0].sheet_done + results[1].sheet_done == 2000
    assert pg.execute("select count(*) as n from sheet_outbox where status = 'DONE' and attempts = 1").fetchone() == {
        "n": 2000
    }
    for title in ("category_303", "category_304"):
        keys = fake_sheets.state.keys(title)
        assert len(keys) == 1000 and len(set(keys)) == 1000


def test_without_google_settings_rows_go_to_a_local_workbook_per_category(
    pg: psycopg.Connection[Any], database_url: str, tmp_path: Any
) -> None:
    settings = outbox_settings(database_url, None, enrolment_sync_home=tmp_path)
    enqueue_sheet(pg, 3)
    drain(settings, database_url, only="sheet")
    pg.execute("update sheet_outbox set status = 'PENDING', next_attempt_at = now()")  # re-delivered
    enqueue_sheet(pg, 1, start=2, run_id=2, change="CHANGED", status="FAILED", status_msg="미수료")

    drain(settings, database_url, only="sheet")

    rows = read_local_sheet(tmp_path / "sheets" / "category_303.xlsx")
    assert rows[0] == list(SHEET_COLUMNS)
    assert [r[0] for r in rows[1:]] == ["303:9001:u000001", "303:9001:u000002", "303:9001:u000003"]
    assert rows[2][STATUS] == "FAILED"
    assert not list((tmp_path / "sheets").glob(".*.xlsx"))  # no temporary file left behind


def test_a_batch_whose_lease_was_taken_during_a_slow_call_writes_nothing(
    pg: psycopg.Connection[Any], database_url: str, fake_sheets: RunningFakeSheets
) -> None:
    settings = outbox_settings(database_url, fake_sheets)
    enqueue_sheet(pg, 3)
    drain(settings, database_url, only="sheet")
    before = fake_sheets.state.rows(TITLE)
    enqueue_sheet(pg, 3, run_id=2, change="CHANGED", status="CANCELLED")
    fake_sheets.state.stall_after("values.batchGet")  # the read that precedes every write, held
    worker = threading.Thread(target=lambda: drain(settings, database_url, only="sheet"))
    worker.start()
    wait_for(lambda: fake_sheets.state.stalled >= 1, what="the consumer to be inside its read")
    pg.execute("update sheet_outbox set locked_by = 'other-consumer' where status = 'PROCESSING'")  # taken over
    fake_sheets.state.clear_faults()  # the read answers now
    worker.join(timeout=60)

    assert fake_sheets.state.rows(TITLE) == before, "a consumer that lost its lease must not write"
    rows = pg.execute("select status, locked_by from sheet_outbox where run_id = 2").fetchall()
    assert {(r["status"], r["locked_by"]) for r in rows} == {("PROCESSING", "other-consumer")}
