"""Raising and resolving alerts: the one place that does either.

An alert is raised once per key (alert_type, source_type, source_id); a repeat inside the cooldown, counted
from the open alert's created_at, is counted on that alert instead (`occurrences`): its message becomes the
repeat's, and `detail.repeats` keeps the newest REPEATS_KEPT repeats. Raisers that may run at the same time as
others for the same key (FAILED from lock conflicts, STALE, DEAD_LETTER) pass `serialise=True`: a
transaction-scoped advisory lock per key, after which the cooldown check sees the other's committed row. That
needs READ COMMITTED (a later snapshot per statement), which db.Database sets on every transaction explicitly:
under a database default of REPEATABLE READ the snapshot would predate the lock and both would create.

The lifecycle (docs/alerts.md): an alert an active silence matches is marked with it when raised; alerts
are acknowledged here; silences are added, listed and removed here. What is sent is the outbox's decision.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from .. import db
from ..alerts import AlertSpec, SilenceSpec
from ..redact import redact_json

REPEATS_KEPT = 20  # detail.repeats of an alert keeps this many of the newest repeats; occurrences counts all


@dataclass(frozen=True)
class Resolution:
    resolved: list[int]  # alerts resolved: every category they counted has succeeded since
    narrowed: list[int]  # alerts still open: the category left them, others still fail


@dataclass(frozen=True)
class Raised:
    created: list[tuple[str, int]]  # (source_id, alert id)
    suppressed: list[tuple[str, int]]


async def raise_alerts(
    conn: psycopg.AsyncConnection[Any],
    alert_type: str,
    specs: list[AlertSpec],
    *,
    run_id: int | None,
    now: dt.datetime,
    cooldown_minutes: float,
    serialise: bool = False,
) -> Raised:
    """Create alerts, or count repeats inside the cooldown on the open alert of the same key."""
    if not specs:
        return Raised([], [])
    if serialise:
        for key in sorted({f"{alert_type}:{s.source_type}:{s.source_id}" for s in specs}):
            await db.fetch_all(conn, "alerts_key_lock", {"key": key})
    rows = await db.fetch_all(
        conn,
        "alerts_raise",
        {
            "alerts": Jsonb([redact_json(s.as_json()) for s in specs]),
            "alert_type": alert_type,
            "run_id": run_id,
            "now": now,
            "cooldown_s": cooldown_minutes * 60,
            "repeats_kept": REPEATS_KEPT,
        },
    )
    await _mark_silenced(conn, [r["id"] for r in rows if r["created"]], now=now)
    return Raised(
        [(r["source_id"], r["id"]) for r in rows if r["created"]],
        [(r["source_id"], r["id"]) for r in rows if not r["created"]],
    )


async def resolve_failed(
    conn: psycopg.AsyncConnection[Any], job_name: str, *, category_id: int, run_id: int, by: str, now: dt.datetime
) -> Resolution:
    """A category succeeded: resolve the job's open FAILED alerts that only it kept open; the others record it."""
    rows = await db.fetch_all(
        conn,
        "alerts_resolve_failed",
        {"now": now, "resolved_by": by, "job_prefix": f"{job_name}:%", "category_id": category_id, "run_id": run_id},
    )
    return Resolution([int(r["id"]) for r in rows if r["resolved"]], [int(r["id"]) for r in rows if not r["resolved"]])


async def resolve_stale(conn: psycopg.AsyncConnection[Any], source_id: str, *, by: str, now: dt.datetime) -> list[int]:
    """Resolve the open STALE alert of one category key; returns its id (or nothing)."""
    rows = await db.fetch_all(conn, "alerts_resolve_stale", {"now": now, "resolved_by": by, "source_id": source_id})
    return [int(r["id"]) for r in rows]


async def resolve_one(
    conn: psycopg.AsyncConnection[Any], alert_id: int, *, by: str, now: dt.datetime
) -> dict[str, Any] | None:
    """Resolve one alert by hand; None when there is no open alert of that id."""
    return await db.fetch_one(conn, "alerts_resolve_one", {"alert_id": alert_id, "now": now, "resolved_by": by})


