"""The outbox as operations meet it: a bad row, formula-looking text, a sorted sheet, a deleted worksheet,
piped status, file permissions, a consumer dying mid-delivery, housekeeping and a worker host whose clock is
fast. Real Postgres, the fake Sheets API over loopback (through gspread) or the local workbook."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import stat
import subprocess
import sys
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import openpyxl
import psycopg
import pytest
from typer.testing import CliRunner

from enrolment_sync.cli import app
from enrolment_sync.clock import ManualClock
from enrolment_sync.outbox.channels import redacted
from enrolment_sync.outbox.policy import SHEET_COLUMNS
from enrolment_sync.outbox.workbook import read_local_sheet
from enrolment_sync.outbox.worker import build, run_consumers
from enrolment_sync.testing.fake_sheets import RunningFakeSheets
from enrolment_sync.testing.servers import JsonReceiver
from tests.conftest import Worker, make_settings
from tests.outbox_fixtures import (
    drain,
    enqueue_sheet,
    fake_sheets,
    fast_google,
    insert_run,
    outbox_settings,
    receiver,
)
from tests.waiting import wait_for

__all__ = ["fake_sheets", "receiver"]
TITLE = "category_303"
STATUS = SHEET_COLUMNS.index("status")
STATUS_MSG = SHEET_COLUMNS.index("status_msg")


def statuses(pg: psycopg.Connection[Any]) -> Counter[str]:
    return Counter(r["status"] for r in pg.execute("select status from sheet_outbox").fetchall())


# -- 1. one bad row ------------------------------------------------------------------------------------


def test_a_control_character_in_one_row_neither_fails_nor_holds_back_the_batch(
    pg: psycopg.Connection[Any], database_url: str, tmp_path: Path
) -> None:
    enqueue_sheet(pg, 9)
    enqueue_sheet(pg, 1, start=10, status_msg="수강\x01중\x1b[0m")
    settings = outbox_settings(database_url, None, enrolment_sync_home=tmp_path)

    counters = drain(settings, database_url, only="sheet")

    assert statuses(pg) == {"DONE": 10}
    assert counters.sheet_retried == 0 and counters.sheet_dead == 0
    rows = read_local_sheet(tmp_path / "sheets" / f"{TITLE}.xlsx")
    assert len(rows) == 11
    assert rows[10][STATUS_MSG] == "수강\ufffd중\ufffd[0m"  # the control characters, visibly replaced


def test_a_row_the_api_refuses_is_isolated_and_only_it_is_retried_then_parked(
    pg: psycopg.Connection[Any], database_url: str, fake_sheets: RunningFakeSheets
) -> None:
    keys = enqueue_sheet(pg, 20)
    poisoned = enqueue_sheet(pg, 1, start=21, status_msg="POISON")[0]
    enqueue_sheet(pg, 3, category_id=304, course_id=9002)
    fake_sheets.state.reject_text("POISON")
    settings = outbox_settings(database_url, fake_sheets, outbox_max_attempts=2, outbox_backoff_base_seconds=0)

    drain(settings, database_url, only="sheet")

    assert fake_sheets.state.keys(TITLE) == keys
    assert len(fake_sheets.state.keys("category_304")) == 3
    rows = pg.execute("select source_id, status, attempts, last_error from sheet_outbox where status <> 'DONE'")
    left = rows.fetchall()
    assert [(r["source_id"], r["status"], r["attempts"]) for r in left] == [(poisoned, "DEAD", 2)]
    assert "Invalid value" in left[0]["last_error"]
    alert = pg.execute("select detail from alert where alert_type = 'DEAD_LETTER'").fetchone()
    assert alert is not None and alert["detail"]["count"] == 1


def test_a_protected_worksheet_fails_only_its_own_category(
    pg: psycopg.Connection[Any], database_url: str, fake_sheets: RunningFakeSheets
) -> None:
    settings = outbox_settings(database_url, fake_sheets, outbox_backoff_base_seconds=60)
    enqueue_sheet(pg, 1, category_id=304, course_id=9002)
    drain(settings, database_url, only="sheet")
    fake_sheets.state.protect("category_304")
    keys = enqueue_sheet(pg, 5, run_id=2)
    enqueue_sheet(pg, 5, category_id=304, course_id=9002, start=10, run_id=2)

    counters = drain(settings, database_url, only="sheet")

    assert fake_sheets.state.keys(TITLE) == keys
    failed = pg.execute(
        "select category_id, status, last_error from sheet_outbox where run_id = 2 and status <> 'DONE'"
    )
    rows = failed.fetchall()
    assert {(r["category_id"], r["status"]) for r in rows} == {(304, "PENDING")} and len(rows) == 5
    assert "protected" in rows[0]["last_error"]
    assert counters.sheet_done == 5 and counters.sheet_retried == 5


# -- 2. formula-looking text ---------------------------------------------------------------------------

FORMULAS = {
    "status_msg": "=1+1",
    "course_name": '=HYPERLINK("http://127.0.0.1/x","클릭")',
    "gc_date": "+82-10-0000",
    "sjc_date": "-1",
    "completion_date": "@SUM(A1)",
}


def test_formula_looking_upstream_text_is_a_string_cell_in_the_workbook(
    pg: psycopg.Connection[Any], database_url: str, tmp_path: Path
) -> None:
    enqueue_sheet(pg, 1, **FORMULAS)
    drain(outbox_settings(database_url, None, enrolment_sync_home=tmp_path), database_url, only="sheet")
    enqueue_sheet(pg, 1, run_id=2, change="CHANGED", **{**FORMULAS, "status_msg": "=2+2"})  # rewritten in place as well
    drain(outbox_settings(database_url, None, enrolment_sync_home=tmp_path), database_url, only="sheet")

    sheet = openpyxl.load_workbook(tmp_path / "sheets" / f"{TITLE}.xlsx")[TITLE]
    for column, text in {**FORMULAS, "status_msg": "=2+2"}.items():
        cell = sheet.cell(row=2, column=SHEET_COLUMNS.index(column) + 1)
        assert (cell.value, cell.data_type) == (text, "s"), column


def test_formula_looking_upstream_text_is_sent_raw_to_google(
    pg: psycopg.Connection[Any], database_url: str, fake_sheets: RunningFakeSheets
) -> None:
    enqueue_sheet(pg, 1, **FORMULAS)
    settings = outbox_settings(database_url, fake_sheets)
    drain(settings, database_url, only="sheet")
    enqueue_sheet(pg, 1, run_id=2, change="CHANGED", **{**FORMULAS, "status_msg": "=2+2"})
    drain(settings, database_url, only="sheet")

    assert set(fake_sheets.state.input_options) == {"RAW"}  # every value write: the append and the update
    row = fake_sheets.state.rows(TITLE)[1]
    assert row[STATUS_MSG] == "=2+2" and row[SHEET_COLUMNS.index("course_name")] == FORMULAS["course_name"]


# -- 3. rows moved by a person while the consumer waits ------------------------------------------------


def test_rows_sorted_while_the_consumer_waits_for_write_quota_are_updated_by_key(
    pg: psycopg.Connection[Any], database_url: str, fake_sheets: RunningFakeSheets
) -> None:
    # 600 writes a minute: a bucket of 150 refilled at 7.5 a second
    settings = outbox_settings(database_url, fake_sheets, sheets_writes_per_minute=600)
    keys = enqueue_sheet(pg, 5)
    drain(settings, database_url, only="sheet")
    enqueue_sheet(pg, 2, run_id=2, change="CHANGED", status="COMPLETED")  # u000001 and u000002 change
    # the write bucket is empty: the next write waits about two seconds
    pg.execute("update outbox_quota set tokens = -15, granted = true, refreshed_at = now() where name = 'sheets:write'")
    worker = threading.Thread(target=lambda: drain(settings, database_url, only="sheet"))
    worker.start()
    try:
        wait_for(
            lambda: (
                pg.execute("select granted from outbox_quota where name = 'sheets:write'").fetchone()
                == {"granted": False}
            ),
            what="the consumer to be refused write quota",
        )
        fake_sheets.state.sort_rows(TITLE)  # a person sorts the sheet, Z to A, meanwhile
    finally:
        worker.join(timeout=60)

    rows = fake_sheets.state.rows(TITLE)[1:]
    assert sorted(r[0] for r in rows) == keys  # nobody vanished, nobody twice
    by_key = {r[0]: r[STATUS] for r in rows}
    assert by_key == {k: ("COMPLETED" if k.endswith(("u000001", "u000002")) else "IN_PROGRESS") for k in keys}
    assert [r[0] for r in rows] == sorted(keys, reverse=True)  # the person's order stays
    assert statuses(pg) == {"DONE": 7}


# -- 4. a deleted or renamed worksheet -----------------------------------------------------------------


@pytest.mark.parametrize("what_people_do", ["delete", "rename"])
def test_a_deleted_or_renamed_worksheet_is_added_again_by_a_running_consumer(
    pg: psycopg.Connection[Any], database_url: str, fake_sheets: RunningFakeSheets, what_people_do: str
) -> None:
    settings = outbox_settings(database_url, fake_sheets)
    stop = threading.Event()
    consumers = build(settings, database_url, only="sheet", stop=stop)  # one process: its worksheet cache lives on
    fast_google(consumers)
    try:
        enqueue_sheet(pg, 3)
        run_consumers(consumers, settings, once=True, stop=stop)
        if what_people_do == "delete":
            fake_sheets.state.delete_sheet(TITLE)
        else:
            fake_sheets.state.rename_sheet(TITLE, "예전 시트")
        keys = enqueue_sheet(pg, 2, start=10, run_id=2)

        run_consumers(consumers, settings, once=True, stop=stop)
    finally:
        consumers.close()

    assert statuses(pg) == {"DONE": 5}
    assert fake_sheets.state.rows(TITLE)[0] == list(SHEET_COLUMNS)
    assert fake_sheets.state.keys(TITLE) == keys


def test_a_local_workbook_without_the_category_worksheet_gets_it_by_name(
    pg: psycopg.Connection[Any], database_url: str, tmp_path: Path
) -> None:
    folder = tmp_path / "sheets"
    folder.mkdir()
    workbook = openpyxl.Workbook()
    assert workbook.active is not None
    workbook.active.title = "Sheet1"
    workbook.active["A1"] = "담당자 메모"  # a person's notes, the active sheet: never written by the consumer
    workbook.save(folder / f"{TITLE}.xlsx")
    keys = enqueue_sheet(pg, 2)

    drain(outbox_settings(database_url, None, enrolment_sync_home=tmp_path), database_url, only="sheet")

    saved = openpyxl.load_workbook(folder / f"{TITLE}.xlsx")
    assert saved.sheetnames == ["Sheet1", TITLE]
    assert [[c.value for c in row] for row in saved["Sheet1"].iter_rows()] == [["담당자 메모"]]
    rows = [list(r) for r in saved[TITLE].iter_rows(values_only=True)]
    assert rows[0] == list(SHEET_COLUMNS) and [r[0] for r in rows[1:]] == keys


# -- 5. outbox status, piped ---------------------------------------------------------------------------


def test_outbox_status_piped_is_complete_and_json_is_available(
    pg: psycopg.Connection[Any], database_url: str, tmp_path: Path
) -> None:
    long_key = "303:9001:" + "학습자-" * 20 + "end"
    error = "Sheets API values.batchUpdate: HTTP 400: " + "x" * 300 + " [/bold] the end"
    pg.execute(
        "insert into sheet_outbox (category_id, source_id, payload, status, attempts, last_error, dead_alerted) "
        "values (303, %s, '{}', 'DEAD', 8, %s, true)",
        (long_key, error),
    )
    env = {"DATABASE_URL": database_url, "ENROLMENT_SYNC_HOME": str(tmp_path), "COLUMNS": "80"}

    piped = CliRunner().invoke(app, ["outbox", "status"], env=env)
    as_json = CliRunner().invoke(app, ["outbox", "status", "--json"], env=env)

    assert piped.exit_code == 0, piped.output
    assert long_key in piped.output and error in piped.output and "notification_outbox" in piped.output
    assert as_json.exit_code == 0, as_json.output
    data = json.loads(as_json.output)
    assert {q["queue"] for q in data["queues"]} == {"sheet_outbox", "notification_outbox"}
    (dead,) = data["dead"]
    assert dead["what"] == f"category 303 {long_key}" and dead["last_error"] == error
    assert dead["updated_at_kst"].endswith("+09:00")


# -- 6. the workbook's permissions ---------------------------------------------------------------------


@pytest.mark.skipif(os.name != "posix", reason="file modes are POSIX")
def test_the_workbook_file_follows_the_umask(pg: psycopg.Connection[Any], database_url: str, tmp_path: Path) -> None:
    enqueue_sheet(pg, 1)
    previous = os.umask(0o002)
    try:
        drain(outbox_settings(database_url, None, enrolment_sync_home=tmp_path), database_url, only="sheet")
    finally:
        os.umask(previous)

    mode = stat.S_IMODE((tmp_path / "sheets" / f"{TITLE}.xlsx").stat().st_mode)
    assert mode == 0o664, oct(mode)


# -- 8. housekeeping -----------------------------------------------------------------------------------


def test_done_messages_are_pruned_after_the_retention_dead_ones_stay(
    pg: psycopg.Connection[Any], database_url: str, fake_sheets: RunningFakeSheets
) -> None:
    old = "now() - interval '31 days'"
    for table, columns, values in (
        ("sheet_outbox", "category_id, source_id, payload", "303, 'k' || n, '{}'"),
        ("notification_outbox", "kind, dedupe_key, severity, payload", "'CHANGE_DIGEST', 'd' || n, 'low', '{}'"),
    ):
        pg.execute(
            f"insert into {table} ({columns}, status, processed_at, dead_alerted) "
            f"select {values}, case when n <= 2500 then 'DONE' else 'DEAD' end, {old}, true "
            "from generate_series(1, 2510) n"
        )
    enqueue_sheet(pg, 3)  # processed now: kept
    settings = outbox_settings(database_url, fake_sheets, outbox_done_retention_hours=720)

    counters = drain(settings, database_url)

    left = pg.execute(
        "select 'sheet' as q, status, count(*) as n from sheet_outbox group by status "
        "union all select 'notify', status, count(*) from notification_outbox group by status order by 1, 2"
    ).fetchall()
    assert {(r["q"], r["status"]): r["n"] for r in left} == {
        ("sheet", "DONE"): 3,
        ("sheet", "DEAD"): 10,
        ("notify", "DONE"): 1,  # the digest of the three rows, sent just now
        ("notify", "DEAD"): 10,
    }
    assert counters.pruned == 5000


# -- 9. one clock: the database's ----------------------------------------------------------------------


def test_a_worker_host_whose_clock_is_fast_does_not_delay_its_sheet_messages(
    pg: psycopg.Connection[Any], database_url: str, fake_sheets: RunningFakeSheets, simulator: Any
) -> None:
    fast = ManualClock(dt.datetime.now(dt.UTC) + dt.timedelta(minutes=30))
    with Worker(make_settings(database_url, simulator.base_url), database_url, clock=fast) as worker:
        assert worker.sync().status_code == 200

    counters = drain(outbox_settings(database_url, fake_sheets), database_url, only="sheet")

    assert counters.sheet_done == 89
    assert len(fake_sheets.state.keys(TITLE)) == 89


# -- 7. delivered, then the consumer died ---------------------------------------------------------------


class HoldingReceiver:
    """A loopback webhook that takes a POST and never answers it (until released): the channel got the message,
    the consumer never learns it."""

    def __init__(self) -> None:
        self.received = 0
        self.lock = threading.Lock()
        self.released = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with receiver.lock:
                    receiver.received += 1
                receiver.released.wait(30)

            def log_message(self, *args: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"json://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def count(self) -> int:
        with self.lock:
            return self.received

    def close(self) -> None:
        self.released.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.slow
def test_a_notification_sent_but_never_confirmed_is_announced_as_such_not_as_held_back(
    pg: psycopg.Connection[Any], database_url: str, receiver: JsonReceiver, tmp_path: Path
) -> None:
    run_id = insert_run(pg)
    pg.execute(
        "insert into notification_outbox (kind, dedupe_key, severity, run_id, category_id, payload) "
        "values ('CHANGE_DIGEST', %s, 'low', %s, 303, '{}')",
        (f"digest:{run_id}:303", run_id),
    )
    holding = HoldingReceiver()
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "ENROLMENT_SYNC_HOME": str(tmp_path),
        "NOTIFY_URLS": holding.url,
        "OUTBOX_LEASE_SECONDS": "1",
        "OUTBOX_POLL_INTERVAL_SECONDS": "0.05",
    }
    try:
        for attempt in (1, 2):  # each attempt's POST reaches the channel, then its consumer is killed
            proc = subprocess.Popen(
                [sys.executable, "-m", "enrolment_sync.cli", "outbox", "run", "--only", "notify"],
                env=env,
                cwd=tmp_path,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            try:
                wait_for(lambda n=attempt: holding.count() >= n, timeout_s=90, what=f"POST of attempt {attempt}")
            finally:
                proc.send_signal(signal.SIGKILL)
                proc.wait(timeout=10)
    finally:
        holding.close()
    settings = outbox_settings(
        database_url, None, enrolment_sync_home=tmp_path, outbox_max_attempts=2, notify_urls=receiver.url()
    )

    wait_for(
        lambda: drain(settings, database_url, only="notify") is not None and bool(receiver.messages()),
        timeout_s=60,
        what="the expired lease to park the notification and its notice to be sent",
    )

    (notice,) = receiver.messages()
    assert "보류" not in notice["title"] + notice["message"]
    assert "전달 확인 안 됨" in notice["title"]
    assert f"전송했으나 확인 안 됨: {redacted(holding.url)} (2회)" in notice["message"]
    row = pg.execute("select status, sent_unconfirmed from notification_outbox where kind = 'CHANGE_DIGEST'")
    assert row.fetchone() == {"status": "DEAD", "sent_unconfirmed": {redacted(holding.url): 2}}


# -- issue 10, item 15: Windows has no fcntl ------------------------------------------------------------

WITHOUT_FCNTL = """
import sys

class NoFcntl:  # as on Windows
    def find_spec(self, name, path=None, target=None):
        if name == "fcntl":
            raise ImportError("No module named 'fcntl'")
        return None

sys.meta_path.insert(0, NoFcntl())
sys.modules.pop("fcntl", None)
from enrolment_sync.cli import main
sys.argv = ["enrolment-sync", "outbox", "run", "--once", "--only", "sheet"]
main()
"""


def test_the_cli_starts_and_writes_the_local_workbook_without_fcntl(
    pg: psycopg.Connection[Any], database_url: str, tmp_path: Path
) -> None:
    keys = enqueue_sheet(pg, 3)
    env = {**os.environ, "DATABASE_URL": database_url, "ENROLMENT_SYNC_HOME": str(tmp_path)}

    done = subprocess.run(
        [sys.executable, "-c", WITHOUT_FCNTL], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120
    )

    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["sheet_done"] == 3
    rows = read_local_sheet(tmp_path / "sheets" / f"{TITLE}.xlsx")
    assert [r[0] for r in rows[1:]] == keys
