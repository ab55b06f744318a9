"""`enrolment-sync migrate-keys`: move records from the old `category_id:user_id` key to the final one.

The decision and its reasons are in docs/decisions/record-key.md. The work is a handful of set-based
statements (sql/keys.sql) in one transaction; `--dry-run` runs the very same statements and rolls back, so
its report is what a real run would do at that moment.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Annotated, Any

import psycopg
import typer
from psycopg.rows import dict_row
from rich.console import Console
from rich.table import Table

from . import db
from .errors import DatabaseError, EnrolmentSyncError
from .terminal import plain_console, print_error

OLD_KEY = re.compile(r"^[^:]+:[^:]+$")  # mirrors the `~ '^[^:]+:[^:]+$'` of sql/keys.sql
# A record left untouched for want of a course (it cannot be re-keyed at all) ...
UNMIGRATABLE = frozenset({"no_course_id"})
# ... or because its own columns and payload disagree about whose record it is (someone must decide).
AMBIGUOUS = frozenset({"category_mismatch", "user_mismatch", "payload_course_mismatch"})


def old_record_key(category_id: int, user_id: str) -> str:
    """The key this project no longer writes: one record per learner and term, whatever the course."""
    return f"{category_id}:{user_id}"


def is_old_key(source_id: str) -> bool:
    return OLD_KEY.match(source_id) is not None


@dataclass(frozen=True)
class LeftRecord:
    """A record kept under its old key, and why."""

    source_type: str
    source_id: str
    problem: str
    detail: str


@dataclass
class KeyMigrationReport:
    dry_run: bool
    moved: int = 0  # re-keyed in place: no record held the new key yet
    merged: int = 0  # folded into the record already under the new key
    merged_kept_old_content: int = 0  # of those, how many had the later content (the old row's content won)
    alerts_repointed: int = 0
    sheet_messages_repointed: int = 0
    sheet_messages_superseded: int = 0  # of those, closed because a newer message for the enrolment exists
    left: list[LeftRecord] = field(default_factory=list)
    alerts_left: int = 0  # CHANGED alerts still under a two-part key afterwards
    sheet_messages_left: int = 0  # undelivered sheet messages still under a two-part key afterwards

    @property
    def changes(self) -> int:
        return self.moved + self.merged + self.alerts_repointed + self.sheet_messages_repointed

    @property
    def nothing_to_do(self) -> bool:
        return self.changes == 0

    def left_by_problem(self) -> dict[str, int]:
        return dict(sorted(Counter(r.problem for r in self.left).items()))

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["nothing_to_do"] = self.nothing_to_do
        out["left_by_problem"] = self.left_by_problem()
        return out


def migrate_keys(conn: psycopg.Connection[Any], *, dry_run: bool) -> KeyMigrationReport:
    """Re-key, merge and re-point in one transaction (rolled back when `dry_run`); return what was done.

    Takes a lock on source_record for the transaction, so a sync running meanwhile waits instead of
    writing beside the moving keys.
    """
    report = KeyMigrationReport(dry_run=dry_run)
    try:
        with conn.transaction(force_rollback=dry_run):
            cur = conn.cursor(row_factory=dict_row)
            cur.execute("drop table if exists pg_temp.key_plan")  # a caller's open transaction may hold one
            cur.execute(db.query("keys_lock"))
            cur.execute(db.query("keys_plan"))
            cur.execute(db.query("keys_plan_counts"))
            counts = cur.fetchone()
            assert counts is not None
            report.moved = counts["moved"]
            report.merged = counts["merged"]
            report.merged_kept_old_content = counts["merged_kept_old_content"]
            cur.execute(db.query("keys_plan_left"))
            report.left = [LeftRecord(r["source_type"], r["source_id"], r["problem"], r["problem_detail"]) for r in cur]
            cur.execute(db.query("keys_merge_content"))
            cur.execute(db.query("keys_repoint_alerts"))
            report.alerts_repointed = cur.rowcount
            cur.execute(db.query("keys_repoint_sheet"))
            repointed = [r[0] if isinstance(r, tuple) else r["id"] for r in cur.fetchall()]
            report.sheet_messages_repointed = len(repointed)
            cur.execute(db.query("keys_supersede_sheet"), {"ids": repointed})
            report.sheet_messages_superseded = cur.rowcount
            cur.execute(db.query("keys_move"))
            if cur.rowcount != report.moved:
                raise DatabaseError(f"planned to move {report.moved} records, moved {cur.rowcount}")
            cur.execute(db.query("keys_delete_merged"))
            if cur.rowcount != report.merged:
                raise DatabaseError(f"planned to merge {report.merged} records, merged {cur.rowcount}")
            cur.execute(db.query("keys_left_references"))
            left_refs = cur.fetchone()
            assert left_refs is not None
            report.alerts_left = left_refs["alerts_left"]
            report.sheet_messages_left = left_refs["sheet_messages_left"]
    except psycopg.Error as exc:
        raise DatabaseError(f"migrate-keys failed (nothing was changed): {exc}") from exc
    return report


def render(report: KeyMigrationReport, console: Console) -> None:
    title = "migrate-keys (dry run: nothing was changed)" if report.dry_run else "migrate-keys"
    if report.nothing_to_do and not report.left and not report.alerts_left and not report.sheet_messages_left:
        console.print(f"{title}: nothing to do, every record is under the final key category_id:course_id:user_id")
        return
    table = Table("what", "count", title=title)
    table.add_row("records moved to category_id:course_id:user_id", str(report.moved))
    table.add_row("records merged into an existing new-key record", str(report.merged))
    table.add_row("  of which the old row had the later content", str(report.merged_kept_old_content))
    table.add_row("CHANGED alerts re-pointed", str(report.alerts_repointed))
    table.add_row("pending sheet messages re-pointed", str(report.sheet_messages_repointed))
    table.add_row("  of which superseded by a newer one", str(report.sheet_messages_superseded))
    for problem, count in report.left_by_problem().items():
        kind = "ambiguous" if problem in AMBIGUOUS else "cannot migrate"
        table.add_row(f"left untouched ({kind}: {problem})", str(count))
    table.add_row("CHANGED alerts still under an old key", str(report.alerts_left))
    table.add_row("pending sheet messages still under an old key", str(report.sheet_messages_left))
    console.print(table)
    if report.left:
        left = Table("source_type", "source_id", "problem", "detail", title="records left under the old key")
        for r in report.left:
            left.add_row(r.source_type, r.source_id, r.problem, r.detail)
        console.print(left)
    if report.nothing_to_do:
        console.print("nothing to do: what is left needs a person (fix the rows above, then run again)")


def migrate_keys_command(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Report only; change nothing.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Re-key records stored under the old termId:userId key to termId:courseId:userId (idempotent)."""
    from .runtime import command_settings, prepare_database

    console = plain_console()
    err_console = plain_console(stderr=True)
    settings = command_settings()
    try:
        target = db.parse_target(prepare_database(settings))
        try:
            with psycopg.connect(target.conninfo, **target.connect_kwargs()) as conn:
                report = migrate_keys(conn, dry_run=dry_run)
        except psycopg.Error as exc:
            raise DatabaseError(f"cannot connect to the database: {exc}") from exc
    except EnrolmentSyncError as exc:
        print_error(err_console, exc)
        raise typer.Exit(1) from exc
    if as_json:
        console.print_json(json.dumps(report.as_dict(), ensure_ascii=False))
    else:
        render(report, console)
