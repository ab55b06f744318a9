"""The record key against real Postgres: the short key's false CHANGED alerts, and none under the final key.

`old_engine_run` is what a sync keyed on `category_id:user_id` did: each course's status rows looked up by
key, diffed, upserted, CHANGED alerts raised and sheet rows queued, through the project's own code
(records.diff, alerts.changed_alert, store.alerts.raise_alerts and the queries of sql/queries.sql). Only the key
function differs between the two runs of the comparison.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from enrolment_sync import db
from enrolment_sync.alerts import changed_alert
from enrolment_sync.clock import ManualClock
from enrolment_sync.keymigration import old_record_key
from enrolment_sync.kvca.adapter import status_record
from enrolment_sync.kvca.contract import parse_status_row
from enrolment_sync.kvca.factory import client_from_settings
from enrolment_sync.records import STATUS, Stored, diff, record_key
from enrolment_sync.store import alerts
from enrolment_sync.sync import SyncEngine, SyncRequest, SyncSummary
from enrolment_sync.testing.kvca import RunningSimulator, SimulatorConfig, SimulatorState
from tests.conftest import Worker, make_settings

KeyFn = Callable[[int, int, str], str]
CATEGORY = 303
LEARNER = "u000045"  # the first learner of course 9002 who is also in course 9001
START = dt.datetime(2026, 11, 21, 6, 0, tzinfo=dt.UTC)


def short_key(category_id: int, _course_id: int, user_id: str) -> str:
    return old_record_key(category_id, user_id)


@dataclasses.dataclass
class RunCounts:
    new: int = 0
    changed: int = 0
    alerts: int = 0
    sheet_messages: int = 0


async def _stored(conn: psycopg.AsyncConnection[Any], keys: list[str]) -> dict[tuple[str, str], Stored]:
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(
        "select source_type, source_id, content_hash, missing_since is not null as missing,"
        " payload ->> 'status' as status, payload ->> 'status_msg' as status_msg, payload ->> 'gc_date' as gc_date,"
        " payload ->> 'sjc_date' as sjc_date, payload ->> 'update_time' as update_time"
        " from source_record where source_type = %(type)s and source_id = any(%(keys)s)",
        {"type": STATUS, "keys": keys},
    )
    fields = ("status", "status_msg", "gc_date", "sjc_date", "update_time")
    return {
        (r["source_type"], r["source_id"]): Stored(r["content_hash"], r["missing"], {k: r[k] for k in fields})
        for r in await cur.fetchall()
    }


async def old_engine_run(database_url: str, state: SimulatorState, key: KeyFn, *, run_id: int) -> RunCounts:
    """One run over every course of the category, course after course, keyed by `key`."""
    now = START + dt.timedelta(days=run_id)
    counts = RunCounts()
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        for course_id in state.course_ids(CATEGORY):
            incoming = []
            for raw in state.enrolments(course_id):
                rec = status_record(CATEGORY, raw, parse_status_row(raw, course_id))
                incoming.append(dataclasses.replace(rec, source_id=key(CATEGORY, course_id, rec.user_id)))
            async with conn.transaction():
                d = diff(incoming, await _stored(conn, [r.source_id for r in incoming]), present=None)
                if d.to_write:
                    rows = Jsonb([r.as_row() for r in d.to_write])
                    await db.execute(conn, "records_upsert", {"rows": rows, "run_id": run_id, "now": now})
                specs = [changed_alert(rec, before, run_id=run_id, course_name=None) for rec, before in d.changed]
                raised = await alerts.raise_alerts(conn, "CHANGED", specs, run_id=run_id, now=now, cooldown_minutes=0)
                sheet = [
                    {"category_id": CATEGORY, "source_id": r.source_id, "payload": r.payload}
                    for r in [*d.new, *(rec for rec, _ in d.changed)]
                ]
                if sheet:
                    await db.execute(conn, "sheet_enqueue", {"rows": Jsonb(sheet), "run_id": run_id, "now": now})
            counts.new += len(d.new)
            counts.changed += len(d.changed)
            counts.alerts += len(raised.created)
            counts.sheet_messages += len(sheet)
    return counts


def _severities(pg: psycopg.Connection[Any], run_id: int) -> dict[str, int]:
    rows = pg.execute(
        "select severity, count(*) as n from alert where alert_type = 'CHANGED' and run_id = %s group by 1", (run_id,)
    ).fetchall()
    return {r["severity"]: r["n"] for r in rows}


def test_short_key_merges_two_courses_and_raises_false_changed_alerts(
    database_url: str, pg: psycopg.Connection[Any]
) -> None:
    state = SimulatorState(SimulatorConfig(courses=2, users=89))
    course_a, course_b = state.course_ids(CATEGORY)
    assert LEARNER in {r["user_id"] for r in state.enrolments(course_a)}
    assert LEARNER in {r["user_id"] for r in state.enrolments(course_b)}
    status_a = state.enrolment(course_a, LEARNER)["status"]

    runs = [asyncio.run(old_engine_run(database_url, state, short_key, run_id=n)) for n in (1, 2, 3)]

    # One record for the learner, holding whichever course was stored last: course B's.
    rows = pg.execute(
        "select source_id, course_id, payload ->> 'course_id' as payload_course from source_record"
        " where source_type = 'enrolment_status' and user_id = %s",
        (LEARNER,),
    ).fetchall()
    assert rows == [{"source_id": f"{CATEGORY}:{LEARNER}", "course_id": course_b, "payload_course": str(course_b)}]
    assert pg.execute("select count(*) as n from source_record").fetchone() == {"n": 133}  # of 178 enrolments

    assert dataclasses.asdict(runs[0]) == {"new": 133, "changed": 45, "alerts": 45, "sheet_messages": 178}
    # No upstream change after run 1, yet runs 2 and 3 each raise a CHANGED alert twice per shared learner.
    assert dataclasses.asdict(runs[1]) == {"new": 0, "changed": 90, "alerts": 90, "sheet_messages": 90}
    assert runs[2] == runs[1]
    learner_alerts = pg.execute(
        "select run_id, detail -> 'before' ->> 'status' as before, detail -> 'after' ->> 'status' as after,"
        " detail ->> 'course_id' as course from alert where source_id = %s and run_id = 2 order by id",
        (f"{CATEGORY}:{LEARNER}",),
    ).fetchall()
    assert [a["course"] for a in learner_alerts] == [str(course_a), str(course_b)]  # A over B's, then B over A's
    assert learner_alerts[0]["after"] == status_a

    # Of each rerun's 90 false alerts, those of learners whose two courses disagree on status claim a status
    # change: to FAILED or CANCELLED is high.
    # 27 of the 45 shared learners have a different status in each course (u000045: FAILED in A, IN_PROGRESS in B).
    assert _severities(pg, 2) == _severities(pg, 3) == {"high": 10, "medium": 44, "low": 36}
    assert status_a == "FAILED"


def test_final_key_keeps_both_courses_and_raises_no_alert(database_url: str, pg: psycopg.Connection[Any]) -> None:
    state = SimulatorState(SimulatorConfig(courses=2, users=89))

    runs = [asyncio.run(old_engine_run(database_url, state, record_key, run_id=n)) for n in (1, 2, 3)]

    assert dataclasses.asdict(runs[0]) == {"new": 178, "changed": 0, "alerts": 0, "sheet_messages": 178}
    assert (
        dataclasses.asdict(runs[1])
        == dataclasses.asdict(runs[2])
        == {
            "new": 0,
            "changed": 0,
            "alerts": 0,
            "sheet_messages": 0,
        }
    )
    rows = pg.execute(
        "select source_id, course_id from source_record where source_type = 'enrolment_status' and user_id = %s"
        " order by course_id",
        (LEARNER,),
    ).fetchall()
    assert [r["source_id"] for r in rows] == [f"{CATEGORY}:9001:{LEARNER}", f"{CATEGORY}:9002:{LEARNER}"]
    assert pg.execute("select count(*) as n from alert").fetchone() == {"n": 0}


@pytest.mark.parametrize("courses", [2, 3])
def test_the_worker_keys_on_course_and_sees_no_change_on_a_rerun(
    database_url: str, pg: psycopg.Connection[Any], courses: int
) -> None:
    """The real engine over HTTP: shared learners stay one record per course, a rerun changes nothing."""
    with RunningSimulator(SimulatorConfig(courses=courses, users=89)) as sim:
        enrolments = sum(len(sim.state.enrolments(c)) for c in sim.state.course_ids(CATEGORY))
        with Worker(make_settings(database_url, sim.base_url), database_url) as worker:
            first = worker.sync({"category_id": CATEGORY, "trigger_type": "MANUAL"})
            second = worker.sync({"category_id": CATEGORY, "trigger_type": "MANUAL"})
    assert first.status_code == 200, first.text
    assert second.status_code == 200, second.text
    assert first.json()["summary"]["new_records"] == 2 * enrolments  # a status and a detail record each
    assert second.json()["summary"]["changed_records"] == 0
    assert second.json()["summary"]["created_alerts"] == 0
    per_learner = pg.execute(
        "select count(*) as n from source_record where source_type = 'enrolment_status' and user_id = %s", (LEARNER,)
    ).fetchone()
    assert per_learner == {"n": 2}  # u000045 is in courses 9001 and 9002 (and not 9003)
    assert pg.execute(
        "select count(*) as n from source_record where source_id !~ '^[^:]+:[^:]+:[^:]+$'"
    ).fetchone() == {"n": 0}


class ShortKeyEngine(SyncEngine):
    """The present engine with the old key put back: same fetch, diff, upsert, alerts and outbox."""

    async def _fetch_course(self, category_id: int, course_id: int, name: str | None, cap: int) -> Any:
        fetched = await super()._fetch_course(category_id, course_id, name, cap)
        incoming = [
            dataclasses.replace(r, source_id=old_record_key(r.category_id, r.user_id)) for r in fetched.incoming
        ]
        present = fetched.present
        if present is not None:
            present = {old_record_key(category_id, key.rsplit(":", 1)[1]) for key in present}
        return dataclasses.replace(fetched, incoming=incoming, present=present)


async def _engine_runs(database_url: str, base_url: str, engine_class: type[SyncEngine]) -> list[SyncSummary]:
    settings = make_settings(database_url, base_url)
    database = db.Database(db.parse_target(database_url))
    await database.open()
    summaries = []
    try:
        for run_id in (1, 2, 3):
            async with client_from_settings(settings) as client:
                engine = engine_class(
                    database,
                    client,
                    run_id=run_id,
                    clock=ManualClock(START + dt.timedelta(days=run_id)),
                    cooldown_minutes=0,
                    course_concurrency=1,  # course 9001, then 9002: the order the numbers below describe
                )
                summaries.append(await engine.sync_categories(SyncRequest(CATEGORY)))
    finally:
        await database.close()
    return summaries


@pytest.mark.parametrize(
    ("engine_class", "records", "per_run", "sheet_per_run"),
    [
        # The engine reads back only records stored under the final key (records_of_course), so a record
        # written under the short key is never found again: every run reports every record NEW, and queues
        # every enrolment for the sheet again, while the shared learners' rows flip between courses.
        (ShortKeyEngine, 266, [(356, 0, 0), (356, 0, 0), (356, 0, 0)], [178, 178, 178]),
        (SyncEngine, 356, [(356, 0, 0), (0, 0, 0), (0, 0, 0)], [178]),
    ],
    ids=["short-key", "final-key"],
)
def test_the_present_engine_under_each_key(
    database_url: str,
    pg: psycopg.Connection[Any],
    engine_class: type[SyncEngine],
    records: int,
    per_run: list[tuple[int, int, int]],
    sheet_per_run: list[int],
) -> None:
    """(new, changed, CHANGED alerts) per run of the real engine; only the key differs."""
    with RunningSimulator(SimulatorConfig(courses=2, users=89)) as sim:
        summaries = asyncio.run(_engine_runs(database_url, sim.base_url, engine_class))
    assert [(s.new_records, s.changed_records, s.created_alerts) for s in summaries] == per_run
    sheet = pg.execute("select count(*) as n from sheet_outbox group by run_id order by run_id").fetchall()
    assert [r["n"] for r in sheet] == sheet_per_run
    assert pg.execute("select count(*) as n from source_record").fetchone() == {"n": records}
