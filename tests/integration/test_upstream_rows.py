"""One bad learner does not block the others; an empty course list does not mark a cohort missing (issue 10,
items 11 and 12): through the simulator over loopback HTTP."""

from __future__ import annotations

from typing import Any

import psycopg

from tests.conftest import Worker

LONG_ID = "u" * 10_000


def test_unstorable_rows_are_skipped_reported_and_alerted_the_rest_is_stored(
    worker: Worker, simulator: Any, pg: psycopg.Connection[Any]
) -> None:
    assert worker.sync().json()["ok"] is True
    before = pg.execute(
        "select source_type, payload, content_hash from source_record where user_id in ('u000001', 'u000002')"
        " order by source_type, user_id"
    ).fetchall()
    simulator.state.add_enrolment(9001, LONG_ID, "IN_PROGRESS")
    simulator.state.add_enrolment(9001, "nul\x00id", "IN_PROGRESS")
    simulator.state.add_enrolment(9001, "u999999", "ENROLLED")  # a good newcomer beside the bad ones
    simulator.state.update_enrolment(9001, "u000001", status_msg="수강\x00중")
    simulator.state.update_detail(9001, "u000002", last_login_at="2026-11-20\x00")

    body = worker.sync().json()

    assert body["ok"] is True, body
    assert body["report"]["rejected_rows"] == 4, body
    assert set(body["summary"]) == {
        "categories_processed",
        "courses_processed",
        "status_rows_processed",
        "details_processed",
        "source_records_upserted",
        "new_records",
        "changed_records",
        "created_alerts",
    }
    assert body["summary"]["new_records"] == 2  # u999999's status row and detail
    summary = pg.execute("select summary from run_log where id = %s", (body["run_id"],)).fetchone()["summary"]
    assert summary["rejected_rows"] == 4
    assert {(r["user_id"][:12], r["field"]) for r in summary["rejected"]} == {
        ("uuuuuuuuuuuu", "user_id"),
        ("nul\\x00id", "user_id"),
        ("u000001", "status_msg"),
        ("u000002", "last_login_at"),
    }
    alerts = pg.execute(
        "select severity, source_type, message, detail from alert where alert_type = 'UPSTREAM_DATA'"
    ).fetchall()
    assert len(alerts) == 4 and {a["severity"] for a in alerts} == {"medium"}
    for alert in alerts:
        assert "과정 9001" in alert["message"] and alert["detail"]["field"] in alert["message"]
    assert any("u000001" in a["message"] and "status_msg" in a["message"] for a in alerts)
    # what was stored of the two learners stays as it was, and is not marked missing
    after = pg.execute(
        "select source_type, payload, content_hash from source_record where user_id in ('u000001', 'u000002')"
        " order by source_type, user_id"
    ).fetchall()
    assert after == before
    assert pg.execute("select count(*) as n from source_record where missing_since is not null").fetchone()["n"] == 0
    assert pg.execute("select count(*) as n from source_record where user_id = 'u999999'").fetchone()["n"] == 2


def test_an_empty_course_list_leaves_the_category_alone_and_alerts(
    worker: Worker, simulator: Any, pg: psycopg.Connection[Any]
) -> None:
    assert worker.sync().json()["ok"] is True
    simulator.state.unlist_course(9001)  # the category's only course: KVCA now lists none

    body = worker.sync().json()

    assert body["ok"] is True, body
    assert pg.execute("select count(*) as n from source_record where missing_since is not null").fetchone()["n"] == 0
    assert body["report"]["vanished_records"] == 0
    assert body["report"]["empty_course_lists"] == [{"category_id": 303, "stored_records": 178}]
    alert = pg.execute(
        "select severity, source_type, source_id, message from alert where alert_type = 'UPSTREAM_DATA'"
    ).fetchone()
    assert alert is not None and alert["severity"] == "high" and alert["source_id"] == "303"
    assert "178건" in alert["message"]
