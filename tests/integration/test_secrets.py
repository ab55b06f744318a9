"""Secrets an upstream echoes never reach storage, logs, answers or channels (issue 10, item 9)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from enrolment_sync.runtime import configure_logging
from enrolment_sync.testing.kvca import RunningSimulator, SimulatorConfig
from enrolment_sync.testing.servers import JsonReceiver
from tests.conftest import Worker, make_settings
from tests.outbox_fixtures import drain, outbox_settings

KVCA_SECRET = "kvca-Secret-4f9c2e71"
WORKER_TOKEN = "worker-Token-8d31aa05"


@pytest.fixture
def echoing_simulator() -> Iterator[Any]:
    with RunningSimulator(SimulatorConfig(courses=1, users=5, client_secret=KVCA_SECRET)) as sim:
        yield sim


def test_an_upstream_echoing_the_secret_and_the_token_leaks_neither(
    database_url: str, echoing_simulator: Any, pg: psycopg.Connection[Any], capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging("INFO")
    sim = echoing_simulator
    sim.state.add_fault(status=503, count=-1, path_contains="/categories/303", echo=True)
    settings = make_settings(
        database_url,
        sim.base_url,
        kvca_client_secret=KVCA_SECRET,
        worker_api_token=WORKER_TOKEN,
        kvca_retries=0,
    )
    with Worker(settings, database_url) as worker:
        answer = worker.sync(headers={"Authorization": f"Bearer {WORKER_TOKEN}"})
    (token,) = sim.state.issued_tokens()
    secrets = [KVCA_SECRET, token, WORKER_TOKEN]
    assert answer.json()["error_group"] == "HTTP_5XX", answer.text
    assert "[redacted]" in answer.json()["error"], "the echo is told, masked"

    with JsonReceiver() as receiver:
        drain(outbox_settings(database_url, None, notify_urls=receiver.url()), database_url, only="notify")
        sent = json.dumps(receiver.messages(), ensure_ascii=False)
    assert "HTTP_5XX" in sent, "the FAILED notification was sent"

    texts = {
        "API answer": answer.text,
        "run_log": json.dumps(pg.execute("select error_message, summary from run_log").fetchall(), default=str),
        "alert": json.dumps(pg.execute("select message, detail from alert").fetchall(), default=str),
        "notification_outbox": json.dumps(
            pg.execute("select payload, last_error from notification_outbox").fetchall(), default=str
        ),
        "notification sent": sent,
        "log": capsys.readouterr().err,
    }
    for where, text in texts.items():
        for secret in secrets:
            assert secret not in text, f"{where} holds a secret"
