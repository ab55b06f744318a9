"""source_record as the sync reads and writes it, and the sheet rows queued in the same transaction."""

from __future__ import annotations

import datetime as dt
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from .. import db
from ..records import Incoming, Stored

# The columns records_of_course returns for the diff's Stored.fields, as the upstream wrote them.
_STORED_FIELDS = ("status", "status_msg", "gc_date", "sjc_date", "update_time")


async def of_course(
    conn: psycopg.AsyncConnection[Any], category_id: int, course_id: int
) -> dict[tuple[str, str], Stored]:
    """The course's records stored under the final key, by (source_type, source_id)."""
    rows = await db.fetch_all(conn, "records_of_course", {"category_id": category_id, "course_id": course_id})
    return {
        (r["source_type"], r["source_id"]): Stored(r["content_hash"], r["missing"], {k: r[k] for k in _STORED_FIELDS})
        for r in rows
    }


async def upsert(conn: psycopg.AsyncConnection[Any], records: list[Incoming], *, run_id: int, now: dt.datetime) -> None:
    """Write new and changed records in one statement (an unchanged row is never rewritten)."""
    if records:
        rows = Jsonb([r.as_row() for r in records])
        await db.execute(conn, "records_upsert", {"rows": rows, "run_id": run_id, "now": now})


async def mark_missing(
    conn: psycopg.AsyncConnection[Any],
    category_id: int,
    course_id: int,
    source_ids: list[str],
    *,
    run_id: int,
    now: dt.datetime,
) -> None:
    """Mark (never delete) the records of learners who left a course; their status records get MISSING history."""
    if source_ids:
        params = {
            "category_id": category_id,
            "course_id": course_id,
            "source_ids": source_ids,
            "run_id": run_id,
            "now": now,
        }
        await db.execute(conn, "records_mark_missing", params)


async def count_present(conn: psycopg.AsyncConnection[Any], category_id: int) -> int:
    """How many records of the category are stored and not marked missing."""
    row = await db.fetch_one(conn, "records_present_in_category", {"category_id": category_id})
    return int(row["n"]) if row else 0


async def mark_missing_outside(
    conn: psycopg.AsyncConnection[Any], category_id: int, course_ids: list[int], *, run_id: int, now: dt.datetime
) -> list[str]:
    """Mark the records of courses no longer listed in their category (status records get MISSING history);
    returns one source_id per row marked."""
    params = {"category_id": category_id, "course_ids": course_ids, "run_id": run_id, "now": now}
    return [r["source_id"] for r in await db.fetch_all(conn, "records_mark_missing_outside", params)]


async def queue_sheet_rows(
    conn: psycopg.AsyncConnection[Any], rows: list[dict[str, Any]], *, run_id: int, now: dt.datetime
) -> None:
    """Queue sheet messages (category_id, source_id, payload) beside the records they describe."""
    if rows:
        await db.execute(conn, "sheet_enqueue", {"rows": Jsonb(rows), "run_id": run_id, "now": now})
