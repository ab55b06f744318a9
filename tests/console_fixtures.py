"""Fixtures of the console tests: the worker with console credentials, over real HTTP on loopback, holding the
demo's data (a real sync of the simulator's cohort 303, one learner's change, and sheet messages the outbox
parked as dead against a failing fake Sheets API)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import psycopg
import pytest

from enrolment_sync.config import Settings
from enrolment_sync.testing.fake_sheets import RunningFakeSheets
from tests.conftest import Worker, make_settings
from tests.outbox_fixtures import drain, outbox_settings

ADMIN_PASSWORD = "admin-password-1"
READONLY_PASSWORD = "readonly-password-1"
API_TOKEN = "console-test-token"
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def console_settings(database_url: str, kvca_base_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "ops_admin_password": ADMIN_PASSWORD,
        "ops_readonly_password": READONLY_PASSWORD,
        "worker_api_token": API_TOKEN,
        "ops_refresh_seconds": 1,
    }
    values.update(overrides)
    return make_settings(database_url, kvca_base_url, **values)


@dataclass
class Demo:
    worker: Worker
    base_url: str
    first_run_id: int
    failed_run_id: int
    changed_run_id: int
    changed_user_id: str

    def bearer(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {API_TOKEN}"}

    def login(self, username: str, password: str) -> httpx.Client:
        client = httpx.Client(base_url=self.base_url, timeout=30)
        answer = client.post(
            "/ops/login",
            data={"username": username, "password": password, "next": "/ops"},
            headers={"Origin": self.base_url},
        )
        assert answer.status_code == 303, answer.text
        return client


def csrf_of(html: str) -> str:
    found = _CSRF.search(html)
    assert found, "no CSRF token on the page"
    return found.group(1)


def make_demo_data(worker: Worker, simulator: Any, database_url: str, fake_sheets: RunningFakeSheets) -> Demo:
    """Three real syncs: one, one failing on the upstream's 503s (a FAILED run and alert), one after a learner's
    status changed (which resolves the FAILED alert); then the sheet consumer against a Sheets API that answers
    503: with one attempt allowed, the new messages are parked as dead (with their alert)."""
    auth = {"Authorization": f"Bearer {API_TOKEN}"}
    first = worker.sync(headers=auth)
    assert first.status_code == 200, first.text
    simulator.state.add_fault(503, -1)
    failed = worker.sync(headers=auth)
    assert failed.status_code == 502 and failed.json()["error_group"] == "HTTP_5XX", failed.text
    simulator.state.clear_faults()
    course_id = simulator.state.course_ids(303)[0]
    user_id = simulator.state.enrolments(course_id)[3]["user_id"]
    simulator.state.update_enrolment(course_id, user_id, status="CANCELLED")
    second = worker.sync(headers=auth)
    assert second.status_code == 200 and second.json()["summary"]["changed_records"] == 1, second.text
    fake_sheets.state.add_fault(503, -1, endpoint="values.append")
    parking = outbox_settings(database_url, fake_sheets, outbox_max_attempts=1)
    drain(parking, database_url, only="sheet")
    runs = (first.json()["run_id"], failed.json()["run_id"], second.json()["run_id"])
    return Demo(worker, worker.base_url, *runs, user_id)


@pytest.fixture
def demo(
    database_url: str, simulator: Any, fake_sheets: RunningFakeSheets, pg: psycopg.Connection[Any]
) -> Iterator[Demo]:
    settings = console_settings(database_url, simulator.base_url)
    with Worker(settings, database_url, unattended=True) as worker:  # runs queued requests, as `serve` does
        yield make_demo_data(worker, simulator, database_url, fake_sheets)
