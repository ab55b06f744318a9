"""Shared fixtures: a real Postgres (TEST_DATABASE_URL or an embedded one), a template database migrated once
and cloned per test, the KVCA simulator on loopback, and the worker served over real HTTP."""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from enrolment_sync import db
from enrolment_sync.config import Settings
from enrolment_sync.testing.databases import create_database, drop_database, embedded_server, recreate_database
from enrolment_sync.testing.kvca import RunningSimulator, SimulatorConfig
from enrolment_sync.testing.servers import ThreadedServer

_counter = itertools.count()


@pytest.fixture(scope="session")
def pg_server_url() -> Iterator[str]:
    """A Postgres server we may create databases on."""
    url = os.environ.get("TEST_DATABASE_URL")
    if url:
        yield url
        return
    folder = Path(tempfile.mkdtemp(prefix="enrolment-sync-test-"))
    try:
        with embedded_server(folder) as embedded_url:
            yield embedded_url
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def template_db(pg_server_url: str) -> Iterator[str]:
    name = f"es_template_{os.getpid()}"
    db.migrate(db.parse_target(recreate_database(pg_server_url, name)))
    yield name
    drop_database(pg_server_url, name)


@pytest.fixture
def database_url(pg_server_url: str, template_db: str) -> Iterator[str]:
    """A fresh, migrated database for one test (cloned from the template)."""
    name = f"es_test_{os.getpid()}_{next(_counter)}"
    yield create_database(pg_server_url, name, template=template_db)
    drop_database(pg_server_url, name)


@pytest.fixture
def pg(database_url: str) -> Iterator[psycopg.Connection[Any]]:
    """A plain autocommit connection to the test database, for assertions."""
    from psycopg.rows import dict_row

    with psycopg.connect(database_url, autocommit=True, row_factory=dict_row) as conn:
        yield conn


def make_settings(database_url: str, kvca_base_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": database_url,
        "kvca_base_url": kvca_base_url,
        "kvca_client_id": "demo-client",
        "kvca_client_secret": "demo-secret",
        "kvca_timeout_seconds": 5,
        "kvca_backoff_base_seconds": 0.01,
        "kvca_backoff_max_seconds": 0.05,
        "enrolment_sync_home": Path(tempfile.gettempdir()) / "enrolment-sync-tests",
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@pytest.fixture
def simulator() -> Iterator[Any]:
    """The KVCA simulator on loopback: category 303, one course of 89 learners (Step 1's example)."""
    with RunningSimulator(SimulatorConfig(courses=1, users=89)) as sim:
        yield sim


@pytest.fixture
def settings(database_url: str, simulator: Any) -> Settings:
    return make_settings(database_url, simulator.base_url)


class Worker:
    """The worker app served over real HTTP on loopback."""

    def __init__(self, settings: Settings, database_url: str, **app_kwargs: Any) -> None:
        from enrolment_sync.api import create_app

        self.server = ThreadedServer(create_app(settings, database_url=database_url, **app_kwargs))

    def __enter__(self) -> Worker:
        self.server.__enter__()
        self.base_url = self.server.base_url
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.__exit__(*exc)

    def sync(self, body: dict[str, Any] | None = None, **kwargs: Any) -> Any:
        import httpx

        payload = body if body is not None else {"category_id": 303, "trigger_type": "SCHEDULER"}
        return httpx.post(f"{self.base_url}/jobs/enrolment-sync", json=payload, timeout=120, **kwargs)


@pytest.fixture
def worker(settings: Settings, database_url: str) -> Iterator[Worker]:
    with Worker(settings, database_url) as w:
        yield w
