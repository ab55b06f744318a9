"""The console over real HTTP: access, pages over the demo's data, actions with CSRF, origin and audit."""

from __future__ import annotations

from typing import Any

import httpx
import psycopg
import pytest

from tests.conftest import Worker
from tests.console_fixtures import (
    ADMIN_PASSWORD,
    API_TOKEN,
    READONLY_PASSWORD,
    Demo,
    console_settings,
    csrf_of,
    demo,
)
from tests.outbox_fixtures import fake_sheets
from tests.waiting import wait_for

__all__ = ["demo", "fake_sheets"]  # fixtures

PAGES = ["/ops", "/ops/runs", "/ops/alerts", "/ops/learners", "/ops/queues", "/ops/schedules", "/ops/audit"]


def audit(pg: psycopg.Connection[Any]) -> list[dict[str, Any]]:
    return pg.execute("select actor, role, action, target, outcome, detail from ops_audit order by id").fetchall()


def test_every_page_refuses_a_request_without_credentials(demo: Demo) -> None:
    for path in [*PAGES, f"/ops/runs/{demo.first_run_id}", "/ops/alerts/1"]:
        answer = httpx.get(demo.base_url + path)
        assert answer.status_code == 303 and answer.headers["location"].startswith("/ops/login?next="), path
        assert httpx.get(demo.base_url + path, headers={"Accept": "application/json"}).status_code == 401
        assert httpx.get(demo.base_url + path, headers={"Authorization": "Bearer wrong"}).status_code == 401
    forged = httpx.Client(base_url=demo.base_url, cookies={"ops_session": "eyJ1IjoieCIsInIiOiJhZG1pbiJ9.forged"})
    assert forged.get("/ops").status_code == 303


def test_a_login_sets_a_signed_httponly_samesite_cookie_and_a_wrong_password_is_refused(
    demo: Demo, pg: psycopg.Connection[Any]
) -> None:
    answer = httpx.post(
        demo.base_url + "/ops/login",
        data={"username": "김운영", "password": ADMIN_PASSWORD},
        headers={"Origin": demo.base_url},
    )
    cookie = answer.headers["set-cookie"]
    assert answer.status_code == 303 and "httponly" in cookie.lower() and "samesite=lax" in cookie.lower()
    assert "path=/ops" in cookie.lower() and ADMIN_PASSWORD not in cookie
    wrong = httpx.post(
        demo.base_url + "/ops/login",
        data={"username": "김운영", "password": "not-the-password"},
        headers={"Origin": demo.base_url},
    )
    assert wrong.status_code == 401 and "set-cookie" not in wrong.headers
    elsewhere = httpx.post(
        demo.base_url + "/ops/login",
        data={"username": "x", "password": ADMIN_PASSWORD},
        headers={"Origin": "http://evil.example"},
    )
    assert elsewhere.status_code == 403 and "set-cookie" not in elsewhere.headers
    logins = [(r["actor"], r["outcome"]) for r in audit(pg) if r["action"] == "login"]
    assert logins == [("김운영", "OK"), ("김운영", "DENIED")]
    text = str(pg.execute("select array_agg(detail::text) as d from ops_audit").fetchone())
    assert ADMIN_PASSWORD not in text and "not-the-password" not in text


def test_every_page_shows_the_demo_data_to_a_logged_in_viewer(demo: Demo) -> None:
    client = demo.login("viewer", READONLY_PASSWORD)
    overview = client.get("/ops")
    assert overview.status_code == 200 and f'href="/ops/runs/{demo.changed_run_id}"' in overview.text
    assert "미해결 high 알림" in overview.text  # the dead-letter alert's banner (3-5)
    cohort_line = overview.text.split('id="cohorts"')[1].split("</tr>", 2)[1]
    assert '<span class="sev sev-high">1</span>' in cohort_line  # the CHANGED alert (to CANCELLED) of 303
    assert "보류 메시지 등): 1건" in overview.text  # the dead-letter alert belongs to no cohort
    assert overview.headers["content-security-policy"].startswith("default-src 'self'")
    for path in PAGES:
        assert client.get(path).status_code == 200, path
    run = client.get(f"/ops/runs/{demo.changed_run_id}").text
    assert "수강 상태 변경" in run and 'id="run-chart"' in run  # the CHANGED alert it raised, and the chart
    learner = client.get("/ops/learners", params={"category_id": 303, "user_id": demo.changed_user_id}).text
    assert "수강취소" in learner and "CANCELLED" not in learner.split('id="learner"')[0]
    search = client.get("/ops/learners", params={"category_id": 303, "q": demo.changed_user_id[:-1]}).text
    assert demo.changed_user_id in search
    queues = client.get("/ops/queues").text
    assert "503" in queues  # the dead messages' last error


