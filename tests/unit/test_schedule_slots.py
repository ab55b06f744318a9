"""Slots of cron and interval schedules, durations, and the unattended worker's decisions (pure)."""

from __future__ import annotations

import datetime as dt

import pytest

from enrolment_sync.errors import ConfigError
from enrolment_sync.failures import ErrorGroup
from enrolment_sync.scheduler.policy import (
    consecutive_failures,
    decide_retry,
    request_state,
    should_pause,
    stale_slot,
)
from enrolment_sync.scheduler.slots import (
    ScheduleSpec,
    check_cron,
    due_slot,
    format_duration,
    kst,
    latest_slot,
    next_slot,
    parse_duration_s,
    parse_durations_s,
)

UTC = dt.UTC


def utc(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=UTC)


CREATED = utc("2026-01-01T00:00:00")


@pytest.mark.parametrize(
    ("cron", "tz", "now", "latest", "following"),
    [
        # 00:00 KST is 15:00 UTC the day before; Korea has no daylight saving time.
        ("0 0 * * *", "Asia/Seoul", "2026-06-10T14:59:59", "2026-06-09T15:00:00", "2026-06-10T15:00:00"),
        ("0 0 * * *", "Asia/Seoul", "2026-06-10T15:00:00", "2026-06-10T15:00:00", "2026-06-11T15:00:00"),
        ("30 9 * * 1-5", "Asia/Seoul", "2026-06-13T12:00:00", "2026-06-12T00:30:00", "2026-06-15T00:30:00"),
        ("*/15 * * * *", "UTC", "2026-06-10T10:07:00", "2026-06-10T10:00:00", "2026-06-10T10:15:00"),
        # New York: 09:00 local is 14:00 UTC in winter (EST) and 13:00 UTC in summer (EDT).
        ("0 9 * * *", "America/New_York", "2026-03-07T20:00:00", "2026-03-07T14:00:00", "2026-03-08T13:00:00"),
        ("0 9 * * *", "America/New_York", "2026-11-01T12:00:00", "2026-10-31T13:00:00", "2026-11-01T14:00:00"),
        # 02:30 does not exist on the spring-forward day: croniter fires at 03:00 EDT (07:00 UTC) instead.
        ("30 2 * * *", "America/New_York", "2026-03-08T06:00:00", "2026-03-07T07:30:00", "2026-03-08T07:00:00"),
    ],
)
def test_cron_slots_in_a_time_zone(cron: str, tz: str, now: str, latest: str, following: str) -> None:
    spec = ScheduleSpec(anchor=CREATED, cron=cron, timezone=tz)
    assert latest_slot(spec, utc(now)) == utc(latest)
    assert next_slot(spec, utc(now)) == utc(following)


@pytest.mark.parametrize(
    ("every_s", "now", "latest", "following"),
    [
        (30, "2026-01-01T00:00:29", None, "2026-01-01T00:00:30"),
        (30, "2026-01-01T00:00:30", "2026-01-01T00:00:30", "2026-01-01T00:01:00"),
        (30, "2026-01-01T00:01:59", "2026-01-01T00:01:30", "2026-01-01T00:02:00"),
        (6 * 3600, "2026-01-02T01:00:00", "2026-01-02T00:00:00", "2026-01-02T06:00:00"),
        (30, "2025-12-31T23:00:00", None, "2026-01-01T00:00:30"),  # before the schedule existed
    ],
)
def test_interval_slots_count_from_creation(every_s: float, now: str, latest: str | None, following: str) -> None:
    spec = ScheduleSpec(anchor=CREATED, every_s=every_s)
    assert latest_slot(spec, utc(now)) == (utc(latest) if latest else None)
    assert next_slot(spec, utc(now)) == utc(following)


def test_cron_slots_before_creation_do_not_count() -> None:
    spec = ScheduleSpec(anchor=utc("2026-06-10T16:00:00"), cron="0 0 * * *", timezone="Asia/Seoul")
    assert latest_slot(spec, utc("2026-06-11T14:00:00")) is None
    assert latest_slot(spec, utc("2026-06-11T15:00:00")) == utc("2026-06-11T15:00:00")


@pytest.mark.parametrize(
    ("now", "last_fired", "due"),
    [
        ("2026-01-01T00:00:45", None, "2026-01-01T00:00:30"),
        ("2026-01-01T00:00:45", "2026-01-01T00:00:30", None),  # fired already
        ("2026-01-01T00:05:10", "2026-01-01T00:00:30", "2026-01-01T00:05:00"),  # catch-up: the latest only
    ],
)
def test_due_slot_fires_the_latest_missed_slot_once(now: str, last_fired: str | None, due: str | None) -> None:
    spec = ScheduleSpec(anchor=CREATED, every_s=30)
    got = due_slot(spec, utc(now), utc(last_fired) if last_fired else None)
    assert got == (utc(due) if due else None)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30s", 30), ("5m", 300), ("1h", 3600), ("1h30m", 5400), ("2d", 172800), ("250ms", 0.25), (" 45M ", 2700)],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration_s(text) == seconds


@pytest.mark.parametrize("text", ["", "5", "5 minutes", "m5", "0s", "-5m", "1h-5m"])
def test_bad_durations_are_named(text: str) -> None:
    with pytest.raises(ConfigError, match="duration"):
        parse_duration_s(text)


