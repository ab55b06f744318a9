"""The seeds' operations SQL: the project's copies are verbatim, and each returns what its heading promises."""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path
from typing import Any

import psycopg
import pytest

from enrolment_sync.demo import ops_query
from tests.conftest import Worker

REPOSITORY = Path(__file__).resolve().parents[2]
SEEDS = REPOSITORY / "tests" / "seeds"  # the user's seed documents, verbatim (tests/seeds/README.md)
# where they came from: the shared folder beside the authors' checkouts (and worktrees), when there is one
SHARED_SEEDS = next((p / "shared" / "seeds" for p in REPOSITORY.parents if (p / "shared" / "seeds").is_dir()), None)
OPS = ["3-1", "3-2", "3-3", "3-4", "3-5", "3-6", "3-7", "4-1", "4-2", "4-3", "4-4"]


def _seed_queries() -> dict[str, str]:
    found: dict[str, str] = {}
    for seed in sorted(SEEDS.glob("*.txt")):
        for m in re.finditer(r"### (\d-\d)\. [^\n]*\n\n```sql\n(.*?)```", seed.read_text("utf-8"), re.S):
            found[m.group(1)] = m.group(2)
    return found


def test_seeds_ship_with_the_repository() -> None:
    assert SEEDS.is_dir() and SEEDS.is_relative_to(REPOSITORY)
    assert sorted(_seed_queries()) == OPS


def test_shipped_seeds_equal_the_originals_when_present() -> None:
    if SHARED_SEEDS is None:
        pytest.skip("the shared seed folder is not beside this checkout (a clean clone): tests/seeds is the copy")
    originals = {p.name: p.read_bytes() for p in SHARED_SEEDS.glob("*.txt")}
    assert {p.name: p.read_bytes() for p in SEEDS.glob("*.txt")} == originals


def test_project_copies_are_verbatim() -> None:
    seeds = _seed_queries()
    assert sorted(seeds) == OPS
    for name, text in seeds.items():
        ours = resources.files("enrolment_sync").joinpath(f"sql/ops/{name}.sql").read_text("utf-8")
        assert ours.split("\n", 1)[1] == text, f"sql/ops/{name}.sql differs from the seed"


def _run(pg: psycopg.Connection[Any], name: str) -> list[dict[str, Any]]:
    return pg.execute(ops_query(name)).fetchall()


def test_step1_queries_after_runs(worker: Worker, simulator: Any, pg: psycopg.Connection[Any]) -> None:
    assert worker.sync().status_code == 200
    course_id = simulator.state.course_ids(303)[0]
    user_id = simulator.state.enrolments(course_id)[3]["user_id"]
    simulator.state.update_enrolment(course_id, user_id, status="FAILED")
    assert worker.sync().status_code == 200
    simulator.state.add_fault(status=503, count=-1)
    assert worker.sync().status_code == 502
    simulator.state.clear_faults()

    runs = _run(pg, "3-1")  # recent runs, newest first
    assert [r["status"] for r in runs] == ["FAILED", "SUCCESS", "SUCCESS"]
    assert runs[1]["changed_records"] == 1 and runs[1]["created_alerts"] == 1
    assert set(runs[0]) >= {"id", "trigger_type", "total_records", "error_message", "finished_at", "updated_at"}

    failed = _run(pg, "3-2")  # failed runs only
    assert len(failed) == 1 and " 503 " in failed[0]["error_message"]

    groups = _run(pg, "3-3")  # failure groups
    assert [(g["error_group"], g["cnt"]) for g in groups] == [("HTTP_5XX", 1)]

    dist = _run(pg, "3-4")  # alert types and severities of the last 24 h
    assert {(d["alert_type"], d["severity"], d["cnt"]) for d in dist} == {("CHANGED", "high", 1), ("FAILED", "high", 1)}

    open_high = _run(pg, "3-5")  # unresolved high alerts
    assert {a["alert_type"] for a in open_high} == {"CHANGED", "FAILED"}

    sample = _run(pg, "3-6")  # status sample of category 303
    assert len(sample) == 89
    assert sample[0]["source_id"] == f"303:{course_id}:{user_id}" and sample[0]["status"] == "FAILED"

    assert _run(pg, "3-7") == []  # no lock left behind


def test_step2_queries(worker: Worker, simulator: Any, pg: psycopg.Connection[Any]) -> None:
    simulator.state.add_fault(status=409, count=-1)
    assert worker.sync().status_code == 502
    simulator.state.clear_faults()
    simulator.state.add_fault(status=504, count=-1)
    assert worker.sync().status_code == 502
    simulator.state.clear_faults()

    recent = _run(pg, "4-1")
    assert [r["created_alerts"] for r in recent] == [1, 1]
    alerts = _run(pg, "4-2")
    assert [(a["error_group"], a["severity"], a["http_status_code"]) for a in alerts] == [
        ("HTTP_5XX", "high", "504"),
        ("HTTP_409", "medium", "409"),
    ]
    per_group = _run(pg, "4-3")
    assert {(g["error_group"], g["severity"], g["cnt"]) for g in per_group} == {
        ("HTTP_5XX", "high", 1),
        ("HTTP_409", "medium", 1),
    }
    joined = _run(pg, "4-4")
    assert len(joined) == 2 and all(j["alert_id"] is not None for j in joined)
    assert {j["error_group"] for j in joined} == {"HTTP_5XX", "HTTP_409"}