def test_an_action_without_csrf_token_or_from_another_origin_is_refused_and_changes_nothing(
    demo: Demo, pg: psycopg.Connection[Any]
) -> None:
    alert = pg.execute("select id from alert where alert_type = 'CHANGED'").fetchone()
    assert alert is not None
    client = demo.login("김운영", ADMIN_PASSWORD)
    token = csrf_of(client.get(f"/ops/alerts/{alert['id']}").text)
    path = f"/ops/alerts/{alert['id']}/resolve"
    own = {"Origin": demo.base_url}
    assert client.post(path, data={}, headers=own).status_code == 403
    assert client.post(path, data={"csrf_token": "x" + token}, headers=own).status_code == 403
    assert client.post(path, data={"csrf_token": token}, headers={"Origin": "http://evil.example"}).status_code == 403
    assert client.post(path, data={"csrf_token": token}).status_code == 403  # neither Origin nor Referer
    referer_elsewhere = {"Referer": "http://evil.example/page"}
    assert client.post(path, data={"csrf_token": token}, headers=referer_elsewhere).status_code == 403
    other = demo.login("다른사람", ADMIN_PASSWORD)  # another session's token is not this one's
    assert other.post(path, data={"csrf_token": token}, headers=own).status_code == 403
    assert pg.execute("select resolved from alert where id = %s", (alert["id"],)).fetchone() == {"resolved": False}
    assert [r for r in audit(pg) if r["action"] != "login"] == []

    done = client.post(path, data={"csrf_token": token}, headers=own)
    assert done.status_code == 303 and "notice=resolved" in done.headers["location"]
    row = pg.execute("select resolved, resolved_by from alert where id = %s", (alert["id"],)).fetchone()
    assert row == {"resolved": True, "resolved_by": "console:김운영"}
    entry = audit(pg)[-1]
    assert (entry["actor"], entry["action"], entry["target"], entry["outcome"]) == (
        "김운영",
        "resolve_alert",
        f"alert:{alert['id']}",
        "OK",
    )


def test_the_read_only_login_sees_everything_and_every_action_is_refused_and_recorded(
    demo: Demo, pg: psycopg.Connection[Any]
) -> None:
    client = demo.login("관찰자", READONLY_PASSWORD)
    page = client.get("/ops")
    assert page.status_code == 200 and "지금 실행" not in page.text
    token = csrf_of(page.text)  # the logout form's
    own = {"Origin": demo.base_url}
    alert_id = pg.execute("select min(id) as id from alert where not resolved").fetchone()["id"]  # type: ignore[index]
    dead_id = pg.execute("select min(id) as id from sheet_outbox where status = 'DEAD'").fetchone()["id"]  # type: ignore[index]
    runs_before = pg.execute("select count(*) as n from run_log").fetchone()
    for path, data in [
        (f"/ops/alerts/{alert_id}/resolve", {}),
        ("/ops/queues/sheet/requeue", {"message_id": dead_id}),
        ("/ops/cohorts/303/run", {"trigger_type": "MANUAL"}),
    ]:
        assert client.post(path, data={"csrf_token": token, **data}, headers=own).status_code == 403, path
    assert pg.execute("select resolved from alert where id = %s", (alert_id,)).fetchone() == {"resolved": False}
    assert pg.execute("select status from sheet_outbox where id = %s", (dead_id,)).fetchone() == {"status": "DEAD"}
    assert pg.execute("select count(*) as n from run_log").fetchone() == runs_before
    denied = [(r["actor"], r["role"], r["action"], r["outcome"]) for r in audit(pg) if r["action"] != "login"]
    assert denied == [
        ("관찰자", "readonly", "resolve_alert", "DENIED"),
        ("관찰자", "readonly", "requeue_dead", "DENIED"),
        ("관찰자", "readonly", "run_now", "DENIED"),
    ]


