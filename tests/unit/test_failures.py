"""Step 2 §1-2 as tables: classification, severity, the worker's HTTP answer, and agreement with query 3-3."""

from __future__ import annotations

import pytest

from enrolment_sync.errors import LockConflict, UpstreamError
from enrolment_sync.failures import (
    HTTP_STATUS_BY_GROUP,
    SEVERITY_BY_GROUP,
    ErrorGroup,
    classify,
    classify_exception,
    ops_query_group,
)


@pytest.mark.parametrize(
    ("status", "message", "group"),
    [
        (None, "job_lock active: enrolment_sync is held by w1 (run_id=7)", "LOCK_CONFLICT"),
        (409, "upstream HTTP 409 Conflict on GET /api/v1/categories/303: {}", "HTTP_409"),
        (500, "upstream HTTP 500 Internal Server Error on GET /x", "HTTP_5XX"),
        (503, "upstream HTTP 503 Service Unavailable on GET /x", "HTTP_5XX"),
        (599, "upstream HTTP 599 Unknown Status on GET /x", "HTTP_5XX"),
        (400, "upstream HTTP 400 Bad Request on GET /x", "HTTP_4XX"),
        (401, "upstream HTTP 401 Unauthorized on POST /api/v1/auth/token", "HTTP_4XX"),
        (403, "upstream HTTP 403 Forbidden on GET /x", "HTTP_4XX"),
        (429, "upstream HTTP 429 Too Many Requests on GET /x", "HTTP_4XX"),
        (None, "upstream timeout: no answer within 10s on GET /x", "TIMEOUT"),
        (None, "read timed out", "TIMEOUT"),
        (None, "ConnectError: connection refused", "UNKNOWN"),
        (None, "ValueError: something else", "UNKNOWN"),
    ],
)
def test_classify(status: int | None, message: str, group: str) -> None:
    assert classify(status, message) == group


@pytest.mark.parametrize(
    ("group", "severity", "http"),
    [
        ("HTTP_5XX", "high", 502),
        ("TIMEOUT", "high", 504),
        ("HTTP_409", "medium", 502),
        ("HTTP_4XX", "medium", 502),
        ("LOCK_CONFLICT", "low", 409),
        ("UNKNOWN", "medium", 500),
    ],
)
def test_severity_and_answer(group: str, severity: str, http: int) -> None:
    assert SEVERITY_BY_GROUP[ErrorGroup(group)] == severity
    assert HTTP_STATUS_BY_GROUP[ErrorGroup(group)] == http


def test_every_group_has_a_severity_and_an_answer() -> None:
    assert set(SEVERITY_BY_GROUP) == set(ErrorGroup) == set(HTTP_STATUS_BY_GROUP)


@pytest.mark.parametrize(
    ("exc", "ops"),
    [
        (
            LockConflict("job_lock active: enrolment_sync is held by h:1 (run_id=409) until 2026-01-01T00:00:00"),
            "LOCK_CONFLICT",
        ),
        (UpstreamError("upstream HTTP 409 Conflict on GET /x: {}", status_code=409), "HTTP_409"),
        (UpstreamError("upstream HTTP 502 Bad Gateway on GET /x", status_code=502), "HTTP_5XX"),
        (UpstreamError("upstream timeout: no answer within 5s on GET /x", timeout=True), "TIMEOUT"),
    ],
)
def test_worker_and_query_3_3_tell_the_same_story(exc: Exception, ops: str) -> None:
    assert classify_exception(exc).group == ops
    assert ops_query_group(str(exc)) == ops


def test_lock_conflict_text_never_holds_409_between_spaces() -> None:
    text = str(LockConflict("job_lock active: held by h:1 (run_id=409)"))
    assert " 409 " not in text
    assert classify_exception(LockConflict(text)).severity == "low"


@pytest.mark.parametrize(
    ("group", "message"),
    [
        ("HTTP_4XX", 'upstream HTTP 403 Forbidden on GET /x: {"detail":"course 509 closed"}'),
        ("HTTP_4XX", 'upstream HTTP 403 Forbidden on GET /x: {"detail":"run 409 of 5 x y timeout"}'),
        ("HTTP_5XX", 'upstream HTTP 503 Service Unavailable on GET /x: {"detail":"retry 409 later"}'),
        ("TIMEOUT", "upstream timeout: no answer within 5s on GET /courses/ 512 /x"),
        ("UNKNOWN", "run_id 409 lost the job lease 500 times, timeout"),
        ("LOCK_CONFLICT", "job_lock active: held by host 409 until 599 timeout"),
        ("HTTP_409", "upstream HTTP 409 Conflict on GET /x: course 512 busy"),
    ],
)
def test_texts_are_fitted_so_3_3_agrees_with_the_worker(group: str, message: str) -> None:
    from enrolment_sync.failures import fit_for_ops_query

    fitted = fit_for_ops_query(message, ErrorGroup(group))
    expected = "OTHER" if group in {"HTTP_4XX", "UNKNOWN"} else group
    assert ops_query_group(fitted) == expected
    assert fitted.replace("\u00a0", " ").replace("time-out", "timeout") == message  # the same words


def test_a_fitting_text_is_left_alone() -> None:
    from enrolment_sync.failures import fit_for_ops_query

    text = "upstream HTTP 503 Service Unavailable on GET /api/v1/courses/9001/enrolments?page=1: {}"
    assert fit_for_ops_query(text, ErrorGroup.HTTP_5XX) == text
