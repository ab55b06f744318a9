"""The alert lifecycle (issue 14 items 1-7, issue 10 item 2): real runs against the KVCA simulator, the real
notification consumer, and JSON webhook receivers (Apprise json://) on loopback."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from typer.testing import CliRunner

from enrolment_sync import db
from enrolment_sync.cli import app
from enrolment_sync.clock import KST, ManualClock
from enrolment_sync.config import Settings, get_settings
from enrolment_sync.outbox.policy import SHEET_COLUMNS
from enrolment_sync.staleness import check_staleness
from enrolment_sync.testing.fake_sheets import RunningFakeSheets
from enrolment_sync.testing.kvca import RunningSimulator, SimulatorConfig
from enrolment_sync.testing.servers import JsonReceiver
from tests.conftest import Worker
from tests.outbox_fixtures import drain, enqueue_sheet, fake_sheets, insert_run, outbox_settings, receiver

__all__ = ["fake_sheets", "receiver"]


@pytest.fixture
def cohorts() -> Iterator[Any]:
    """Category 303 and its subcategory 304, one course of 30 learners each."""
    with RunningSimulator(SimulatorConfig(courses=1, users=30, subcategories=1)) as sim:
        yield sim


def settings_for(database_url: str, sim: Any, receiver: JsonReceiver, **overrides: Any) -> Settings:
    values: dict[str, Any] = {"kvca_base_url": sim.base_url, "notify_urls": receiver.url("all")}
    return outbox_settings(database_url, None, **(values | overrides))


def cli(database_url: str, *args: str) -> str:
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(app, list(args), env={"DATABASE_URL": database_url})
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    return result.output


def stale_check(database_url: str, settings: Settings, clock: ManualClock) -> list[dict[str, Any]]:
    async def go() -> list[dict[str, Any]]:
        database = db.Database(db.parse_target(database_url), min_size=1, max_size=1)
        await database.open()
        try:
            return await check_staleness(database, settings, clock)
        finally:
            await database.close()

    return asyncio.run(go())


def titles(receiver: JsonReceiver, path: str = "all") -> list[str]:
    return [m["title"] for m in receiver.messages(path)]


def alert_of(pg: psycopg.Connection[Any], alert_type: str) -> dict[str, Any]:
    row = pg.execute("select * from alert where alert_type = %s order by id desc limit 1", (alert_type,)).fetchone()
    assert row is not None, alert_type
    return row


# -- issue 10.2 ------------------------------------------------------------------------------------------


def test_a_run_that_succeeds_never_pages_its_category_as_stale(
    database_url: str, cohorts: Any, receiver: JsonReceiver, pg: psycopg.Connection[Any]
) -> None:
    """Regression (issue 10.2): the check before the run raised a STALE alert, the run's success resolved it,
    and the consumer paged it all the same."""
    clock = ManualClock(dt.datetime.now(dt.UTC))
    settings = settings_for(database_url, cohorts, receiver, stale_after_hours=26)
    with Worker(settings, database_url, clock=clock) as w:
        assert w.sync().status_code == 200
        clock.advance(hours=27)
        assert w.sync().status_code == 200  # 27 h after the last success, and this run succeeds

    drain(settings, database_url, only="notify")

    assert [t for t in titles(receiver) if "지연" in t] == []
    assert pg.execute("select count(*) as n from alert where alert_type = 'STALE' and not resolved").fetchone() == {
        "n": 0
    }


def test_a_stale_alert_resolved_before_its_notice_went_out_is_not_sent(
    database_url: str, cohorts: Any, receiver: JsonReceiver, pg: psycopg.Connection[Any]
) -> None:
    clock = ManualClock(dt.datetime.now(dt.UTC))
    settings = settings_for(database_url, cohorts, receiver, stale_after_hours=26)
    with Worker(settings, database_url, clock=clock) as w:
        assert w.sync().status_code == 200
        clock.advance(hours=27)
        assert stale_check(database_url, settings, clock)[0]["alert_created"] is True  # the scheduler's check
        assert w.sync().status_code == 200  # resolved by a success before any consumer looked

    drain(settings, database_url, only="notify")

    assert alert_of(pg, "STALE")["resolved"] is True
    assert titles(receiver) == []


def test_a_notice_queued_before_its_alert_was_resolved_is_kept_back(
    database_url: str, cohorts: Any, receiver: JsonReceiver, pg: psycopg.Connection[Any]
) -> None:
    clock = ManualClock(dt.datetime.now(dt.UTC))
    settings = settings_for(database_url, cohorts, receiver, stale_after_hours=26)
    with Worker(settings, database_url, clock=clock) as w:
        assert w.sync().status_code == 200
        clock.advance(hours=27)
        stale_check(database_url, settings, clock)
        queued = pg.execute(db.query("outbox_failed_alerts_enqueue"), {"lookback_s": 10 * 86400}).fetchall()
        assert len(queued) == 1  # queued as a consumer would, then resolved before it was sent
        assert w.sync().status_code == 200

    drain(settings, database_url, only="notify")

    assert titles(receiver) == []
    note = pg.execute("select status, skipped from notification_outbox").fetchone()
    assert note == {"status": "DONE", "skipped": "resolved"}


def test_a_failed_run_still_raises_and_pages_its_stale_category(
    database_url: str, cohorts: Any, receiver: JsonReceiver, pg: psycopg.Connection[Any]
) -> None:
    clock = ManualClock(dt.datetime.now(dt.UTC))
    settings = settings_for(database_url, cohorts, receiver, stale_after_hours=26)
    with Worker(settings, database_url, clock=clock) as w:
        assert w.sync().status_code == 200
        clock.advance(hours=27)
        cohorts.state.add_fault(status=400, count=-1)  # a failure that inhibits nothing
        assert w.sync().status_code == 502

    drain(settings, database_url, only="notify")

    assert alert_of(pg, "STALE")["resolved"] is False
    assert any("동기화 지연" in t for t in titles(receiver)), titles(receiver)


# -- 1 acknowledge, 7 escalation ---------------------------------------------------------------------------


def failing_run(database_url: str, sim: Any, settings: Settings, *, category_id: int = 303) -> None:
    sim.state.add_fault(status=503, count=-1)
    try:
        with Worker(settings, database_url) as w:
            assert w.sync({"category_id": category_id, "trigger_type": "SCHEDULER"}).status_code == 502
    finally:
        sim.state.clear_faults()


def test_a_high_alert_nobody_takes_up_is_escalated_once_and_an_acknowledged_one_is_not(
    database_url: str, cohorts: Any, receiver: JsonReceiver, pg: psycopg.Connection[Any]
) -> None:
    settings = settings_for(
        database_url,
        cohorts,
        receiver,
        notify_urls_escalate=receiver.url("escalate"),
        escalate_after_minutes=30,
        alert_cooldown_minutes=600,
    )
    failing_run(database_url, cohorts, settings)
    drain(settings, database_url, only="notify")
    failed = alert_of(pg, "FAILED")
    assert len(receiver.messages("all")) == 1 and receiver.messages("escalate") == []  # not yet due

    pg.execute("update alert set created_at = created_at - interval '31 minutes' where id = %s", (failed["id"],))
    drain(settings, database_url, only="notify")
    drain(settings, database_url, only="notify")
    escalated = receiver.messages("escalate")
    assert len(escalated) == 1, escalated
    assert "에스컬레이션" in escalated[0]["title"] and f"alerts ack {failed['id']}" in escalated[0]["message"]

    # the same again, acknowledged before it is due: repeats are counted, nothing more is sent
    cli(database_url, "alerts", "resolve", str(failed["id"]))
    failing_run(database_url, cohorts, settings)
    second = alert_of(pg, "FAILED")
    assert second["id"] != failed["id"]
    drain(settings, database_url, only="notify")
    out = cli(database_url, "alerts", "ack", str(second["id"]), "--note", "KVCA 점검 중, 확인함", "--by", "김담당")
    assert f"acknowledged alert {second['id']}" in out
    failing_run(database_url, cohorts, settings)  # a repeat inside the cooldown
    pg.execute("update alert set created_at = created_at - interval '31 minutes' where id = %s", (second["id"],))
    sent_before = len(receiver.messages("all"))
    drain(settings, database_url, only="notify")

    row = pg.execute("select * from alert where id = %s", (second["id"],)).fetchone()
    assert row is not None
    assert (row["occurrences"], row["acknowledged_by"], row["ack_note"]) == (2, "김담당", "KVCA 점검 중, 확인함")
    escalate = titles(receiver, "escalate")  # the first alert's escalation, then its 복구 (it went there too)
    assert ["에스컬레이션" in t for t in escalate] == [True, False] and "복구" in escalate[1]
    assert len(receiver.messages("all")) == sent_before  # no repeat notification of the acknowledged alert


# -- 4 recovery ------------------------------------------------------------------------------------------


def test_a_sent_alert_resolved_by_a_success_gets_one_recovery_notice_on_the_channels_it_reached(
    database_url: str, cohorts: Any, receiver: JsonReceiver, pg: psycopg.Connection[Any]
) -> None:
    settings = settings_for(database_url, cohorts, receiver)
    failing_run(database_url, cohorts, settings)
    drain(settings, database_url, only="notify")
    assert len(receiver.messages("all")) == 1
    failed = alert_of(pg, "FAILED")
    pg.execute("update alert set created_at = created_at - interval '2 hours 5 minutes' where id = %s", (failed["id"],))

    # a channel added since: it never heard of the alert, so it hears nothing of its recovery
    later = settings.model_copy(update={"notify_urls_high": receiver.url("added-later")})
    with Worker(later, database_url) as w:
        assert w.sync().status_code == 200
    drain(later, database_url, only="notify")
    drain(later, database_url, only="notify")

    got = receiver.messages("all")
    assert len(got) == 2, got
    assert "복구" in got[1]["title"] and "지속 시간 2시간 5분" in got[1]["message"]
    assert f"알림 {failed['id']}" in got[1]["message"]
    assert receiver.messages("added-later") == []


def test_resolving_by_hand_sends_the_recovery_notice_and_an_unsent_alert_gets_none(
    database_url: str, cohorts: Any, receiver: JsonReceiver, pg: psycopg.Connection[Any]
) -> None:
    settings = settings_for(database_url, cohorts, receiver)
    failing_run(database_url, cohorts, settings)
    drain(settings, database_url, only="notify")
    failed = alert_of(pg, "FAILED")
    cli(database_url, "alerts", "resolve", str(failed["id"]), "--by", "박운영")
    # a medium alert is never sent, so its resolution is not announced either
    pg.execute(
        "insert into alert (alert_type, severity, source_type, source_id, message, resolved, resolved_at) "
        "values ('FAILED', 'medium', 'run_log', 'enrolment_sync:HTTP_409', 'x', true, now())"
    )
    drain(settings, database_url, only="notify")

    got = receiver.messages("all")
    assert [("복구" in m["title"]) for m in got] == [False, True]
    assert "해결: 박운영" in got[1]["message"]


# -- 2 silences ----------------------------------------------------------------------------------------


def test_a_silenced_alert_is_recorded_and_marked_but_never_sent(
    database_url: str, cohorts: Any, receiver: JsonReceiver, pg: psycopg.Connection[Any]
) -> None:
    clock = ManualClock(dt.datetime.now(dt.UTC))
    settings = settings_for(database_url, cohorts, receiver, stale_after_hours=26)
    with Worker(settings, database_url, clock=clock) as w:
        assert w.sync().status_code == 200
        assert w.sync({"category_id": 304, "trigger_type": "SCHEDULER"}).status_code == 200
    end = (dt.datetime.now(KST) + dt.timedelta(days=2)).strftime("%Y-%m-%d %H:%M")
    out = cli(database_url, "silence", "add", "--category", "303", "--type", "STALE", "--end", end, "--comment", "방학")
    assert "silence 1 added" in out
    listed = cli(database_url, "silence", "list")
    assert "방학" in listed and "STALE" in listed

    clock.advance(hours=27)
    stale_check(database_url, settings, clock)  # both cohorts are stale; 303 is silenced
    drain(settings, database_url, only="notify")

    rows = pg.execute("select detail ->> 'category_id' as c, silence_id from alert where alert_type = 'STALE'")
    assert {r["c"]: r["silence_id"] for r in rows.fetchall()} == {"303": 1, "304": None}
    got = titles(receiver)
    assert len(got) == 1 and "304" in got[0], got

    # a silence added after an alert was raised still keeps its notice back
    cli(database_url, "silence", "remove", "1")
    failing_run(database_url, cohorts, settings)
    cli(database_url, "silence", "add", "--type", "FAILED", "--end", end, "--comment", "점검")
    drain(settings, database_url, only="notify")
    assert len(receiver.messages("all")) == 1
    skipped = pg.execute("select skipped from notification_outbox where kind = 'FAILED_ALERT'").fetchone()
    assert skipped == {"skipped": "silenced (silence 2)"}
    assert "no silence with id 1" in CliRunner().invoke(
        app, ["silence", "remove", "1"], env={"DATABASE_URL": database_url}
    ).output.replace("\n", " ")


# -- 5 inhibition --------------------------------------------------------------------------------------------


def test_stale_alerts_covered_by_an_open_upstream_failure_are_recorded_but_not_sent(
    database_url: str, cohorts: Any, receiver: JsonReceiver, pg: psycopg.Connection[Any]
) -> None:
    clock = ManualClock(dt.datetime.now(dt.UTC))
    settings = settings_for(database_url, cohorts, receiver, stale_after_hours=26)
    with Worker(settings, database_url, clock=clock) as w:
        assert w.sync().status_code == 200
        assert w.sync({"category_id": 304, "trigger_type": "SCHEDULER"}).status_code == 200
        clock.advance(hours=27)
        cohorts.state.add_fault(status=503, count=-1)
        assert w.sync().status_code == 502  # 303 fails (HTTP_5XX): FAILED, and 303 is stale
        cohorts.state.clear_faults()
    stale_check(database_url, settings, clock)  # 304 is stale too, but no failure covers it
    drain(settings, database_url, only="notify")

    got = titles(receiver)
    assert any("HTTP_5XX" in t for t in got), got
    assert [t for t in got if "지연" in t] == [t for t in got if "지연" in t and "304" in t]
    assert len([t for t in got if "지연" in t]) == 1
    failed = alert_of(pg, "FAILED")
    skipped = pg.execute(
        "select n.skipped from notification_outbox n join alert a on a.id = n.alert_id "
        "where a.alert_type = 'STALE' and a.detail ->> 'category_id' = '303'"
    ).fetchone()
    assert skipped == {"skipped": f"inhibited (FAILED alert {failed['id']})"}


# -- 3 quiet hours -------------------------------------------------------------------------------------------


def test_quiet_hours_hold_what_is_below_high_until_the_end_and_send_it_as_one_digest(
    database_url: str, fake_sheets: RunningFakeSheets, receiver: JsonReceiver, pg: psycopg.Connection[Any]
) -> None:
    settings = outbox_settings(database_url, fake_sheets, notify_urls=receiver.url("all"), quiet_hours="22:00-08:00")
    night = dt.datetime.now(KST).replace(hour=23, minute=30, second=0, microsecond=0)
    clock = ManualClock(night.astimezone(dt.UTC))
    for category_id in (303, 304):
        enqueue_sheet(pg, 2, category_id=category_id, run_id=insert_run(pg, category_id), start=category_id * 10)
    failed_run = insert_run(pg, status="FAILED")
    pg.execute(
        "insert into alert (alert_type, severity, source_type, source_id, message, detail, run_id) "
        "values ('FAILED', 'high', 'run_log', 'enrolment_sync:HTTP_5XX', '동기화 실패', %s::jsonb, %s)",
        ('{"error_group": "HTTP_5XX", "http_status_code": 503}', failed_run),
    )

    drain(settings, database_url, clock=clock)

    assert titles(receiver) == ["[enrolment-sync] 동기화 실패 [HTTP_5XX]"]  # high: at once, also at night
    held = pg.execute(
        "select kind, status, quiet_held, extract(epoch from next_attempt_at - now()) as wait_s "
        "from notification_outbox where kind = 'CHANGE_DIGEST' order by id"
    ).fetchall()
    assert [(h["status"], h["quiet_held"]) for h in held] == [("PENDING", True)] * 2
    expected_s = (night.replace(hour=8, minute=0) + dt.timedelta(days=1) - night).total_seconds()
    assert all(abs(float(h["wait_s"]) - expected_s) < 120 for h in held), (held, expected_s)

    clock.advance(hours=8, minutes=35)  # 08:05 KST: the window is over
    pg.execute("update notification_outbox set next_attempt_at = now() where quiet_held")
    drain(settings, database_url, clock=clock)

    got = receiver.messages("all")
    assert len(got) == 2, got
    assert "조용한 시간 알림 모음 2건" in got[1]["title"]
    assert "303 기수" in got[1]["message"] and "304 기수" in got[1]["message"]
    states = pg.execute("select distinct status from notification_outbox").fetchall()
    assert states == [{"status": "DONE"}]


# -- 6 mass-change guard ---------------------------------------------------------------------------------------


def test_a_mass_change_raises_one_high_alert_with_counts_and_the_digest_says_so(
    database_url: str, cohorts: Any, fake_sheets: RunningFakeSheets, receiver: JsonReceiver, pg: psycopg.Connection[Any]
) -> None:
    settings = outbox_settings(
        database_url,
        fake_sheets,
        kvca_base_url=cohorts.base_url,
        notify_urls=receiver.url("all"),
        notify_urls_high=receiver.url("high"),
        mass_change_share=0.2,
        mass_change_min_rows=20,
    )
    course_id = cohorts.state.course_ids(303)[0]
    users = [r["user_id"] for r in cohorts.state.enrolments(course_id) if r["status"] == "IN_PROGRESS"]
    assert len(users) >= 10
    with Worker(settings, database_url) as w:
        assert w.sync().status_code == 200
        drain(settings, database_url)
        cohorts.state.update_enrolment(course_id, users[0], status="CANCELLED")  # 1 of 30: one CHANGED alert
        assert w.sync().status_code == 200
        for user_id in users[1:8]:  # 7 of 30 (23 %): a mass change
            cohorts.state.update_enrolment(course_id, user_id, status="CANCELLED")
        for user_id in users[8:10]:
            cohorts.state.update_enrolment(course_id, user_id, status="COMPLETED")
        third = w.sync().json()
    drain(settings, database_url)

    open_changed = pg.execute(
        "select source_type, severity, detail from alert where alert_type = 'CHANGED' and not resolved order by id"
    ).fetchall()
    assert [(a["source_type"], a["severity"]) for a in open_changed] == [
        ("enrolment_status", "high"),  # the single change of the second run
        ("mass_change", "high"),
    ]
    detail = open_changed[1]["detail"]
    assert (detail["status_rows"], detail["changed"]) == (30, 9)
    assert {(t["from"], t["to"]): t["count"] for t in detail["transitions"]} == {
        ("IN_PROGRESS", "CANCELLED"): 7,
        ("IN_PROGRESS", "COMPLETED"): 2,
    }
    assert third["summary"]["changed_records"] >= 9  # the records were still written ...
    folded = pg.execute("select count(*) as n from alert where detail ? 'folded_into'").fetchone()
    assert folded == {"n": 9}
    sheet = fake_sheets.state.rows("category_303")  # ... and the sheet too
    status_of = {row[SHEET_COLUMNS.index("user_id")]: row[SHEET_COLUMNS.index("status")] for row in sheet}
    assert [status_of[u] for u in users[:10]] == ["CANCELLED"] * 8 + ["COMPLETED"] * 2

    high = receiver.messages("high")
    assert len(high) == 1 and "대량 변경" in high[0]["title"] and "CANCELLED" in high[0]["message"]
    digests = [m for m in receiver.messages("all") if "수강 변경 요약" in m["title"]]
    assert "대량 변경" in digests[-1]["message"] and users[3] not in digests[-1]["message"]