def test_the_api_token_requeues_a_dead_message_and_a_superseded_one_is_closed_instead(
    demo: Demo, pg: psycopg.Connection[Any]
) -> None:
    dead = pg.execute("select id, source_id from sheet_outbox where status = 'DEAD' order by id").fetchall()
    assert len(dead) >= 2
    stale, fresh = dead[0], dead[1]
    newer = pg.execute(
        "insert into sheet_outbox (run_id, category_id, source_id, payload, status)"
        " select run_id, category_id, source_id, payload, 'DONE' from sheet_outbox where id = %s returning id",
        (stale["id"],),
    ).fetchone()
    assert newer is not None
    for message in (stale, fresh):
        answer = httpx.post(
            f"{demo.base_url}/ops/queues/sheet/requeue", data={"message_id": message["id"]}, headers=demo.bearer()
        )
        assert answer.status_code == 200 and answer.json()["outcome"] == "OK", answer.text
    rows = {r["id"]: r for r in pg.execute("select id, status, attempts from sheet_outbox").fetchall()}
    assert rows[fresh["id"]]["status"] == "PENDING" and rows[fresh["id"]]["attempts"] == 0
    assert rows[stale["id"]]["status"] == "DONE"  # an older row would overwrite the newer one on the sheet
    again = httpx.post(
        f"{demo.base_url}/ops/queues/sheet/requeue", data={"message_id": fresh["id"]}, headers=demo.bearer()
    )
    assert again.json()["outcome"] == "NOOP"
    assert [r["actor"] for r in audit(pg) if r["action"] == "requeue_dead"] == ["api-token"] * 3


def test_run_now_queues_a_request_that_the_worker_runs(demo: Demo, pg: psycopg.Connection[Any]) -> None:
    answer = httpx.post(f"{demo.base_url}/ops/cohorts/303/run", data={"trigger_type": "RETRY"}, headers=demo.bearer())
    assert answer.status_code == 200 and answer.json()["notice"] == "run_queued", answer.text
    request_id = answer.json()["detail"]["request_id"]
    run = wait_for(
        lambda: pg.execute(
            "select status, trigger_type from run_log where request_id = %s and status <> 'RUNNING'", (request_id,)
        ).fetchone(),
        what="the console's request to be run",
    )
    assert run == {"status": "SUCCESS", "trigger_type": "RETRY"}
    queued = pg.execute("select requested_by from sync_request where id = %s", (request_id,)).fetchone()
    assert queued == {"requested_by": "console:api-token"}
    foreign = httpx.post(
        f"{demo.base_url}/ops/cohorts/303/run",
        headers={**demo.bearer(), "Origin": "http://evil.example"},
    )
    assert foreign.status_code == 403


def test_run_now_on_an_api_only_process_leaves_the_request_to_another_worker(
    database_url: str, simulator: Any, pg: psycopg.Connection[Any]
) -> None:
    with Worker(console_settings(database_url, simulator.base_url), database_url) as api_only:
        answer = httpx.post(
            f"{api_only.base_url}/ops/cohorts/303/run",
            headers={"Authorization": f"Bearer {API_TOKEN}"},
        )
    assert answer.json()["notice"] == "run_queued_elsewhere"
    queued = pg.execute("select category_id, trigger_type, status from sync_request").fetchall()
    assert queued == [{"category_id": 303, "trigger_type": "MANUAL", "status": "PENDING"}]
    assert pg.execute("select count(*) as n from run_log").fetchone() == {"n": 0}


