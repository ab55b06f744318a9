"""Notification consumer against a real Postgres, a JSON webhook receiver (Apprise json://) and an SMTP server."""

from __future__ import annotations

import email
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg.types.json import Jsonb

from enrolment_sync.testing.fake_sheets import RunningFakeSheets
from enrolment_sync.testing.servers import JsonReceiver, free_port
from tests.outbox_fixtures import (
    drain,
    enqueue_sheet,
    fake_sheets,
    insert_run,
    outbox_settings,
    receiver,
)

__all__ = ["fake_sheets", "receiver"]


def failed_alert(pg: psycopg.Connection[Any], run_id: int, *, group: str = "HTTP_5XX", severity: str = "high") -> int:
    detail = {
        "error_group": group,
        "http_status_code": 503,
        "run_id": run_id,
        "error_message": "GET ... -> 503 Service",
    }
    row = pg.execute(
        "insert into alert (alert_type, severity, source_type, source_id, message, detail, run_id) "
        "values ('FAILED', %s, 'run_log', %s, %s, %s, %s) returning id",
        (severity, f"enrolment_sync:{group}", f"동기화 실패 [{group}]", Jsonb(detail), run_id),
    ).fetchone()
    assert row is not None
    return int(row["id"])


def changed_alert(pg: psycopg.Connection[Any], run_id: int, user_id: str) -> None:
    pg.execute(
        "insert into alert (alert_type, severity, source_type, source_id, message, detail, run_id, last_run_id) "
        "values ('CHANGED', 'high', 'enrolment_status', %s, %s, %s, %s, %s)",
        (
            f"303:9001:{user_id}",
            f"수강 상태 변경 [high] {user_id} · 투자심사 실무 (9001): 수강중(IN_PROGRESS) → 수강취소(CANCELLED)",
            Jsonb({"category_id": 303, "course_id": 9001, "user_id": user_id, "run_id": run_id}),
            run_id,
            run_id,
        ),
    )


def test_one_digest_per_run_and_category_however_the_sheet_batches_split(
    pg: psycopg.Connection[Any], database_url: str, fake_sheets: RunningFakeSheets, receiver: JsonReceiver
) -> None:
    run_id = insert_run(pg)
    enqueue_sheet(pg, 30, run_id=run_id)
    enqueue_sheet(pg, 2, run_id=run_id, start=31, change="CHANGED")
    changed_alert(pg, run_id, "u000031")
    settings = outbox_settings(database_url, fake_sheets, notify_urls=receiver.url())

    counters = drain(settings, database_url, batch=7)  # five sheet batches

    assert counters.sheet_batches == 5
    digests = receiver.messages()
    assert len(digests) == 1, digests
    body = digests[0]["message"]
    assert "신규 수강: 30명" in body and "변경: 2명" in body and "u000031" in body
    assert "303" in digests[0]["title"]
    row = pg.execute("select status, delivered_to from notification_outbox where kind = 'CHANGE_DIGEST'").fetchone()
    assert row is not None and row["status"] == "DONE" and len(row["delivered_to"]) == 1


def test_a_digest_waits_while_its_run_is_still_running(
    pg: psycopg.Connection[Any], database_url: str, fake_sheets: RunningFakeSheets, receiver: JsonReceiver
) -> None:
    run_id = insert_run(pg, status="RUNNING")
    enqueue_sheet(pg, 3, run_id=run_id)
    settings = outbox_settings(database_url, fake_sheets, notify_urls=receiver.url(), outbox_poll_interval_seconds=60)

    drain(settings, database_url)
    assert receiver.messages() == []
    note = pg.execute("select status, attempts from notification_outbox").fetchone()
    assert note == {"status": "PENDING", "attempts": 0}  # deferred, not an attempt

    pg.execute("update run_log set status = 'SUCCESS', finished_at = now() where id = %s", (run_id,))
    pg.execute("update notification_outbox set next_attempt_at = now()")
    drain(settings, database_url)
    assert len(receiver.messages()) == 1


def test_a_high_failed_alert_reaches_the_channels_and_a_medium_one_does_not(
    pg: psycopg.Connection[Any], database_url: str, receiver: JsonReceiver
) -> None:
    run_id = insert_run(pg, status="FAILED")
    high = failed_alert(pg, run_id)
    failed_alert(pg, run_id, group="HTTP_409", severity="medium")
    settings = outbox_settings(
        database_url, None, notify_urls=receiver.url("all"), notify_urls_high=receiver.url("high")
    )

    drain(settings, database_url, only="notify")
    drain(settings, database_url, only="notify")  # a second poll queues nothing new

    for path in ("all", "high"):
        got = receiver.messages(path)
        assert len(got) == 1, (path, got)
        assert "HTTP_5XX" in got[0]["title"] and f"알림 id: {high}" in got[0]["message"]
    assert pg.execute("select count(*) as n from notification_outbox").fetchone() == {"n": 1}