def test_duration_lists_and_display() -> None:
    assert parse_durations_s("5m,15m,45m") == (300, 900, 2700)
    assert parse_durations_s("") == ()
    assert [format_duration(s) for s in (0.25, 30, 90, 5400, 86400)] == ["250ms", "30s", "1m30s", "1h30m", "1d"]


@pytest.mark.parametrize("expr", ["* * * *", "61 * * * *", "0 0 * * * *", "every day", "0 25 * * *"])
def test_bad_cron_is_named(expr: str) -> None:
    with pytest.raises(ConfigError, match="cron"):
        check_cron(expr)


def test_a_schedule_has_exactly_one_rule() -> None:
    with pytest.raises(ConfigError):
        ScheduleSpec(anchor=CREATED)
    with pytest.raises(ConfigError):
        ScheduleSpec(anchor=CREATED, cron="0 0 * * *", every_s=30)


def test_kst_display() -> None:
    assert kst(utc("2026-06-10T15:00:00")) == "2026-06-11 00:00:00 KST"
    assert kst(None) == "-"


G = ErrorGroup
DELAYS = (300.0, 900.0, 2700.0)


@pytest.mark.parametrize(
    ("group", "done", "delay", "exhausted"),
    [
        (G.HTTP_5XX, 0, 300.0, False),
        (G.TIMEOUT, 1, 900.0, False),
        (G.HTTP_409, 2, 2700.0, False),
        (G.HTTP_5XX, 3, None, True),
        (G.HTTP_4XX, 0, None, False),
        (G.UNKNOWN, 0, None, False),
        (G.LOCK_CONFLICT, 0, None, False),
        (None, 0, None, False),
    ],
)
def test_retry_decisions(group: ErrorGroup | None, done: int, delay: float | None, exhausted: bool) -> None:
    decision = decide_retry(group, done, DELAYS)
    assert (decision.delay_s, decision.exhausted) == (delay, exhausted)


def test_no_delays_means_no_retry_and_no_exhaustion() -> None:
    assert decide_retry(G.HTTP_5XX, 0, ()) == decide_retry(G.HTTP_4XX, 0, DELAYS)


@pytest.mark.parametrize(
    ("outcomes", "count"),
    [
        ([], 0),
        ([("SUCCESS", None), ("FAILED", "HTTP_5XX")], 0),
        ([("FAILED", "HTTP_5XX"), ("FAILED", "HTTP_4XX"), ("SUCCESS", None), ("FAILED", "TIMEOUT")], 2),
        ([("FAILED", "LOCK_CONFLICT"), ("FAILED", "HTTP_5XX"), ("RUNNING", None)], 1),
    ],
)
def test_consecutive_failures(outcomes: list[tuple[str, str | None]], count: int) -> None:
    assert consecutive_failures(outcomes) == count


def test_pause_rule() -> None:
    assert [should_pause(n, 3) for n in (0, 2, 3, 4)] == [False, False, True, True]
    assert should_pause(100, 0) is False


@pytest.mark.parametrize(
    ("status", "ok", "state"),
    [
        ("PENDING", None, "QUEUED"),
        ("PROCESSING", None, "RUNNING"),
        ("DONE", True, "SUCCESS"),
        ("DONE", False, "FAILED"),
        ("DEAD", None, "FAILED"),
    ],
)
def test_request_states(status: str, ok: bool | None, state: str) -> None:
    assert request_state(status, ok) == state


@pytest.mark.parametrize(
    ("now", "last_success", "alerted", "stale"),
    [
        ("2026-01-01T01:20:00", None, None, None),  # the 01:00 slot is inside its 30 min grace
        ("2026-01-01T01:31:00", None, None, "2026-01-01T01:00:00"),
        ("2026-01-01T01:31:00", "2026-01-01T01:02:00", None, None),  # it succeeded
        ("2026-01-01T01:31:00", "2026-01-01T00:02:00", None, "2026-01-01T01:00:00"),  # only an older success
        ("2026-01-01T01:31:00", None, "2026-01-01T01:00:00", None),  # alerted once already
        ("2026-01-01T02:31:00", None, "2026-01-01T01:00:00", "2026-01-01T02:00:00"),  # the next slot
    ],
)
def test_stale_slots(now: str, last_success: str | None, alerted: str | None, stale: str | None) -> None:
    spec = ScheduleSpec(anchor=CREATED, cron="0 * * * *", timezone="UTC")
    got = stale_slot(
        spec,
        utc(now),
        grace_s=1800,
        watched_since=CREATED,
        last_success_at=utc(last_success) if last_success else None,
        alerted_slot=utc(alerted) if alerted else None,
    )
    assert got == (utc(stale) if stale else None)


def test_slots_before_a_resume_are_not_watched() -> None:
    spec = ScheduleSpec(anchor=CREATED, cron="0 * * * *", timezone="UTC")
    got = stale_slot(
        spec,
        utc("2026-01-01T01:31:00"),
        grace_s=1800,
        watched_since=utc("2026-01-01T01:10:00"),
        last_success_at=None,
        alerted_slot=None,
    )
    assert got is None