@pytest.mark.parametrize("token", [None, API_TOKEN])
def test_without_a_console_password_people_cannot_log_in(database_url: str, simulator: Any, token: str | None) -> None:
    settings = console_settings(
        database_url, simulator.base_url, ops_admin_password=None, ops_readonly_password=None, worker_api_token=token
    )
    with Worker(settings, database_url) as worker:
        page = httpx.get(worker.base_url + "/ops/login")
        tried = httpx.post(
            worker.base_url + "/ops/login",
            data={"username": "x", "password": "anything-at-all"},
            headers={"Origin": worker.base_url},
        )
        assert tried.status_code == 503 and "set-cookie" not in tried.headers
        if token is None:
            assert page.status_code == 503 and "OPS_ADMIN_PASSWORD" in page.text
            assert httpx.get(worker.base_url + "/ops").status_code == 503
        else:
            assert "사람 로그인이 꺼져 있습니다" in page.text
            answer = httpx.get(worker.base_url + "/ops", headers={"Authorization": f"Bearer {API_TOKEN}"})
            assert answer.status_code == 200


def test_schedules_are_listed_paused_and_resumed_from_the_console(demo: Demo, pg: psycopg.Connection[Any]) -> None:
    schedule = pg.execute(
        "insert into sync_schedule (category_id, every_seconds) values (303, 3600) returning id"
    ).fetchone()
    assert schedule is not None
    client = demo.login("김운영", ADMIN_PASSWORD)
    page = client.get("/ops/schedules")
    assert page.status_code == 200 and f"#{schedule['id']}" in page.text and "사용 중" in page.text
    overview = client.get("/ops").text
    cohort_line = overview.split('id="cohorts"')[1].split("</tr>", 2)[1]
    assert "2026" in cohort_line.split("</td>")[8]  # the next slot column is filled from the schedule
    own = {"Origin": demo.base_url}
    token = csrf_of(page.text)
    paused = client.post(f"/ops/schedules/{schedule['id']}/pause", data={"csrf_token": token}, headers=own)
    assert paused.status_code == 303 and "notice=pause_schedule" in paused.headers["location"]
    row = pg.execute("select enabled, paused_reason from sync_schedule where id = %s", (schedule["id"],)).fetchone()
    assert row == {"enabled": False, "paused_reason": "paused from the console by 김운영"}
    assert "일시 중지" in client.get("/ops/schedules").text
    again = client.post(f"/ops/schedules/{schedule['id']}/pause", data={"csrf_token": token}, headers=own)
    assert "notice=schedule_unchanged" in again.headers["location"]
    resumed = client.post(f"/ops/schedules/{schedule['id']}/resume", data={"csrf_token": token}, headers=own)
    assert "notice=resume_schedule" in resumed.headers["location"]
    assert pg.execute("select enabled from sync_schedule where id = %s", (schedule["id"],)).fetchone() == {
        "enabled": True
    }
    outcomes = [(r["action"], r["outcome"]) for r in audit(pg) if r["target"] == "schedules"]
    assert outcomes == [("pause_schedule", "OK"), ("pause_schedule", "NOOP"), ("resume_schedule", "OK")]


def test_a_run_page_shows_its_retry_chain(demo: Demo, pg: psycopg.Connection[Any]) -> None:
    ids = []
    retry_of = None
    for trigger in ("SCHEDULER", "RETRY", "RETRY"):
        row = pg.execute(
            "insert into run_log (trigger_type, status, category_id, finished_at, error_message, error_group,"
            " retry_of_run_id) values (%s, 'FAILED', 303, now(), 'upstream HTTP 503 Service Unavailable', "
            "'HTTP_5XX', %s) returning id",
            (trigger, retry_of),
        ).fetchone()
        assert row is not None
        ids.append(row["id"])
        retry_of = row["id"]
    client = demo.login("viewer", READONLY_PASSWORD)
    page = client.get(f"/ops/runs/{ids[1]}").text
    chain = page.split('id="retry-chain"')[1].split("</table>")[0]
    assert [f'href="/ops/runs/{i}"' in chain for i in ids] == [True, True, True]
    assert "2번째 재시도" in chain
    alone = client.get(f"/ops/runs/{demo.first_run_id}").text
    assert 'id="retry-chain"' not in alone
