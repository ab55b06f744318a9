"""Acknowledging alerts and managing silences from the console, over real HTTP against the demo's data."""

from __future__ import annotations

from typing import Any

import psycopg

from tests.console_fixtures import ADMIN_PASSWORD, READONLY_PASSWORD, Demo, csrf_of, demo
from tests.outbox_fixtures import fake_sheets

__all__ = ["demo", "fake_sheets"]  # fixtures


def audit(pg: psycopg.Connection[Any]) -> list[dict[str, Any]]:
    return pg.execute("select actor, role, action, target, outcome, detail from ops_audit order by id").fetchall()


def open_alert(pg: psycopg.Connection[Any]) -> int:
    row = pg.execute("select min(id) as id from alert where not resolved and acknowledged_at is null").fetchone()
    assert row is not None and row["id"] is not None
    return int(row["id"])


def test_an_alert_is_acknowledged_from_its_page_with_the_note_and_an_audit_row(
    demo: Demo, pg: psycopg.Connection[Any]
) -> None:
    alert_id = open_alert(pg)
    client = demo.login("김운영", ADMIN_PASSWORD)
    page = client.get(f"/ops/alerts/{alert_id}").text
    assert 'id="acknowledge"' in page
    own = {"Origin": demo.base_url}
    path = f"/ops/alerts/{alert_id}/acknowledge"
    assert client.post(path, data={"note": "보는 중"}, headers=own).status_code == 403  # no CSRF token
    assert pg.execute("select acknowledged_at from alert where id = %s", (alert_id,)).fetchone() == {
        "acknowledged_at": None
    }

    done = client.post(path, data={"csrf_token": csrf_of(page), "note": " 담당자  확인 중 "}, headers=own)
    assert done.status_code == 303 and "notice=acknowledged" in done.headers["location"]
    row = pg.execute("select acknowledged_by, ack_note, resolved from alert where id = %s", (alert_id,)).fetchone()
    assert row == {"acknowledged_by": "console:김운영", "ack_note": "담당자 확인 중", "resolved": False}
    entry = audit(pg)[-1]
    assert (entry["actor"], entry["action"], entry["target"], entry["outcome"]) == (
        "김운영",
        "acknowledge_alert",
        f"alert:{alert_id}",
        "OK",
    )
    shown = client.get(f"/ops/alerts/{alert_id}").text
    assert "담당자 확인 중" in shown and "console:김운영" in shown and 'id="acknowledge"' not in shown
    assert "console:김운영" in client.get("/ops/alerts").text  # the list shows who acknowledged it
    again = client.post(path, data={"csrf_token": csrf_of(shown)}, headers=own)
    assert "notice=not_acknowledgeable" in again.headers["location"]


def test_the_read_only_login_cannot_acknowledge_or_silence_and_is_recorded(
    demo: Demo, pg: psycopg.Connection[Any]
) -> None:
    alert_id = open_alert(pg)
    client = demo.login("관찰자", READONLY_PASSWORD)
    page = client.get("/ops/silences")
    assert page.status_code == 200 and 'id="add-silence"' not in page.text
    token = csrf_of(page.text)
    own = {"Origin": demo.base_url}
    ack = client.post(f"/ops/alerts/{alert_id}/acknowledge", data={"csrf_token": token}, headers=own)
    form = {"csrf_token": token, "alert_type": "FAILED", "ends_at": "2099-01-01T09:00", "comment": "점검"}
    assert ack.status_code == 403 and client.post("/ops/silences", data=form, headers=own).status_code == 403
    assert pg.execute("select acknowledged_at from alert where id = %s", (alert_id,)).fetchone() == {
        "acknowledged_at": None
    }
    assert pg.execute("select count(*) as n from alert_silence").fetchone() == {"n": 0}
    denied = [(r["actor"], r["action"], r["outcome"]) for r in audit(pg) if r["action"] != "login"]
    assert denied == [("관찰자", "acknowledge_alert", "DENIED"), ("관찰자", "add_silence", "DENIED")]


def test_a_silence_added_from_the_console_marks_a_new_matching_alert_and_is_removed(
    demo: Demo, simulator: Any, pg: psycopg.Connection[Any]
) -> None:
    client = demo.login("김운영", ADMIN_PASSWORD)
    own = {"Origin": demo.base_url}
    token = csrf_of(client.get("/ops/silences").text)
    form = {"csrf_token": token, "alert_type": "FAILED", "ends_at": "2099-01-01T09:00", "comment": "점검"}
    added = client.post("/ops/silences", data=form, headers=own)
    assert added.status_code == 303 and "notice=silence_added" in added.headers["location"]
    silence = pg.execute("select id, alert_type, ends_at, created_by from alert_silence").fetchone()
    assert silence is not None and silence["created_by"] == "console:김운영" and silence["alert_type"] == "FAILED"
    assert silence["ends_at"].isoformat() == "2099-01-01T00:00:00+00:00"  # typed in KST, stored in UTC
    listed = client.get("/ops/silences").text
    assert "점검" in listed and "2099-01-01 09:00" in listed and "적용 중" in listed

    simulator.state.add_fault(503, -1)
    failed = demo.worker.sync(headers=demo.bearer())
    simulator.state.clear_faults()
    assert failed.status_code == 502, failed.text
    raised = pg.execute(
        "select id, silence_id from alert where alert_type = 'FAILED' and run_id = %s", (failed.json()["run_id"],)
    ).fetchone()
    assert raised is not None and raised["silence_id"] == silence["id"]
    assert f"무음 #{silence['id']}" in client.get(f"/ops/alerts/{raised['id']}").text

    removed = client.post(f"/ops/silences/{silence['id']}/remove", data={"csrf_token": token}, headers=own)
    assert removed.status_code == 303 and "notice=silence_removed" in removed.headers["location"]
    row = pg.execute("select removed_by from alert_silence where id = %s", (silence["id"],)).fetchone()
    assert row == {"removed_by": "console:김운영"}
    assert [(r["action"], r["outcome"]) for r in audit(pg) if r["action"] != "login"] == [
        ("add_silence", "OK"),
        ("remove_silence", "OK"),
    ]


def test_a_bad_silence_field_answers_the_form_naming_it_and_stores_nothing(
    demo: Demo, pg: psycopg.Connection[Any]
) -> None:
    client = demo.login("김운영", ADMIN_PASSWORD)
    own = {"Origin": demo.base_url}
    token = csrf_of(client.get("/ops/silences").text)
    good = {"csrf_token": token, "alert_type": "FAILED", "ends_at": "2099-01-01T09:00", "comment": "점검"}
    for change, field in [
        ({"ends_at": "내일"}, "끝(ends_at)"),
        ({"ends_at": ""}, "끝(ends_at)"),
        ({"starts_at": "2099-02-01T09:00"}, "끝(ends_at)"),  # the end before the start
        ({"comment": "  "}, "사유(comment)"),
        ({"category_id": "-3"}, "기수(category_id)"),
        ({"alert_type": "", "severity": ""}, "기수(category_id)"),  # it would silence everything
        ({"severity": "urgent"}, "등급(severity)"),
    ]:
        answer = client.post("/ops/silences", data={**good, **change}, headers=own)
        assert answer.status_code == 422 and field in answer.text and 'id="silence-error"' in answer.text, change
    assert pg.execute("select count(*) as n from alert_silence").fetchone() == {"n": 0}
