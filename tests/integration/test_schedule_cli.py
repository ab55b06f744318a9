"""`enrolment-sync schedule ...` against a real database."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from typer.testing import CliRunner

from enrolment_sync.cli import app
from enrolment_sync.config import get_settings


@pytest.fixture
def env(database_url: str) -> Iterator[dict[str, str]]:
    get_settings.cache_clear()
    yield {"DATABASE_URL": database_url, "LOG_LEVEL": "WARNING", "COLUMNS": "200"}
    get_settings.cache_clear()


def _run(env: dict[str, str], *args: str) -> Any:
    return CliRunner().invoke(app, ["schedule", *args], env=env)


def test_add_list_pause_resume_remove(env: dict[str, str], pg: psycopg.Connection[Any]) -> None:
    daily = _run(env, "add", "--category-id", "303", "--cron", "0 9 * * *")
    frequent = _run(env, "add", "--category-id", "404", "--every", "6h", "--max-users-per-course", "800")
    assert daily.exit_code == 0 and frequent.exit_code == 0, daily.output + frequent.output
    daily_id, frequent_id = int(daily.stdout), int(frequent.stdout)

    listed = _run(env, "list", "--json")
    views = {v["id"]: v for v in json.loads(listed.stdout)}
    assert views[daily_id]["rule"] == "cron '0 9 * * *' (Asia/Seoul)"
    assert views[daily_id]["next_slot_kst"].endswith("09:00:00 KST")
    assert views[daily_id]["next_slot_at"].endswith("T00:00:00+00:00"), "09:00 KST is 00:00 UTC"
    assert views[frequent_id]["rule"] == "every 6h" and views[frequent_id]["max_users_per_course"] == 800
    table = _run(env, "list").stdout
    assert "09:00:00 KST" in table and "every 6h" in table

    assert "paused" in _run(env, "pause", str(daily_id)).stdout
    assert "already paused" in _run(env, "pause", str(daily_id)).stdout
    paused = {v["id"]: v for v in json.loads(_run(env, "list", "--json").stdout)}[daily_id]
    assert paused["enabled"] is False and paused["next_slot_at"] is None
    assert "resumed" in _run(env, "resume", str(daily_id)).stdout
    assert "was not paused" in _run(env, "resume", str(daily_id)).stdout
    assert "removed" in _run(env, "remove", str(frequent_id)).stdout
    assert [r["id"] for r in pg.execute("select id from sync_schedule")] == [daily_id]


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["add", "--category-id", "303", "--cron", "0 9 * *"], "not a five-field cron expression"),
        (["add", "--category-id", "303", "--cron", "0 9 * * *", "--timezone", "Mars/Base"], "unknown time zone"),
        (["add", "--category-id", "303", "--every", "5 minutes"], "not a duration"),
        (["add", "--category-id", "303"], "either --cron EXPR or --every DURATION"),
        (["add", "--category-id", "303", "--cron", "0 9 * * *", "--every", "1h"], "either --cron"),
        (["pause", "99"], "no schedule with id 99"),
        (["remove", "99"], "no schedule with id 99"),
    ],
)
def test_bad_input_is_named_and_nothing_is_stored(
    env: dict[str, str], pg: psycopg.Connection[Any], args: list[str], named: str
) -> None:
    result = _run(env, *args)
    assert result.exit_code != 0
    assert named in " ".join(result.output.split())
    assert pg.execute("select count(*) as n from sync_schedule").fetchone()["n"] == 0
