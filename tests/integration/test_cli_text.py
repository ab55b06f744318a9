"""What the commands print is text: alert messages and error texts are never read as Rich markup, and a
settings error names the setting and the problem but never the value."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from typer.testing import CliRunner

from enrolment_sync.cli import app
from enrolment_sync.config import get_settings


@pytest.fixture
def cli_env(database_url: str) -> Iterator[dict[str, str]]:
    get_settings.cache_clear()
    yield {"DATABASE_URL": database_url, "LOG_LEVEL": "WARNING"}
    get_settings.cache_clear()


def _flat(text: str) -> str:
    return " ".join(text.split())


def test_alerts_list_shows_brackets_as_written(cli_env: dict[str, str], pg: psycopg.Connection[Any]) -> None:
    for source_id, message in [
        ("303:9001:u1", "수강 상태 변경 [high] u1"),
        ("303:9001:u2", "upstream said [/x] and [bold]"),
    ]:
        pg.execute(
            "insert into alert (alert_type, severity, source_type, source_id, message)"
            " values ('CHANGED', 'high', 'enrolment_status', %s, %s)",
            (source_id, message),
        )
    result = CliRunner().invoke(app, ["alerts", "list"], env={**cli_env, "COLUMNS": "400"})
    assert result.exit_code == 0, result.output
    assert "[high] u1" in result.stdout
    assert "said [/x] and [bold]" in result.stdout


def test_an_error_text_with_brackets_is_printed_not_parsed(cli_env: dict[str, str]) -> None:
    result = CliRunner().invoke(app, ["history", "--category-id", "303", "--user-id", "[/x][red]u"], env=cli_env)
    assert result.exit_code == 1, result.output
    assert "[/x][red]u" in result.output


SECRET_LOOKING = "[/x]s3cr3t-value-never-shown"


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("KVCA_MAX_CONCURRENCY", "valid integer"),
        ("JOB_LOCK_TTL_SECONDS", "valid number"),
        ("LOG_LEVEL", "LOG_LEVEL must be"),
        ("OPS_ADMIN_PASSWORD", "at least 8 characters"),
    ],
)
def test_a_settings_error_names_the_setting_never_the_value(name: str, problem: str) -> None:
    get_settings.cache_clear()
    value = SECRET_LOOKING if name != "OPS_ADMIN_PASSWORD" else "[/x]s3"
    env = {name: value, "WORKER_API_TOKEN": "tok-" + SECRET_LOOKING, "DATABASE_URL": "postgresql://u:pw@127.0.0.1/x"}
    try:
        result = CliRunner().invoke(app, ["check"], env=env)
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 2, result.output
    shown = _flat(result.output)
    assert name in shown and problem in shown
    assert value not in shown and "s3cr3t" not in shown
    assert "pw@" not in shown and "input_value" not in shown
