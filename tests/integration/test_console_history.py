"""The console's history side over real HTTP, after real syncs against the simulator: a learner's timeline, a
cohort's daily counts chart (the same figures as reports.daily_counts) and the .csv / .xlsx downloads."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import re
from typing import Any

import httpx
import openpyxl
import psycopg

from enrolment_sync import reports
from enrolment_sync.clock import to_kst
from enrolment_sync.web.history_pages import counts_chart
from tests.console_fixtures import API_TOKEN, READONLY_PASSWORD, Demo, demo
from tests.outbox_fixtures import fake_sheets

__all__ = ["demo", "fake_sheets"]  # fixtures

CATEGORY = 303


def _status_records(pg: psycopg.Connection[Any]) -> int:
    row = pg.execute(
        "select count(*) as n from source_record where category_id = %s and source_type = 'enrolment_status'",
        [CATEGORY],
    ).fetchone()
    assert row is not None
    return int(row["n"])


def test_the_learner_page_shows_a_status_change_made_upstream_in_the_timeline(demo: Demo, simulator: Any) -> None:
    course_id = simulator.state.course_ids(CATEGORY)[0]
    learner = simulator.state.enrolments(course_id)[7]
    user_id, new_status = learner["user_id"], "FAILED" if learner["status"] == "COMPLETED" else "COMPLETED"
    changed = httpx.post(
        simulator.base_url + "/_control/enrolments/update",
        json={"course_id": course_id, "user_id": user_id, "status": new_status, "status_msg": "상태 바뀜 확인"},
    )
    assert changed.status_code == 200, changed.text
    synced = demo.worker.sync(headers={"Authorization": f"Bearer {API_TOKEN}"})
    assert synced.status_code == 200, synced.text
    run_id = synced.json()["run_id"]

    client = demo.login("viewer", READONLY_PASSWORD)
    answer = client.get("/ops/learners", params={"category_id": CATEGORY, "user_id": user_id})
    assert answer.status_code == 200
    table = answer.text.split('id="timeline"')[1].split("</table>")[0]
    rows = re.findall(r"<tr><td>(.*?)</tr>", table, re.S)
    assert len(rows) == 2, rows
    assert "신규(NEW)" in rows[0] and "변경(CHANGED)" in rows[1]
    assert f"({learner['status']}) → " in rows[1] and f"({new_status})" in rows[1] and "상태 바뀜 확인" in rows[1]
    assert f'href="/ops/runs/{run_id}"' in rows[1]
    assert f'href="/ops/runs/{demo.first_run_id}"' in rows[0]


def test_the_cohort_chart_shows_what_daily_counts_reads(demo: Demo, pg: psycopg.Connection[Any]) -> None:
    client = demo.login("viewer", READONLY_PASSWORD)
    answer = client.get(f"/ops/cohorts/{CATEGORY}")
    assert answer.status_code == 200
    block = answer.text.split('id="cohort-chart">')[1].split("</script>")[0]
    shown = json.loads(block)
    today = to_kst(dt.datetime.now(dt.UTC)).date()
    first = today - dt.timedelta(days=29)
    assert shown == counts_chart(reports.daily_counts(pg, CATEGORY, first, today))
    assert len(shown["labels"]) == 30 and shown["labels"][-1] == today.isoformat()
    last_day = {s["status"]: s["data"][-1] for s in shown["series"]}
    assert sum(last_day.values()) == _status_records(pg) and last_day["CANCELLED"] >= 1

    narrow = client.get(f"/ops/cohorts/{CATEGORY}", params={"from": today.isoformat(), "to": today.isoformat()})
    assert json.loads(narrow.text.split('id="cohort-chart">')[1].split("</script>")[0])["labels"] == [today.isoformat()]
    reversed_range = client.get(f"/ops/cohorts/{CATEGORY}", params={"from": "2026-12-01", "to": "2026-11-01"})
    assert reversed_range.status_code == 200 and "기간이 잘못되었습니다" in reversed_range.text
    assert client.get(f"/ops/cohorts/{CATEGORY}", params={"from": "어제"}).status_code == 422


def test_both_downloads_parse_and_refuse_without_credentials(demo: Demo, pg: psycopg.Connection[Any]) -> None:
    records = _status_records(pg)
    today = to_kst(dt.datetime.now(dt.UTC)).date().isoformat()
    client = demo.login("viewer", READONLY_PASSWORD)  # a read-only login may download

    as_csv = client.get(f"/ops/cohorts/{CATEGORY}/export.csv")
    assert as_csv.status_code == 200 and as_csv.headers["content-type"].startswith("text/csv")
    assert f'filename="category_{CATEGORY}_{today}.csv"' in as_csv.headers["content-disposition"]
    assert as_csv.content.startswith(b"\xef\xbb\xbf")
    table = list(csv.reader(io.StringIO(as_csv.content.decode("utf-8-sig"))))
    assert tuple(table[0]) == reports.EXPORT_HEADERS and len(table) - 1 == records
    assert any(row[4] == "CANCELLED" and row[3] == "수강취소" for row in table[1:])

    as_xlsx = client.get(f"/ops/cohorts/{CATEGORY}/export.xlsx")
    assert as_xlsx.status_code == 200
    assert f'filename="category_{CATEGORY}_{today}.xlsx"' in as_xlsx.headers["content-disposition"]
    sheet = openpyxl.load_workbook(io.BytesIO(as_xlsx.content), read_only=True).active
    assert sheet is not None
    rows = list(sheet.iter_rows(values_only=True))
    assert tuple(rows[0]) == reports.EXPORT_HEADERS and len(rows) - 1 == records
    assert sorted(str(r[2]) for r in rows[1:]) == sorted(r[2] for r in table[1:])

    for path in (f"/ops/cohorts/{CATEGORY}/export.csv", f"/ops/cohorts/{CATEGORY}/export.xlsx"):
        anonymous = httpx.get(demo.base_url + path)
        assert anonymous.status_code == 303 and anonymous.headers["location"].startswith("/ops/login")
        assert httpx.get(demo.base_url + path, headers={"Authorization": "Bearer wrong"}).status_code == 401
