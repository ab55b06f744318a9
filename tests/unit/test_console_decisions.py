"""The console's decisions (pure): roles from passwords, origins, CSRF, redirects, KST, durations, paging."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from enrolment_sync.web import present
from enrolment_sync.web.auth import Role, clean_username, csrf_matches, role_for_password, safe_next, same_origin

OWN = "http://127.0.0.1:18080"


@pytest.mark.parametrize(
    ("password", "admin", "readonly", "role"),
    [
        ("admin-pass", "admin-pass", "read-pass", Role.ADMIN),
        ("read-pass", "admin-pass", "read-pass", Role.READONLY),
        ("wrong", "admin-pass", "read-pass", None),
        ("", "admin-pass", "read-pass", None),
        ("admin-pass", None, "read-pass", None),
        ("read-pass", "admin-pass", None, None),
        ("anything", None, None, None),
        ("비밀번호입니다", "비밀번호입니다", None, Role.ADMIN),
    ],
)
def test_the_password_decides_the_role(
    password: str, admin: str | None, readonly: str | None, role: Role | None
) -> None:
    assert role_for_password(password, admin=admin, readonly=readonly) is role


@pytest.mark.parametrize(
    ("origin", "referer", "same"),
    [
        (OWN, None, True),
        ("HTTP://127.0.0.1:18080", None, True),
        ("http://127.0.0.1:18081", None, False),
        ("http://evil.example", f"{OWN}/ops", False),  # Origin wins over Referer
        ("null", None, False),
        (None, f"{OWN}/ops/alerts/3", True),
        (None, "http://evil.example/ops", False),
        (None, None, False),  # a state-changing request that says nothing of where it comes from
    ],
)
def test_same_origin(origin: str | None, referer: str | None, same: bool) -> None:
    assert same_origin(OWN, origin=origin, referer=referer) is same


@pytest.mark.parametrize(
    ("given", "expected", "ok"),
    [("abc", "abc", True), ("abd", "abc", False), (None, "abc", False), ("", "", False), ("abc", "", False)],
)
def test_csrf_matches(given: str | None, expected: str, ok: bool) -> None:
    assert csrf_matches(given, expected) is ok


@pytest.mark.parametrize(
    ("target", "where"),
    [
        ("/ops/runs?status=FAILED", "/ops/runs?status=FAILED"),
        ("https://evil.example/ops", "/ops"),
        ("//evil.example/ops", "/ops"),
        ("/ops\\evil", "/ops"),
        ("/docs", "/ops"),
        (None, "/ops"),
    ],
)
def test_after_login_only_a_console_path(target: str | None, where: str) -> None:
    assert safe_next(target) == where


@pytest.mark.parametrize(
    ("raw", "name"),
    [("  김 운영  ", "김 운영"), ("", None), ("   ", None), ("a" * 65, None), ("x\x00y", None), ("ops-1", "ops-1")],
)
def test_username(raw: str, name: str | None) -> None:
    assert clean_username(raw) == name


def test_kst_shows_utc_as_korean_time() -> None:
    assert present.kst(dt.datetime(2026, 11, 22, 15, 0, 5, tzinfo=dt.UTC)) == "2026-11-23 00:00:05"
    assert present.kst(None) == "-"


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (None, "-"),
        (0.42, "0.4초"),
        (Decimal("12.4"), "12초"),
        (185, "3분 5초"),
        (7800, "2시간 10분"),
        (3 * 86400 + 4 * 3600, "3일 4시간"),
    ],
)
def test_duration(seconds: float | Decimal | None, text: str) -> None:
    assert present.duration(seconds) == text


def test_a_page_knows_whether_there_is_a_next_one() -> None:
    rows = [{"id": i} for i in range(10, 0, -1)]
    assert present.page(rows[:3], size=3).next_before_id is None
    more = present.page(rows[:4], size=3)
    assert [r["id"] for r in more.rows] == [10, 9, 8] and more.next_before_id == 8


def test_filters_keep_only_known_values() -> None:
    where = present.RunFilter.parse({"status": "FAILED", "trigger_type": "CRON", "category_id": "303x"})
    assert where == present.RunFilter(status="FAILED")
    assert present.RunFilter.parse({"category_id": "303", "before_id": "-1"}).query() == {"category_id": 303}


@pytest.mark.parametrize(
    ("q", "search"),
    [
        ("", None),
        ("  ", None),
        ("9001", ("course", 9001)),
        ("u0001", ("user", "u0001")),
        ("9" * 30, ("user", "9" * 30)),
    ],
)
def test_learner_query(q: str, search: tuple[str, str | int] | None) -> None:
    assert present.learner_query(q) == search


def test_like_prefix_takes_wildcards_literally() -> None:
    assert present.like_prefix("u_1%") == "u\\_1\\%%"


def test_cohort_lines_count_open_alerts_by_severity() -> None:
    cohorts = [{"category_id": 303}, {"category_id": 304}]
    open_alerts = [
        {"category_id": 303, "severity": "high", "cnt": 2},
        {"category_id": 303, "severity": "low", "cnt": 1},
        {"category_id": None, "severity": "high", "cnt": 4},
    ]
    lines = present.cohort_lines(cohorts, open_alerts)
    assert lines[0]["open_alerts"] == {"high": 2, "medium": 0, "low": 1}
    assert lines[1]["open_alerts"] == {"high": 0, "medium": 0, "low": 0}
    assert present.unassigned_open_alerts(cohorts, open_alerts) == 4


def test_run_chart_is_oldest_first_with_failures_by_group() -> None:
    runs = [
        {
            "id": 3,
            "status": "FAILED",
            "error_group": "HTTP_5XX",
            "duration_s": Decimal("1.5"),
            "total_records": 0,
            "changed_records": 0,
        },
        {
            "id": 2,
            "status": "SUCCESS",
            "error_group": None,
            "duration_s": 2,
            "total_records": 178,
            "changed_records": 1,
        },
        {
            "id": 1,
            "status": "FAILED",
            "error_group": "HTTP_5XX",
            "duration_s": None,
            "total_records": 0,
            "changed_records": 0,
        },
    ]
    chart = present.run_chart(runs)
    assert chart["labels"] == ["#1", "#2", "#3"] and chart["duration_s"] == [None, 2.0, 1.5]
    assert (chart["failure_groups"], chart["failure_counts"]) == (["HTTP_5XX"], [2])


@pytest.mark.parametrize(
    ("values", "problem"),
    [
        ({"ops_admin_password": "short"}, "OPS_ADMIN_PASSWORD must be at least 8"),
        ({"ops_readonly_password": "short"}, "OPS_READONLY_PASSWORD must be at least 8"),
        ({"ops_admin_password": "same-password", "ops_readonly_password": "same-password"}, "must differ"),
    ],
)
def test_console_passwords_that_cannot_work_are_refused_by_name(values: dict[str, str], problem: str) -> None:
    from pydantic import ValidationError

    from enrolment_sync.config import Settings

    with pytest.raises(ValidationError, match=problem) as caught:
        Settings(_env_file=None, **values)  # type: ignore[call-arg]
    assert "same-password" not in str(caught.value) and "short" not in str(caught.value).replace("at least", "")


def test_every_alert_type_the_schema_allows_has_a_korean_label_and_a_filter() -> None:
    from importlib import resources

    migrations = resources.files("enrolment_sync").joinpath("sql/migrations")
    latest = ""
    for entry in sorted(migrations.iterdir(), key=lambda e: e.name):
        text = entry.read_text("utf-8")
        if "alert_type in (" in text:
            latest = text.split("alert_type in (", 1)[1].split(")", 1)[0]
    allowed = {t.strip().strip("'") for t in latest.split(",")}
    assert allowed == set(present.ALERT_TYPES) == set(present.ALERT_TYPE_KO)