def test_a_channel_that_keeps_failing_ends_dead_with_an_alert_and_other_messages_still_flow(
    pg: psycopg.Connection[Any], database_url: str, receiver: JsonReceiver
) -> None:
    broken = f"json://127.0.0.1:{free_port()}/nobody-listens"
    settings = outbox_settings(
        database_url, None, notify_urls=receiver.url("all"), notify_urls_high=broken, outbox_max_attempts=3
    )
    run_id = insert_run(pg, status="FAILED")
    failed_alert(pg, run_id)
    ok_run = insert_run(pg)
    pg.execute(
        "insert into notification_outbox (kind, dedupe_key, run_id, category_id, payload) "
        "values ('CHANGE_DIGEST', %s, %s, 303, '{}')",
        (f"digest:{ok_run}:303", ok_run),
    )

    for _ in range(3):  # one attempt per drain: skip each backoff instead of sleeping
        drain(settings, database_url, only="notify")
        pg.execute("update notification_outbox set next_attempt_at = now() where status = 'PENDING'")

    failed = pg.execute("select * from notification_outbox where kind = 'FAILED_ALERT'").fetchone()
    assert failed is not None and failed["status"] == "DEAD" and failed["attempts"] == 3
    assert "delivery failed on json://" in failed["last_error"]
    assert len(failed["delivered_to"]) == 1  # the working channel got it once, and only once
    alert = pg.execute("select * from alert where alert_type = 'DEAD_LETTER'").fetchone()
    assert alert is not None and alert["detail"]["queue"] == "notification_outbox"
    titles = [m["title"] for m in receiver.messages("all")]
    assert sum("동기화 실패" in t for t in titles) == 1
    assert any("변경 요약" in t for t in titles)  # the digest went through meanwhile
    assert any("dead letter" in t for t in titles)  # and the dead message was announced


@pytest.fixture
def smtp() -> Iterator[tuple[int, list[Any]]]:
    from aiosmtpd.controller import Controller

    received: list[Any] = []

    class Handler:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            received.append(envelope)
            return "250 OK"

    port = free_port()
    controller = Controller(Handler(), hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield port, received
    finally:
        controller.stop()


def test_mailto_delivers_the_korean_message_by_smtp(
    pg: psycopg.Connection[Any], database_url: str, smtp: tuple[int, list[Any]]
) -> None:
    port, received = smtp
    url = f"mailto://127.0.0.1:{port}?from=worker@example.com&to=ops@example.com&mode=insecure"
    settings = outbox_settings(database_url, None, notify_urls_high=url)
    failed_alert(pg, insert_run(pg, status="FAILED"))

    drain(settings, database_url, only="notify")

    assert len(received) == 1
    assert received[0].rcpt_tos == ["ops@example.com"]
    mail = email.message_from_bytes(received[0].original_content)
    text = "".join(
        part.get_payload(decode=True).decode(part.get_content_charset() or "utf-8")
        for part in mail.walk()
        if part.get_content_type() == "text/plain"
    )
    assert "동기화 실패" in text


def test_a_stale_alert_reaches_the_channels(
    pg: psycopg.Connection[Any], database_url: str, receiver: JsonReceiver
) -> None:
    row = pg.execute(
        "insert into alert (alert_type, severity, source_type, source_id, message, detail) "
        "values ('STALE', 'high', 'category', 'enrolment_sync:category:303', '동기화 지연', %s) returning id",
        (Jsonb({"category_id": 303, "last_success_at": None, "stale_after_hours": 26}),),
    ).fetchone()
    settings = outbox_settings(database_url, None, notify_urls=receiver.url("all"))

    drain(settings, database_url, only="notify")

    got = receiver.messages("all")
    assert len(got) == 1
    assert "동기화 지연" in got[0]["title"] and "303" in got[0]["title"]
    assert f"알림 id: {row['id']}" in got[0]["message"]
    queued = pg.execute("select kind, dedupe_key, category_id from notification_outbox").fetchone()
    assert queued == {"kind": "STALE_ALERT", "dedupe_key": f"stale-alert:{row['id']}", "category_id": 303}


def test_a_notification_whose_lease_was_taken_during_the_batch_is_not_delivered_twice(
    pg: psycopg.Connection[Any], database_url: str
) -> None:
    from enrolment_sync.outbox.messages import Message

    run_id = insert_run(pg, status="FAILED")
    for group in ("HTTP_5XX", "TIMEOUT", "UNKNOWN"):
        failed_alert(pg, run_id, group=group)
    sent: list[str] = []

    class SlowChannel:
        """The first delivery takes so long that another consumer takes over the rest of the batch."""

        def send(self, url: str, message: Message) -> bool:
            if not sent:
                pg.execute(
                    "update notification_outbox set locked_by = 'other-consumer'"
                    " where status = 'PROCESSING' and id <> (select min(id) from notification_outbox)"
                )
            sent.append(message.title)
            return True

    settings = outbox_settings(database_url, None, notify_urls="json://127.0.0.1:9/unused")
    drain(settings, database_url, only="notify", channels=SlowChannel())

    assert len(sent) == 1, sent
    rows = pg.execute("select status, locked_by from notification_outbox order by id").fetchall()
    assert rows[0]["status"] == "DONE"
    assert [r["locked_by"] for r in rows[1:]] == ["other-consumer", "other-consumer"]
