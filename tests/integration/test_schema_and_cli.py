"""The schema's promises and the terminal commands."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from typer.testing import CliRunner

from enrolment_sync import db
from enrolment_sync.cli import app
from enrolment_sync.config import get_settings

TABLES = ["run_log", "job_lock", "source_record", "alert", "sheet_outbox", "notification_outbox"]


def test_every_table_has_rls_and_no_policy(pg: psycopg.Connection[Any]) -> None:
    rows = pg.execute(
        "select c.relname, c.relrowsecurity,"
        " (select count(*) from pg_policy p where p.polrelid = c.oid) as policies"
        " from pg_class c join pg_namespace n on n.oid = c.relnamespace"
        " where n.nspname = 'public' and c.relkind = 'r'"
    ).fetchall()
    by_name = {r["relname"]: r for r in rows}
    for table in [*TABLES, "schema_migration"]:
        assert by_name[table]["relrowsecurity"] is True, table
        assert by_name[table]["policies"] == 0, table


@pytest.mark.parametrize(
    ("statement", "constraint"),
    [
        ("insert into run_log (trigger_type, status) values ('CRON', 'RUNNING')", "trigger_type"),
        ("insert into run_log (trigger_type, status, finished_at) values ('MANUAL', 'DONE', now())", "status"),
        ("insert into run_log (trigger_type, status) values ('MANUAL', 'SUCCESS')", "finished_unless_running"),
        (
            "insert into run_log (trigger_type, status, finished_at) values ('MANUAL', 'FAILED', now())",
            "failed_has_message",
        ),
        (
            "insert into alert (alert_type, severity, source_type, source_id, message)"
            " values ('CHANGED', 'urgent', 'x', 'y', 'z')",
            "severity",
        ),
        (
            "insert into source_record (source_type, source_id, category_id, payload, content_hash)"
            " values ('enrolment', '1:2:u', 1, '{}', 'h')",
            "source_type",
        ),
    ],
)
def test_enumerations_are_checked(pg: psycopg.Connection[Any], statement: str, constraint: str) -> None:
    with pytest.raises(psycopg.errors.CheckViolation, match=constraint):
        pg.execute(statement)


def test_source_key_is_unique(pg: psycopg.Connection[Any]) -> None:
    insert = (
        "insert into source_record (source_type, source_id, category_id, payload, content_hash)"
        " values ('enrolment_status', '303:9001:u1', 303, '{}', 'h')"
    )
    pg.execute(insert)
    with pytest.raises(psycopg.errors.UniqueViolation):
        pg.execute(insert)


def test_migrate_is_idempotent(database_url: str) -> None:
    target = db.parse_target(database_url)
    assert db.migrate(target) == []  # the template already holds every migration
    with psycopg.connect(database_url) as conn:
        applied = [r[0] for r in conn.execute("select name from schema_migration order by name")]
    assert applied == [name for name, _ in db.migration_files()]


@pytest.fixture
def cli_env(database_url: str, simulator: Any) -> Iterator[dict[str, str]]:
    get_settings.cache_clear()
    yield {"DATABASE_URL": database_url, "KVCA_BASE_URL": simulator.base_url, "LOG_LEVEL": "WARNING"}
    get_settings.cache_clear()


def test_sync_command_prints_the_summary(cli_env: dict[str, str], pg: psycopg.Connection[Any]) -> None:
    result = CliRunner().invoke(app, ["sync", "--category-id", "303", "--trigger-type", "MANUAL"], env=cli_env)
    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout[result.stdout.index("{") :])
    assert body["ok"] is True and body["summary"]["source_records_upserted"] == 178
    assert pg.execute("select trigger_type, status from run_log").fetchone() == {
        "trigger_type": "MANUAL",
        "status": "SUCCESS",
    }


def test_sync_command_exits_non_zero_on_failure(
    cli_env: dict[str, str], simulator: Any, pg: psycopg.Connection[Any]
) -> None:
    simulator.state.add_fault(status=503, count=-1)
    env = {**cli_env, "KVCA_RETRIES": "0"}
    result = CliRunner().invoke(app, ["sync", "--category-id", "303"], env=env)
    assert result.exit_code == 1
    assert '"error_group": "HTTP_5XX"' in result.stdout
    assert pg.execute("select status from run_log").fetchone()["status"] == "FAILED"


def test_sync_command_rejects_a_bad_trigger_type(cli_env: dict[str, str], pg: psycopg.Connection[Any]) -> None:
    result = CliRunner().invoke(app, ["sync", "--category-id", "303", "--trigger-type", "CRON"], env=cli_env)
    assert result.exit_code == 2 and "--trigger-type" in result.output
    assert pg.execute("select count(*) as n from run_log").fetchone()["n"] == 0


def test_serve_refuses_a_public_host_without_a_token(cli_env: dict[str, str]) -> None:
    result = CliRunner().invoke(app, ["serve", "--host", "0.0.0.0"], env=cli_env)
    assert result.exit_code == 2
    assert "WORKER_API_TOKEN" in result.output


def test_serve_refuses_an_unmigrated_database(pg_server_url: str) -> None:
    from enrolment_sync.testing.databases import recreate_database

    url = recreate_database(pg_server_url, "es_unmigrated")
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(app, ["serve"], env={"DATABASE_URL": url})
    finally:
        get_settings.cache_clear()
        with psycopg.connect(pg_server_url, autocommit=True) as conn:
            conn.execute("drop database if exists es_unmigrated with (force)")
    assert result.exit_code == 1
    assert "enrolment-sync migrate" in " ".join(result.output.split())  # Rich wraps long lines
