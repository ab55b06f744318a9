"""Schedules and sync requests in the database (I/O): the functions the CLI, the API, the loop and the console
call. Each takes a connection, so a caller can put several in one transaction."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import psycopg

from .. import db
from ..config import JOB_NAME
from ..errors import ConfigError
from ..store import alerts
from ..sync import TriggerType
from .alert_texts import paused_key
from .policy import request_state
from .slots import DEFAULT_TIMEZONE, ScheduleSpec, check_cron, kst, next_slot, zone

TRIGGERS = ("MANUAL", "SCHEDULER", "RETRY")


class ScheduleNotFound(LookupError):
    pass


@dataclass(frozen=True)
class ScheduleView:
    """One schedule as people and the console see it."""

    row: dict[str, Any]
    spec: ScheduleSpec
    next_slot_at: dt.datetime | None  # None while paused

    @property
    def id(self) -> int:
        return int(self.row["id"])

    def as_json(self) -> dict[str, Any]:
        r = self.row
        return {
            "id": self.id,
            "category_id": r["category_id"],
            "max_categories": r["max_categories"],
            "max_users_per_course": r["max_users_per_course"],
            "rule": self.spec.describe(),
            "cron": r["cron_expr"],
            "timezone": r["timezone"] if r["cron_expr"] else None,
            "every_seconds": r["every_seconds"],
            "enabled": r["enabled"],
            "paused_reason": r["paused_reason"],
            "paused_auto": r["paused_auto"],
            "next_slot_at": _iso(self.next_slot_at),
            "next_slot_kst": kst(self.next_slot_at) if self.next_slot_at else None,
            "last_slot_at": _iso(r["last_slot_at"]),
            "last_run": None
            if r["last_run_id"] is None
            else {
                "run_id": r["last_run_id"],
                "status": r["last_run_status"],
                "trigger_type": r["last_run_trigger"],
                "error_group": r["last_run_error_group"],
                "finished_at": _iso(r["last_run_finished_at"]),
            },
            "last_success_at": _iso(r["last_success_at"]),
        }


def _iso(moment: dt.datetime | None) -> str | None:
    return moment.isoformat() if moment else None


def spec_of(row: dict[str, Any]) -> ScheduleSpec:
    return ScheduleSpec(
        anchor=row["created_at"],
        cron=row["cron_expr"],
        timezone=row["timezone"],
        every_s=row["every_seconds"],
    )


async def add_schedule(
    conn: psycopg.AsyncConnection[Any],
    *,
    category_id: int,
    cron: str | None = None,
    timezone: str = DEFAULT_TIMEZONE,
    every_s: float | None = None,
    max_categories: int = 1,
    max_users_per_course: int = 500,
) -> int:
    """A new schedule (cron in a time zone, or a fixed interval); returns its id. Bad rules are named."""
    if category_id <= 0:
        raise ConfigError(f"category_id must be a positive integer, not {category_id}")
    if (cron is None) == (every_s is None):
        raise ConfigError("give either a cron expression (--cron) or an interval (--every), not both")
    if cron is not None:
        cron = check_cron(cron)
        zone(timezone)
    if every_s is not None and every_s < 1:
        raise ConfigError(f"an interval must be at least 1s, not {every_s:g}s")
    row = await db.fetch_one(
        conn,
        "schedule_insert",
        {
            "category_id": category_id,
            "max_categories": max_categories,
            "max_users_per_course": max_users_per_course,
            "cron_expr": cron,
            "timezone": timezone,
            "every_seconds": every_s,
        },
    )
    assert row is not None
    return int(row["id"])


async def list_schedules(
    conn: psycopg.AsyncConnection[Any], *, schedule_id: int | None = None, job_name: str = JOB_NAME
) -> list[ScheduleView]:
    """Every schedule with its next slot (by the database's clock), last fired slot and latest run."""
    rows = await db.fetch_all(conn, "schedule_list", {"schedule_id": schedule_id, "job_name": job_name})
    views = []
    for row in rows:
        spec = spec_of(row)
        upcoming = next_slot(spec, max(row["db_now"], row["enabled_since"])) if row["enabled"] else None
        views.append(ScheduleView(row, spec, upcoming))
    return views


async def pause_schedule(
    conn: psycopg.AsyncConnection[Any], schedule_id: int, *, reason: str = "paused by hand"
) -> bool:
    """Pause by hand; False when it was already paused. ScheduleNotFound for an unknown id."""
    if await db.fetch_one(conn, "schedule_pause", {"schedule_id": schedule_id, "reason": reason}):
        return True
    await _must_exist(conn, schedule_id)
    return False


async def resume_schedule(conn: psycopg.AsyncConnection[Any], schedule_id: int) -> bool:
    """Resume (slots of the paused time are skipped; its category's pause alert is resolved); False when it
    was not paused."""
    resumed = await db.fetch_one(conn, "schedule_resume", {"schedule_id": schedule_id})
    if resumed:
        await alerts.resolve_paused(conn, paused_key(resumed["category_id"]), by=f"schedule {schedule_id} resumed")
        return True
    await _must_exist(conn, schedule_id)
    return False


async def remove_schedule(conn: psycopg.AsyncConnection[Any], schedule_id: int) -> None:
    if await db.fetch_one(conn, "schedule_delete", {"schedule_id": schedule_id}) is None:
        raise ScheduleNotFound(f"no schedule with id {schedule_id}")


async def _must_exist(conn: psycopg.AsyncConnection[Any], schedule_id: int) -> None:
    if await db.fetch_one(conn, "schedule_exists", {"schedule_id": schedule_id}) is None:
        raise ScheduleNotFound(f"no schedule with id {schedule_id}")


async def create_request(
    conn: psycopg.AsyncConnection[Any],
    *,
    category_id: int,
    trigger_type: TriggerType = "MANUAL",
    max_categories: int = 1,
    max_users_per_course: int = 500,
    not_before: dt.datetime | None = None,
    retry_of_run_id: int | None = None,
    retry_number: int = 0,
    schedule_id: int | None = None,
    requested_by: str | None = None,
) -> int:
    """Queue a sync request (or count it on the same one already queued); returns the request id."""
    if trigger_type not in TRIGGERS:
        raise ConfigError(f"trigger_type must be MANUAL, SCHEDULER or RETRY, not {trigger_type!r}")
    row = await db.fetch_one(
        conn,
        "request_create",
        {
            "category_id": category_id,
            "trigger_type": trigger_type,
            "max_categories": max_categories,
            "max_users_per_course": max_users_per_course,
            "not_before": not_before,
            "retry_of_run_id": retry_of_run_id,
            "retry_number": retry_number,
            "schedule_id": schedule_id,
            "requested_by": requested_by,
        },
    )
    assert row is not None
    return int(row["id"])


async def get_request(conn: psycopg.AsyncConnection[Any], request_id: int) -> dict[str, Any] | None:
    """A request as GET /jobs/requests/{id} answers it: state, run_id, and once finished the run's answer."""
    row = await db.fetch_one(conn, "request_get", {"request_id": request_id})
    if row is None:
        return None
    result = row["result"]
    state = request_state(row["status"], None if result is None else bool(result.get("ok")))
    answer: dict[str, Any] = {
        "request_id": row["id"],
        "state": state,
        "run_id": row["run_id"],
        "category_id": row["category_id"],
        "trigger_type": row["trigger_type"],
        "max_categories": row["max_categories"],
        "max_users_per_course": row["max_users_per_course"],
        "coalesced": row["coalesced"],
        "retry_of_run_id": row["retry_of_run_id"],
        "schedule_id": row["schedule_id"],
        "queued_at": _iso(row["created_at"]),
        "not_before": _iso(row["next_attempt_at"]) if row["status"] == "PENDING" else None,
        "finished_at": _iso(row["processed_at"] or (row["updated_at"] if row["status"] == "DEAD" else None)),
    }
    if result is not None:
        answer["http_status"] = row["http_status"]
        answer["result"] = result
    elif row["status"] == "DEAD":
        answer["result"] = {"ok": False, "run_id": row["run_id"], "error": row["last_error"] or "request failed"}
    return answer
