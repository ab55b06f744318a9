"""status_history as the sync writes it: the rows its diff built, in the records' transaction."""

from __future__ import annotations

import datetime as dt
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from .. import db


async def write(
    conn: psycopg.AsyncConnection[Any], rows: list[dict[str, Any]], *, run_id: int, now: dt.datetime
) -> None:
    """One statement for a course's rows; none at all when nothing changed (an unchanged re-sync)."""
    if rows:
        await db.execute(conn, "history_insert", {"rows": Jsonb(rows), "run_id": run_id, "now": now})
