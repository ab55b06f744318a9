"""The export of a category's current records, after real syncs against the simulator (over loopback HTTP):
csv (BOM, Korean headers) and xlsx hold exactly what source_record holds."""

from __future__ import annotations

import csv
import datetime as dt
import io
from pathlib import Path
from typing import Any

import httpx
import psycopg
from openpyxl import load_workbook

from enrolment_sync.reports import EXPORT_HEADERS, export, export_rows
from tests.conftest import Worker

STEP1 = {"category_id": 303, "trigger_type": "SCHEDULER"}


def control(simulator: Any, action: str, **body: Any) -> None:
    answer = httpx.post(f"{simulator.base_url}/_control/enrolments/{action}", json=body, timeout=10)
    assert answer.status_code == 200, answer.text


def sync_ok(worker: Worker) -> None:
    answer = worker.sync(STEP1)
    assert answer.status_code == 200, answer.text


def test_exports_hold_the_current_records(
    worker: Worker, simulator: Any, pg: psycopg.Connection[Any], tmp_path: Path
) -> None:
    course_id = simulator.state.course_ids(303)[0]
    changer, leaver = simulator.state.enrolments(course_id)[:2]
    sync_ok(worker)
    control(simulator, "update", course_id=course_id, user_id=changer["user_id"], status="COMPLETED")
    control(simulator, "remove", course_id=course_id, user_id=leaver["user_id"])
    sync_ok(worker)
    stored = {
        r["user_id"]: r
        for r in pg.execute(
            "select s.*, d.payload as detail from source_record s join source_record d"
            " on d.source_id = s.source_id and d.source_type = 'enrolment_detail'"
            " where s.source_type = 'enrolment_status'"
        ).fetchall()
    }

    with psycopg.connect(pg.info.dsn, autocommit=True) as conn:
        csv_path, xlsx_path = tmp_path / "cohort.csv", tmp_path / "cohort.xlsx"
        assert export(conn, 303, "csv", csv_path) == 89
        with xlsx_path.open("wb") as fh:
            assert export(conn, 303, "xlsx", fh) == 89
        assert sum(1 for _ in export_rows(conn, 303)) == 89
        assert list(export_rows(conn, 999)) == []

    raw = csv_path.read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf"), "Excel needs the BOM to read UTF-8"
    table = list(csv.reader(io.StringIO(raw.decode("utf-8-sig"), newline="")))
    assert tuple(table[0]) == EXPORT_HEADERS
    by_user = {row[2]: dict(zip(EXPORT_HEADERS, row, strict=True)) for row in table[1:]}
    assert set(by_user) == set(stored)
    done = by_user[changer["user_id"]]
    assert (done["수강 상태"], done["상태 코드"], done["수료 여부"]) == ("수료", "COMPLETED", "예")
    assert done["수료일"] == stored[changer["user_id"]]["detail"]["completion_date"]
    assert by_user[leaver["user_id"]]["목록에서 빠진 시각(KST)"] != ""
    for user_id, row in by_user.items():
        record = stored[user_id]
        assert row["상태 코드"] == record["status"] and row["상태 메시지"] == (record["status_msg"] or "")
        assert row["진도율(%)"] == str(record["detail"]["progress_rate"])
        kst = record["update_time"].astimezone(dt.timezone(dt.timedelta(hours=9)))
        assert row["최종 갱신(KST)"] == kst.strftime("%Y-%m-%d %H:%M:%S")

    sheet = load_workbook(xlsx_path, read_only=True).active
    assert sheet is not None
    cells = [list(r) for r in sheet.iter_rows(values_only=True)]
    assert tuple(cells[0]) == EXPORT_HEADERS
    assert [r[2] for r in cells[1:]] == [r[2] for r in table[1:]], "same records, same order as the csv"
    xrow = dict(zip(EXPORT_HEADERS, next(r for r in cells if r[2] == changer["user_id"]), strict=True))
    assert xrow["수강 상태"] == "수료" and isinstance(xrow["진도율(%)"], float | int)
    assert isinstance(xrow["최종 갱신(KST)"], dt.datetime)
