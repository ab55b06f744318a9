"""Staleness: a category whose last successful run is older than STALE_AFTER_HOURS raises a STALE alert."""

from __future__ import annotations

import datetime as dt
from typing import Any

from . import db
from .alerts import AlertSpec
from .clock import Clock
from .config import JOB_NAME, Settings
from .failures import Severity
from .store import alerts, runs


def stale_key(job_name: str, category_id: int) -> str:
    return f"{job_name}:category:{category_id}"


def is_stale(
    last_success_at: dt.datetime | None, first_started_at: dt.datetime | None, now: dt.datetime, after_h: float
) -> bool:
    """Stale when the last success (or, never having succeeded, the first attempt) is older than the limit."""
    since = last_success_at or first_started_at
    return since is not None and now - since > dt.timedelta(hours=after_h)


def stale_alert(job_name: str, category_id: int, last_success_at: dt.datetime | None, after_h: float) -> AlertSpec:
    when = last_success_at.isoformat(timespec="seconds") if last_success_at else "never"
    message = (
        f"동기화 지연: category {category_id} 의 마지막 성공 실행이 {after_h:g}시간보다 오래됨 (last success: {when})"
    )
    detail = {
        "category_id": category_id,
        "last_success_at": last_success_at.isoformat() if last_success_at else None,
        "stale_after_hours": after_h,
        "job_name": job_name,
    }
    return AlertSpec("category", stale_key(job_name, category_id), Severity.HIGH, message, detail)


async def check_staleness(
    database: db.Database,
    settings: Settings,
    clock: Clock,
    *,
    category_id: int | None = None,
    job_name: str = JOB_NAME,
    skip_categories: frozenset[int] = frozenset(),
) -> list[dict[str, Any]]:
    """Raise STALE alerts (once per cooldown) and return the stale categories (`skip_categories` aside)."""
    now = clock.now()
    async with database.transaction() as conn:
        seen = await runs.category_history(conn, job_name, category_id)
        stale = [
            c
            for c in seen
            if c.category_id not in skip_categories
            and is_stale(c.last_success_at, c.first_started_at, now, settings.stale_after_hours)
        ]
        specs = [stale_alert(job_name, c.category_id, c.last_success_at, settings.stale_after_hours) for c in stale]
        raised = await alerts.raise_alerts(
            conn,
            "STALE",
            specs,
            run_id=None,
            now=now,
            cooldown_minutes=settings.alert_cooldown_minutes,
            serialise=True,
        )
    created = {source_id for source_id, _ in raised.created}
    return [
        {
            "category_id": c.category_id,
            "last_success_at": c.last_success_at,
            "alert_created": stale_key(job_name, c.category_id) in created,
        }
        for c in stale
    ]
