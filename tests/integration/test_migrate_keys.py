"""`migrate-keys` against real Postgres: old-key rows, new-key rows and conflicts; report = database afterwards."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.types.json import Jsonb
from typer.testing import CliRunner

from enrolment_sync.cli import app
from enrolment_sync.config import get_settings
from enrolment_sync.keymigration import KeyMigrationReport, LeftRecord, migrate_keys
from enrolment_sync.records import content_hash

T0 = dt.datetime(2026, 11, 20, 3, 0, tzinfo=dt.UTC)
EARLIER, LATER = T0, T0 + dt.timedelta(days=1)
TWO_PART = "^[^:]+:[^:]+$"


def record(
    pg: psycopg.Connection[Any],
    source_id: str,
    *,
    course_id: int | None,
    user_id: str | None,
    status: str = "IN_PROGRESS",
    updated_at: dt.datetime = EARLIER,
    source_type: str = "enrolment_status",
    payload_course: int | None = None,
    run_id: int = 1,
) -> int:
    payload: dict[str, Any] = {"user_id": user_id, "status": status, "marker": f"{source_id}@{updated_at:%d}"}
    if payload_course is not None or course_id is not None:
        payload["course_id"] = payload_course if payload_course is not None else course_id
    row = pg.execute(
        "insert into source_record (source_type, source_id, category_id, course_id, user_id, status, payload,"
        " content_hash, first_seen_run_id, last_changed_run_id, created_at, updated_at)"
        " values (%s, %s, 303, %s, %s, %s, %s, %s, %s, %s, %s, %s) returning id",
        (
            source_type,
            source_id,
            course_id,
            user_id,
            status if source_type == "enrolment_status" else None,
            Jsonb(payload),
            content_hash(payload),
            run_id,
            run_id,
            updated_at,
            updated_at,
        ),
    ).fetchone()
    assert row is not None
    return int(row["id"])


def changed(pg: psycopg.Connection[Any], source_id: str, course_id: int | None) -> int:
    detail = {"course_id": course_id} if course_id is not None else {}
    row = pg.execute(
        "insert into alert (alert_type, severity, source_type, source_id, message, detail)"
        " values ('CHANGED', 'medium', 'enrolment_status', %s, 'changed', %s) returning id",
        (source_id, Jsonb(detail)),
    ).fetchone()
    assert row is not None
    return int(row["id"])


def sheet(pg: psycopg.Connection[Any], source_id: str, course_id: int | None, status: str = "PENDING") -> int:
    payload = {"course_id": course_id} if course_id is not None else {"change": "CHANGED"}
    row = pg.execute(
        "insert into sheet_outbox (category_id, source_id, payload, status) values (303, %s, %s, %s) returning id",
        (source_id, Jsonb(payload), status),
    ).fetchone()
    assert row is not None
    return int(row["id"])


def seed(pg: psycopg.Connection[Any]) -> dict[str, int]:
    """A database a sync under the old key left behind, with some rows already under the final key."""
    ids = {
        # moved: no record under the new key yet (a status record and its detail)
        "u1": record(pg, "303:u1", course_id=9001, user_id="u1"),
        "u1_detail": record(pg, "303:u1", course_id=9001, user_id="u1", source_type="enrolment_detail"),
        # merged, the old row is newer: its content wins
        "u2_old": record(pg, "303:u2", course_id=9001, user_id="u2", status="COMPLETED", updated_at=LATER),
        "u2_new": record(pg, "303:9001:u2", course_id=9001, user_id="u2", status="IN_PROGRESS", run_id=7),
        # merged, the new-key row is newer: it stays as it is
        "u3_old": record(pg, "303:u3", course_id=9001, user_id="u3", status="FAILED", run_id=1),
        "u3_new": record(pg, "303:9001:u3", course_id=9001, user_id="u3", status="COMPLETED", updated_at=LATER),
        # merged on a tie: the new-key row is preferred
        "u4_old": record(pg, "303:u4", course_id=9001, user_id="u4", status="CANCELLED"),
        "u4_new": record(pg, "303:9001:u4", course_id=9001, user_id="u4", status="ENROLLED"),
        # cannot migrate: no course
        "u5": record(pg, "303:u5", course_id=None, user_id="u5"),
        # ambiguous: the column says 9001, the payload 9002
        "u6": record(pg, "303:u6", course_id=9001, user_id="u6", payload_course=9002),
        # ambiguous: the key names another user than the column
        "u8": record(pg, "303:u8", course_id=9002, user_id="someone-else"),
        # already final, not touched
        "u7": record(pg, "303:9002:u7", course_id=9002, user_id="u7"),
        # moved: a record of the other course, newer than the rest
        "u9": record(pg, "303:u9", course_id=9002, user_id="u9", updated_at=LATER),
    }
    ids |= {
        "alert_u1": changed(pg, "303:u1", 9001),  # detail names the course
        "alert_u2_flip": changed(pg, "303:u2", 9002),  # raised for the other course the old key merged in
        "alert_u3_nodetail": changed(pg, "303:u3", None),  # falls back to the record's new key
        "alert_u5": changed(pg, "303:u5", 9001),  # its record is left untouched: so is it
        "alert_u6": changed(pg, "303:u6", 9001),
        "alert_final": changed(pg, "303:9002:u7", 9002),
    }
    failed = pg.execute(
        "insert into alert (alert_type, severity, source_type, source_id, message)"
        " values ('FAILED', 'high', 'run_log', 'enrolment_sync:HTTP_409', 'x') returning id"
    ).fetchone()
    assert failed is not None
    ids["alert_failed"] = int(failed["id"])
    ids |= {
        "sheet_u1": sheet(pg, "303:u1", 9001),
        "sheet_u3_processing": sheet(pg, "303:u3", None, status="PROCESSING"),
        "sheet_u2_done": sheet(pg, "303:u2", 9001, status="DONE"),  # history: keeps its key
        "sheet_u5": sheet(pg, "303:u5", None),  # nothing to derive a course from
    }
    return ids


def snapshot(pg: psycopg.Connection[Any]) -> list[list[dict[str, Any]]]:
    return [
        pg.execute(sql.SQL("select * from {} order by id").format(sql.Identifier(table))).fetchall()
        for table in ("source_record", "alert", "sheet_outbox", "notification_outbox")
    ]


def by_id(pg: psycopg.Connection[Any], table: str, row_id: int) -> dict[str, Any] | None:
    return pg.execute(sql.SQL("select * from {} where id = %s").format(sql.Identifier(table)), (row_id,)).fetchone()


def count(pg: psycopg.Connection[Any], query: str, *params: Any) -> int:
    row = pg.execute(query, params).fetchone()
    assert row is not None
    return int(row["n"])


def run(database_url: str, *, dry_run: bool) -> KeyMigrationReport:
    with psycopg.connect(database_url) as conn:
        return migrate_keys(conn, dry_run=dry_run)


EXPECTED_LEFT = [
    LeftRecord("enrolment_status", "303:u5", "no_course_id", "course_id is null"),
    LeftRecord(
        "enrolment_status", "303:u6", "payload_course_mismatch", "column course_id 9001, payload course_id 9002"
    ),
    LeftRecord("enrolment_status", "303:u8", "user_mismatch", "key user u8, column someone-else"),
]


def test_migrate_keys_moves_merges_repoints_and_reports_what_it_did(
    database_url: str, pg: psycopg.Connection[Any]
) -> None:
    ids = seed(pg)
    old_before = count(pg, "select count(*) as n from source_record where source_id ~ %s", TWO_PART)
    total_before = count(pg, "select count(*) as n from source_record")
    u2_old = by_id(pg, "source_record", ids["u2_old"])
    assert u2_old is not None

    report = run(database_url, dry_run=False)

    assert (report.moved, report.merged, report.merged_kept_old_content) == (3, 3, 1)
    assert (report.alerts_repointed, report.sheet_messages_repointed) == (3, 2)
    assert report.left == EXPECTED_LEFT
    assert report.left_by_problem() == {"no_course_id": 1, "payload_course_mismatch": 1, "user_mismatch": 1}
    assert (report.alerts_left, report.sheet_messages_left) == (2, 1)

    # The report's numbers are the database's.
    assert old_before == report.moved + report.merged + len(report.left)
    assert count(pg, "select count(*) as n from source_record") == total_before - report.merged
    assert count(pg, "select count(*) as n from source_record where source_id ~ %s", TWO_PART) == len(report.left)
    left_now = pg.execute("select source_id from source_record where source_id ~ %s order by 1", (TWO_PART,))
    assert [r["source_id"] for r in left_now] == [r.source_id for r in report.left]
    assert (
        count(pg, "select count(*) as n from alert where alert_type = 'CHANGED' and source_id ~ %s", TWO_PART)
        == report.alerts_left
    )
    assert (
        count(
            pg,
            "select count(*) as n from sheet_outbox where status in ('PENDING', 'PROCESSING') and source_id ~ %s",
            TWO_PART,
        )
        == report.sheet_messages_left
    )

    # Moved in place: same rows, new keys, same content.
    u1 = by_id(pg, "source_record", ids["u1"])
    u1d = by_id(pg, "source_record", ids["u1_detail"])
    u9 = by_id(pg, "source_record", ids["u9"])
    assert u1 is not None and u1d is not None and u9 is not None
    assert (u1["source_id"], u1d["source_id"], u9["source_id"]) == ("303:9001:u1", "303:9001:u1", "303:9002:u9")
    assert u9["updated_at"] == LATER

    # Merged: the new-key row remains; the old one is gone; the later content won, a tie kept the new row.
    for gone in ("u2_old", "u3_old", "u4_old"):
        assert by_id(pg, "source_record", ids[gone]) is None
    u2 = by_id(pg, "source_record", ids["u2_new"])
    u3 = by_id(pg, "source_record", ids["u3_new"])
    u4 = by_id(pg, "source_record", ids["u4_new"])
    assert u2 is not None and u3 is not None and u4 is not None
    assert (u2["source_id"], u2["status"], u2["updated_at"]) == ("303:9001:u2", "COMPLETED", LATER)
    assert (u2["payload"], u2["content_hash"]) == (u2_old["payload"], u2_old["content_hash"])
    assert u2["first_seen_run_id"] == 1  # the earliest history of the two
    assert (u3["status"], u3["payload"]["marker"]) == ("COMPLETED", "303:9001:u3@21")
    assert (u4["status"], u4["payload"]["marker"]) == ("ENROLLED", "303:9001:u4@20")

    # Alerts: re-keyed to the course each was raised for; those of records left behind stay with them.
    alert_keys = {name: by_id(pg, "alert", ids[name]) for name in ids if name.startswith("alert_")}
    assert {name: row["source_id"] for name, row in alert_keys.items() if row is not None} == {
        "alert_u1": "303:9001:u1",
        "alert_u2_flip": "303:9002:u2",
        "alert_u3_nodetail": "303:9001:u3",
        "alert_u5": "303:u5",
        "alert_u6": "303:u6",
        "alert_final": "303:9002:u7",
        "alert_failed": "enrolment_sync:HTTP_409",
    }
    sheet_keys = {name: by_id(pg, "sheet_outbox", ids[name]) for name in ids if name.startswith("sheet_")}
    assert {name: row["source_id"] for name, row in sheet_keys.items() if row is not None} == {
        "sheet_u1": "303:9001:u1",
        "sheet_u3_processing": "303:9001:u3",
        "sheet_u2_done": "303:u2",
        "sheet_u5": "303:u5",
    }

    # Idempotent: a second run has nothing to do and reports the same rows left behind.
    after_first = snapshot(pg)
    again = run(database_url, dry_run=False)
    assert again.nothing_to_do
    assert (again.moved, again.merged, again.alerts_repointed, again.sheet_messages_repointed) == (0, 0, 0, 0)
    assert again.left == EXPECTED_LEFT
    assert snapshot(pg) == after_first


def test_dry_run_changes_nothing_and_reports_what_a_run_would_do(
    database_url: str, pg: psycopg.Connection[Any]
) -> None:
    seed(pg)
    before = snapshot(pg)

    dry = run(database_url, dry_run=True)

    assert snapshot(pg) == before
    assert pg.execute("select to_regclass('pg_temp.key_plan') as t").fetchone() == {"t": None}
    assert dry.dry_run and not dry.nothing_to_do
    real = run(database_url, dry_run=False)
    assert snapshot(pg) != before
    assert {**dry.as_dict(), "dry_run": False} == real.as_dict()


def test_an_empty_or_final_database_has_nothing_to_do(database_url: str, pg: psycopg.Connection[Any]) -> None:
    assert run(database_url, dry_run=False) == KeyMigrationReport(dry_run=False)
    record(pg, "303:9001:u1", course_id=9001, user_id="u1")
    changed(pg, "303:9001:u1", 9001)
    report = run(database_url, dry_run=False)
    assert report.nothing_to_do and report.left == [] and report.alerts_left == 0


def test_a_sync_waits_for_the_migration_instead_of_writing_beside_it(
    database_url: str, pg: psycopg.Connection[Any]
) -> None:
    """The migration holds a lock on source_record until it commits: even a new row must wait."""
    record(pg, "303:u1", course_id=9001, user_id="u1")
    with psycopg.connect(database_url) as conn, conn.transaction():
        report = migrate_keys(conn, dry_run=False)  # the caller's transaction is still open: so is the lock
        assert report.moved == 1
        with psycopg.connect(database_url, autocommit=True) as other:
            other.execute("set lock_timeout = '200ms'")
            with pytest.raises(psycopg.errors.LockNotAvailable):
                other.execute(
                    "insert into source_record (source_type, source_id, category_id, payload, content_hash)"
                    " values ('enrolment_status', '303:9002:u2', 303, '{}', 'h')"
                )
    # Committed: the writer goes through now, beside the migrated key.
    with psycopg.connect(database_url, autocommit=True) as other:
        other.execute(
            "insert into source_record (source_type, source_id, category_id, payload, content_hash)"
            " values ('enrolment_status', '303:9002:u2', 303, '{}', 'h')"
        )
    assert count(pg, "select count(*) as n from source_record where source_id like '303:900_:u_'") == 2


@pytest.fixture
def cli_env(database_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setenv("DATABASE_URL", database_url)
    get_settings.cache_clear()
    yield database_url
    get_settings.cache_clear()


def test_the_command_reports_as_json_and_dry_run_is_honoured(cli_env: str, pg: psycopg.Connection[Any]) -> None:
    seed(pg)
    before = snapshot(pg)
    runner = CliRunner()

    dry = runner.invoke(app, ["migrate-keys", "--dry-run", "--json"])
    assert dry.exit_code == 0, dry.output
    assert snapshot(pg) == before
    dry_report = json.loads(dry.stdout)
    assert (dry_report["dry_run"], dry_report["moved"], dry_report["merged"]) == (True, 3, 3)

    real = runner.invoke(app, ["migrate-keys", "--json"])
    assert real.exit_code == 0, real.output
    real_report = json.loads(real.stdout)
    assert {**dry_report, "dry_run": False} == real_report
    assert (
        count(pg, "select count(*) as n from source_record where source_id ~ %s", TWO_PART)
        == len(real_report["left"])
        == 3
    )

    table = runner.invoke(app, ["migrate-keys"])
    assert table.exit_code == 0, table.output
    assert "nothing to do" in table.stdout
    assert "payload_course_mismatch" in table.stdout


def test_sheet_messages_in_a_live_consumers_hands_or_older_than_a_new_one_are_not_replayed(
    database_url: str, pg: psycopg.Connection[Any]
) -> None:
    record(pg, "303:u1", course_id=9001, user_id="u1")
    record(pg, "303:u2", course_id=9001, user_id="u2")
    stale = sheet(pg, "303:u1", 9001)  # queued under the old key, still pending ...
    newer = sheet(pg, "303:9001:u1", 9001, status="DONE")  # ... while the new key's message was delivered
    held = sheet(pg, "303:u2", 9001, status="PROCESSING")
    pg.execute(
        "update sheet_outbox set locked_by = 'consumer-a', locked_until = now() + interval '2 minutes' where id = %s",
        (held,),
    )

    report = run(database_url, dry_run=False)

    assert (report.sheet_messages_repointed, report.sheet_messages_superseded) == (1, 1)
    assert report.sheet_messages_left == 1  # the one a live consumer holds: left for a later run
    rows = {r["id"]: r for r in pg.execute("select id, source_id, status, last_error from sheet_outbox")}
    assert (rows[stale]["source_id"], rows[stale]["status"]) == ("303:9001:u1", "DONE")
    assert "superseded" in rows[stale]["last_error"]
    assert rows[newer]["status"] == "DONE"
    assert (rows[held]["source_id"], rows[held]["status"]) == ("303:u2", "PROCESSING")