async def get(conn: psycopg.AsyncConnection[Any], alert_id: int) -> dict[str, Any] | None:
    return await db.fetch_one(conn, "alerts_get", {"alert_id": alert_id})


def listed(conn: psycopg.Connection[Any], *, include_resolved: bool, limit: int) -> list[dict[str, Any]]:
    """Alerts for the CLI, newest first (open ones only unless `include_resolved`)."""
    cur = conn.cursor(row_factory=dict_row)
    cur.execute(db.query("alerts_list"), {"include_resolved": include_resolved, "limit": limit})
    return cur.fetchall()


async def resolve_recovered(conn: psycopg.AsyncConnection[Any], job_name: str) -> list[int]:
    """Resolve the unattended worker's alerts (stale slots, exhausted retries, paused schedules) whose category
    has succeeded since the alert was last seen; returns their ids."""
    rows = await db.fetch_all(conn, "alerts_resolve_recovered", {"job_name": job_name})
    return [int(r["id"]) for r in rows]


async def resolve_paused(conn: psycopg.AsyncConnection[Any], source_id: str, *, by: str) -> list[int]:
    """Resolve a category's open "schedules paused" alert (a schedule of it was resumed by hand)."""
    rows = await db.fetch_all(conn, "alerts_resolve_paused", {"source_id": source_id, "resolved_by": by})
    return [int(r["id"]) for r in rows]


async def _mark_silenced(conn: psycopg.AsyncConnection[Any], ids: list[int], *, now: dt.datetime) -> None:
    if ids:
        await db.fetch_all(conn, "alerts_mark_silenced", {"ids": ids, "now": now})


async def acknowledge(
    conn: psycopg.AsyncConnection[Any], alert_id: int, *, by: str, note: str | None, now: dt.datetime
) -> dict[str, Any] | None:
    """Someone is on it; None when there is no open, unacknowledged alert of that id (see `get`)."""
    params = {"alert_id": alert_id, "by": by, "note": note, "now": now}
    return await db.fetch_one(conn, "alerts_acknowledge", params)


async def add_silence(
    conn: psycopg.AsyncConnection[Any], silence: SilenceSpec, *, by: str, now: dt.datetime
) -> dict[str, Any]:
    """Store a silence; alerts it matches are recorded as usual and never sent while it lasts."""
    row = await db.fetch_one(conn, "silence_insert", {**silence.as_params(), "by": by, "now": now})
    assert row is not None
    return row


async def silences(
    conn: psycopg.AsyncConnection[Any], *, now: dt.datetime, include_ended: bool = False, limit: int = 100
) -> list[dict[str, Any]]:
    """Silences not removed (current and future; ended ones too with `include_ended`), newest first."""
    params = {"now": now, "include_ended": include_ended, "limit": limit}
    return await db.fetch_all(conn, "silence_list", params)


async def remove_silence(conn: psycopg.AsyncConnection[Any], silence_id: int, *, by: str, now: dt.datetime) -> bool:
    """End a silence by hand; False when there is none of that id (or it was removed already)."""
    return await db.fetch_one(conn, "silence_remove", {"silence_id": silence_id, "by": by, "now": now}) is not None


async def raise_mass_change(
    conn: psycopg.AsyncConnection[Any],
    spec: AlertSpec,
    *,
    run_id: int,
    category_id: int,
    now: dt.datetime,
    cooldown_minutes: float,
) -> Raised:
    """One 대량 변경 alert for a cohort, and the run's per-learner CHANGED alerts of it folded into it."""
    raised = await raise_alerts(
        conn, "CHANGED", [spec], run_id=run_id, now=now, cooldown_minutes=cooldown_minutes, serialise=True
    )
    into = (raised.created or raised.suppressed)[0][1]
    params = {"run_id": run_id, "category_id": category_id, "into_id": into, "now": now}
    await db.fetch_all(conn, "mass_change_fold", params)
    return raised
