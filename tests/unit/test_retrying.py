"""The one retry policy: backoff with jitter, Retry-After in both forms, and the budget of one call."""

from __future__ import annotations

import datetime as dt
import random

import pytest

from enrolment_sync.retrying import RETRY_AFTER_MAX_S, Backoff, RetryBudget, retry_after_s

NOW = dt.datetime(2026, 11, 23, 4, 0, 0, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    ("failures", "base_s", "max_s", "rand", "expected"),
    [
        (1, 5, 60, 0.0, 2.5),
        (1, 5, 60, 1.0, 5.0),
        (2, 5, 60, 1.0, 10.0),
        (4, 5, 60, 1.0, 40.0),
        (20, 5, 60, 1.0, 60.0),
        (20, 5, 60, 0.0, 30.0),
        (0, 5, 60, 1.0, 5.0),  # before any failure the step is the base, never below it
        (3, 0.5, 30, 0.5, 1.5),  # KVCA defaults
        (6, 1, 32, 0.0, 16.0),  # Sheets defaults: 32 s cap reached at the 6th failure
        (3, 0, 0, 0.7, 0.0),  # base 0 switches backoff off (tests, local runs)
    ],
)
def test_backoff_doubles_with_equal_jitter_up_to_the_cap(
    failures: int, base_s: float, max_s: float, rand: float, expected: float
) -> None:
    assert Backoff(base_s, max_s, lambda: rand).delay_s(failures) == expected


def test_backoff_draws_what_the_kvca_client_drew_before() -> None:
    """The client used rng.uniform(step / 2, step): same draws from the same seeded generator."""
    before, after = random.Random(7), random.Random(7)
    for failures in range(1, 10):
        step = min(30.0, 0.5 * 2 ** (failures - 1))
        expected = before.uniform(step / 2, step)
        assert Backoff(0.5, 30.0, after.random).delay_s(failures) == pytest.approx(expected)


def _http_date(moment: dt.datetime) -> str:
    return moment.strftime("%a, %d %b %Y %H:%M:%S GMT")


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("", None),
        ("   ", None),
        ("soon", None),
        ("nan", None),
        ("2", 2.0),
        (" 7 ", 7.0),
        ("1.5", 1.5),
        ("0", 0.0),
        ("-3", 0.0),
        ("86400", RETRY_AFTER_MAX_S),
        ("inf", RETRY_AFTER_MAX_S),
        (_http_date(NOW + dt.timedelta(seconds=30)), 30.0),
        (_http_date(NOW - dt.timedelta(seconds=30)), 0.0),
        (_http_date(NOW + dt.timedelta(days=1)), RETRY_AFTER_MAX_S),
        ("Mon, 23 Nov 2026 04:00:45 -0000", 45.0),
        ("Mon, 23 Nov 2026 13:01:00 +0900", 60.0),
        ("Mon, 32 Nov 2026 04:00:45 GMT", None),
    ],
)
def test_retry_after_reads_seconds_and_http_dates_within_the_cap(header: str | None, expected: float | None) -> None:
    assert retry_after_s(header, now=NOW) == expected


def test_retry_after_cap_is_the_callers() -> None:
    assert retry_after_s("120", now=NOW, max_s=60) == 60.0


def test_rate_limit_waits_never_spend_a_retry() -> None:
    budget = RetryBudget(retries=1, rate_waits=3)
    assert [budget.rate_limited() for _ in range(3)] == [True, True, True]
    assert budget.failed() is True
    assert budget.rate_limited() is False  # the fourth wait is over the bound
    assert (budget.failures, budget.waits, budget.attempts) == (1, 4, 5)


@pytest.mark.parametrize(("retries", "allowed"), [(0, []), (1, [True]), (3, [True, True, True])])
def test_failures_spend_the_retries_then_stop(retries: int, allowed: list[bool]) -> None:
    budget = RetryBudget(retries=retries)
    assert [budget.failed() for _ in range(retries + 1)] == [*allowed, False]
    assert budget.attempts == retries + 1


@pytest.mark.parametrize(
    ("failures", "retry_after", "expected"),
    [
        (1, None, 0.75),  # backoff for the first failure
        (3, None, 3.0),  # backoff counts failures only
        (3, 2.0, 2.0),  # told: wait as told
        (0, 0.0, 0.0),  # told "now": no wait at all
    ],
)
def test_wait_is_as_told_else_the_backoff_of_the_failures(
    failures: int, retry_after: float | None, expected: float
) -> None:
    budget = RetryBudget(retries=5, rate_waits=5)
    for _ in range(failures):
        budget.failed()
    budget.rate_limited()  # a wait in between changes nothing of the backoff
    assert budget.wait_s(retry_after, Backoff(1, 10, lambda: 0.5)) == expected
