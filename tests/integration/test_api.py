"""The HTTP API's edges: bad input, big bodies, the bearer token, health, OpenAPI."""

from __future__ import annotations

from typing import Any

import httpx
import psycopg
import pytest

from tests.conftest import Worker, make_settings


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "category_id"),
        ({"category_id": 0}, "category_id"),
        ({"category_id": -3}, "category_id"),
        ({"category_id": "303"}, "category_id"),
        ({"category_id": 303, "trigger_type": "CRON"}, "trigger_type"),
        ({"category_id": 303, "max_categories": 0}, "max_categories"),
        ({"category_id": 303, "max_users_per_course": 0}, "max_users_per_course"),
        ({"category_id": 2**63}, "category_id"),  # one past bigint: was a text/plain 500
        ({"category_id": 10**30}, "category_id"),
        ({"category_id": 303, "max_categories": 2**63}, "max_categories"),
        ({"category_id": 303, "max_users_per_course": 2**64}, "max_users_per_course"),
        ({"category_id": 303, "colour": "blue"}, "colour"),
    ],
)
def test_bad_input_is_422_naming_the_field(
    worker: Worker, pg: psycopg.Connection[Any], body: dict[str, Any], field: str
) -> None:
    answer = worker.sync(body)
    assert answer.status_code == 422
    payload = answer.json()
    assert payload["ok"] is False
    assert field in payload["error"]
    assert [p["field"] for p in payload["problems"]] == [field]
    assert pg.execute("select count(*) as n from run_log").fetchone()["n"] == 0


def test_bad_input_loses_nothing_stored(worker: Worker, pg: psycopg.Connection[Any]) -> None:
    assert worker.sync().status_code == 200
    assert worker.sync({"category_id": -1}).status_code == 422
    assert pg.execute("select count(*) as n from source_record").fetchone()["n"] == 178
    assert pg.execute("select count(*) as n from run_log").fetchone()["n"] == 1


def test_not_json_is_422(worker: Worker) -> None:
    answer = httpx.post(
        f"{worker.base_url}/jobs/enrolment-sync", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert answer.status_code == 422


def test_body_over_64_kib_is_413(worker: Worker, pg: psycopg.Connection[Any]) -> None:
    big = b'{"category_id": 303, "pad": "' + b"x" * (64 * 1024) + b'"}'
    answer = httpx.post(
        f"{worker.base_url}/jobs/enrolment-sync", content=big, headers={"content-type": "application/json"}
    )
    assert answer.status_code == 413
    assert answer.json()["ok"] is False

    def chunks() -> Any:  # no Content-Length: the stream itself must be counted
        yield b'{"category_id": 303, "pad": "'
        for _ in range(70):
            yield b"x" * 1024
        yield b'"}'

    streamed = httpx.post(
        f"{worker.base_url}/jobs/enrolment-sync", content=chunks(), headers={"content-type": "application/json"}
    )
    assert streamed.status_code == 413
    assert pg.execute("select count(*) as n from run_log").fetchone()["n"] == 0


def test_bearer_token_required_when_set(database_url: str, simulator: Any, pg: psycopg.Connection[Any]) -> None:
    settings = make_settings(database_url, simulator.base_url, worker_api_token="s3cret-token")
    with Worker(settings, database_url) as w:
        assert w.sync().status_code == 401
        assert w.sync(headers={"Authorization": "Bearer wrong"}).status_code == 401
        ok = w.sync(headers={"Authorization": "Bearer s3cret-token"})
        assert ok.status_code == 200
        assert "s3cret" not in ok.text
    assert pg.execute("select count(*) as n from run_log").fetchone()["n"] == 1


def test_healthz_and_openapi(worker: Worker) -> None:
    health = httpx.get(f"{worker.base_url}/healthz")
    assert health.status_code == 200 and health.json()["database"] == "ok"
    spec = httpx.get(f"{worker.base_url}/openapi.json").json()
    assert "/jobs/enrolment-sync" in spec["paths"]
    assert httpx.get(f"{worker.base_url}/docs").status_code == 200


def test_secrets_never_reach_run_log_or_answers(database_url: str, simulator: Any, pg: psycopg.Connection[Any]) -> None:
    simulator.state.set_credentials("demo-client", "another-secret")
    settings = make_settings(database_url, simulator.base_url, kvca_client_secret="wrong-secret-value")
    with Worker(settings, database_url) as w:
        answer = w.sync()
    assert answer.status_code == 502
    assert "wrong-secret-value" not in answer.text
    dump = pg.execute("select row_to_json(r)::text as t from run_log r").fetchall()
    dump += pg.execute("select row_to_json(a)::text as t from alert a").fetchall()
    assert dump and all("wrong-secret-value" not in r["t"] for r in dump)
