"""Consumers that die or are told to stop: leases bring messages back, SIGTERM finishes or gives back a batch."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import psycopg
import pytest

from enrolment_sync.outbox.sheets import DatabaseQuota
from enrolment_sync.outbox.worker import build, run_consumers
from enrolment_sync.testing.fake_sheets import RunningFakeSheets
from tests.outbox_fixtures import drain, enqueue_sheet, fake_sheets, outbox_settings
from tests.waiting import wait_for

__all__ = ["fake_sheets"]
TITLE = "category_303"


def consumer_process(database_url: str, fake: RunningFakeSheets, cwd: Path, **env: str) -> subprocess.Popen[bytes]:
    """`outbox run` in its own process; its output goes to files in `cwd` (an unread pipe could fill and stall it)."""
    environment = {
        **os.environ,
        "DATABASE_URL": database_url,
        "GOOGLE_SHEET_ID": fake.spreadsheet_id,
        "GOOGLE_SHEETS_API_URL": fake.base_url,
        "SHEETS_WRITES_PER_MINUTE": "100000",
        "SHEETS_READS_PER_MINUTE": "100000",
        "OUTBOX_POLL_INTERVAL_SECONDS": "0.05",
        **env,
    }
    with (cwd / "consumer.out").open("wb") as out, (cwd / "consumer.err").open("wb") as err:
        return subprocess.Popen(
            [sys.executable, "-m", "enrolment_sync.cli", "outbox", "run", "--only", "sheet"],
            env=environment,
            cwd=cwd,  # no stray .env
            stdout=out,
            stderr=err,
        )


def wait_until_stalled(proc: subprocess.Popen[bytes], fake: RunningFakeSheets, cwd: Path) -> None:
    """Until the consumer's append has landed and its answer is held; a slow machine may take long to start it."""

    def stalled() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"the consumer exited with {proc.returncode}: {(cwd / 'consumer.err').read_text()}")
        return fake.state.stalled >= 1

    wait_for(stalled, timeout_s=90, what="the consumer's append to land (its answer held)")


@pytest.mark.slow
def test_a_consumer_killed_mid_batch_leaves_no_duplicate_after_its_lease(
    pg: psycopg.Connection[Any], database_url: str, fake_sheets: RunningFakeSheets, tmp_path: Path
) -> None:
    keys = enqueue_sheet(pg, 50)
    fake_sheets.state.stall_after("values.append")  # the rows land, the answer never comes back
    proc = consumer_process(database_url, fake_sheets, tmp_path, OUTBOX_LEASE_SECONDS="1")
    try:
        wait_until_stalled(proc, fake_sheets, tmp_path)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    fake_sheets.state.clear_faults()
    assert fake_sheets.state.keys(TITLE) == keys
    assert pg.execute("select count(*) as n from sheet_outbox where status = 'PROCESSING'").fetchone() == {"n": 50}

    settings = outbox_settings(database_url, fake_sheets)
    totals: dict[str, int] = {"done": 0, "updated": 0, "appended": 0}

    def redelivered() -> bool:
        counters = drain(settings, database_url, only="sheet")
        totals["done"] += counters.sheet_done
        totals["updated"] += counters.rows_updated
        totals["appended"] += counters.rows_appended
        return totals["done"] == 50

    wait_for(redelivered, timeout_s=60, what="the expired lease to bring the messages back")
    assert totals == {"done": 50, "updated": 50, "appended": 0}
    assert fake_sheets.state.keys(TITLE) == keys  # still one row per learner
    assert pg.execute("select count(*) as n from sheet_outbox where status = 'DONE' and attempts = 2").fetchone() == {
        "n": 50
    }


@pytest.mark.slow
def test_sigterm_lets_the_batch_in_hand_finish(
    pg: psycopg.Connection[Any], database_url: str, fake_sheets: RunningFakeSheets, tmp_path: Path
) -> None:
    enqueue_sheet(pg, 20)
    fake_sheets.state.stall_after("values.append")
    proc = consumer_process(database_url, fake_sheets, tmp_path)
    try:
        wait_until_stalled(proc, fake_sheets, tmp_path)
        proc.send_signal(signal.SIGTERM)
        fake_sheets.state.release.set()
        code = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert code == 0, (tmp_path / "consumer.err").read_text()
    assert pg.execute("select count(*) as n from sheet_outbox where status = 'DONE' and attempts = 1").fetchone() == {
        "n": 20
    }
    assert len(fake_sheets.state.keys(TITLE)) == 20


def test_a_stop_while_waiting_for_quota_gives_the_batch_back_untried(
    pg: psycopg.Connection[Any], database_url: str, fake_sheets: RunningFakeSheets
) -> None:
    # 4 writes a minute: a bucket of 1, refilled every 20 s, so the second write of the batch has to wait
    settings = outbox_settings(database_url, fake_sheets, sheets_writes_per_minute=4)
    enqueue_sheet(pg, 5)
    stop = threading.Event()
    consumers = build(settings, database_url, only="sheet", stop=stop)
    quota = consumers.target.quota  # type: ignore[union-attr]
    assert isinstance(quota, DatabaseQuota)
    thread = threading.Thread(target=run_consumers, args=(consumers, settings), kwargs={"once": True, "stop": stop})
    thread.start()
    try:
        wait_for(lambda: quota.waited_s > 0, timeout_s=60, what="the consumer to wait for quota")
        stop.set()
        thread.join(timeout=60)
        assert not thread.is_alive()
    finally:
        stop.set()
        consumers.close()
    rows = pg.execute("select status, attempts, locked_by from sheet_outbox").fetchall()
    assert rows == [{"status": "PENDING", "attempts": 0, "locked_by": None}] * 5
    assert consumers.counters.released == 5
