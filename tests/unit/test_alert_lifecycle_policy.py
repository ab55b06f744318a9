"""The alert lifecycle's decisions (pure): what is sent, quiet hours, the mass-change share, silences."""

from __future__ import annotations

import datetime as dt

import pytest

from enrolment_sync.alert_policy import (
    AlertState,
    QuietHours,
    is_mass_change,
    lasted_ko,
    notice_skipped,
    parse_quiet_hours,
)
from enrolment_sync.alerts import mass_change_alert, parse_kst, silence_spec
from enrolment_sync.clock import KST


def state(**changes: object) -> AlertState:
    values: dict[str, object] = {
        "alert_type": "STALE",
        "resolved": False,
        "acknowledged": False,
        "silence_id": None,
        "inhibited_by": None,
    }
    return AlertState(**(values | changes))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kind", "changes", "why"),
    [
        ("STALE_ALERT", {}, None),
        ("STALE_ALERT", {"resolved": True}, "resolved"),
        ("FAILED_ALERT", {"alert_type": "FAILED", "resolved": True}, "resolved"),
        ("STALE_ALERT", {"silence_id": 4}, "silenced (silence 4)"),
        ("STALE_ALERT", {"inhibited_by": 9}, "inhibited (FAILED alert 9)"),
        ("FAILED_ALERT", {"alert_type": "FAILED", "inhibited_by": 9}, None),  # only STALE is inhibited
        ("STALE_ALERT", {"acknowledged": True}, None),  # the first notice goes out even when acknowledged
        ("ESCALATION", {"acknowledged": True}, "acknowledged"),
        ("ESCALATION", {"alert_type": "FAILED"}, None),
        ("ESCALATION", {"resolved": True, "acknowledged": True}, "resolved"),
    ],
)
def test_notice_skipped(kind: str, changes: dict[str, object], why: str | None) -> None:
    assert notice_skipped(kind, state(**changes)) == why


def kst(hour: int, minute: int = 0, day: int = 24) -> dt.datetime:
    return dt.datetime(2026, 12, day, hour, minute, tzinfo=KST)


@pytest.mark.parametrize(
    ("window", "now", "until"),
    [
        ("22:00-08:00", kst(23, 30), kst(8, day=25)),
        ("22:00-08:00", kst(2), kst(8)),
        ("22:00-08:00", kst(22), kst(8, day=25)),
        ("22:00-08:00", kst(8), None),
        ("22:00-08:00", kst(21, 59), None),
        ("12:00-13:30", kst(12, 45), kst(13, 30)),
        ("12:00-13:30", kst(13, 30), None),
    ],
)
def test_quiet_hours_in_kst(window: str, now: dt.datetime, until: dt.datetime | None) -> None:
    quiet = parse_quiet_hours(window)
    assert quiet is not None
    assert quiet.held_until(now.astimezone(dt.UTC)) == until


@pytest.mark.parametrize("bad", ["22-08", "25:00-08:00", "22:00-22:00", "22:00~08:00", "ten to six"])
def test_quiet_hours_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="QUIET_HOURS"):
        parse_quiet_hours(bad)


def test_no_quiet_hours() -> None:
    assert parse_quiet_hours("  ") is None
    assert QuietHours(dt.time(22), dt.time(8)).held_until(kst(12)) is None


@pytest.mark.parametrize(
    ("rows", "changed", "mass"),
    [(100, 20, False), (100, 21, True), (30, 7, True), (19, 19, False), (20, 5, True), (0, 0, False)],
)
def test_mass_change_share(rows: int, changed: int, mass: bool) -> None:
    assert is_mass_change(rows, changed, share=0.2, min_rows=20) is mass


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(20, "1분 미만"), (60, "1분"), (7500, "2시간 5분"), (7200, "2시간"), (90000, "1일 1시간"), (86400 * 3, "3일")],
)
def test_lasted_ko(seconds: float, text: str) -> None:
    assert lasted_ko(seconds) == text


def test_mass_change_alert_counts_by_old_and_new_status() -> None:
    spec = mass_change_alert(
        303,
        run_id=7,
        status_rows=30,
        transitions={("IN_PROGRESS", "CANCELLED"): 7, ("IN_PROGRESS", "COMPLETED"): 2},
        share=0.2,
    )
    assert (spec.source_type, spec.source_id, str(spec.severity)) == ("mass_change", "category:303", "high")
    assert "30행 중 9행" in spec.message and "수강취소(CANCELLED) 7명" in spec.message
    assert spec.detail["transitions"][0] == {"from": "IN_PROGRESS", "to": "CANCELLED", "count": 7}


START, END = kst(9), kst(18)


@pytest.mark.parametrize(
    ("changes", "error"),
    [
        ({"category_id": None, "alert_type": None, "severity": None}, "silence everything"),
        ({"alert_type": "BOGUS"}, "alert type"),
        ({"severity": "urgent"}, "severity"),
        ({"ends_at": START}, "after its start"),
        ({"comment": "  "}, "comment"),
        ({"starts_at": dt.datetime(2026, 12, 24, 9)}, "time zone"),
    ],
)
def test_silence_spec_refuses(changes: dict[str, object], error: str) -> None:
    values: dict[str, object] = {
        "category_id": 303,
        "alert_type": "stale",
        "severity": None,
        "starts_at": START,
        "ends_at": END,
        "comment": "방학",
    }
    with pytest.raises(ValueError, match=error):
        silence_spec(**(values | changes))  # type: ignore[arg-type]


def test_silence_spec_and_kst_input() -> None:
    spec = silence_spec(
        category_id=None, alert_type="stale", severity="HIGH", starts_at=START, ends_at=END, comment=" 점검 "
    )
    assert (spec.alert_type, spec.severity, spec.comment) == ("STALE", "high", "점검")
    assert parse_kst("2026-12-24 18:00") == END
    assert parse_kst("2026-12-24T09:00+00:00") == dt.datetime(2026, 12, 24, 9, tzinfo=dt.UTC)
    with pytest.raises(ValueError, match="not a date"):
        parse_kst("크리스마스")
