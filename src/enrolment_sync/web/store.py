"""The console's reads and writes: the only place that pairs sql/console.sql with arguments."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from .. import db
from ..config import JOB_NAME
from ..scheduler.store import list_schedules
from ..store import alerts
from . import present
from .present import AlertFilter, Page, RunFilter

Row = dict[str, Any]


@dataclass(frozen=True)
class AuditEntry:
    actor: str
    role: str
    action: str
    target: str
    outcome: str  # OK, NOOP, DENIED, FAILED
    detail: dict[str, Any]
    remote_addr: str | None


class ConsoleStore:
    def __init__(self, database: db.Database, *, job_name: str = JOB_NAME) -> None:
        self.database = database
        self.job_name = job_name

    async def _all(self, name: str, params: dict[str, Any] | None = None) -> list[Row]:
        async with self.database.connection() as conn:
            return await db.fetch_all(conn, name, params)

    async def _one(self, name: str, params: dict[str, Any] | None = None) -> Row | None:
        async with self.database.connection() as conn:
            return await db.fetch_one(conn, name, params)

    async def overview(self) -> dict[str, Any]:
        async with self.database.connection() as conn:
            cohorts = await db.fetch_all(conn, "console_cohorts", {"job_name": self.job_name})
            by_cohort = await db.fetch_all(conn, "console_open_alerts_by_cohort")
            schedules = await list_schedules(conn, job_name=self.job_name)
            next_slots = present.next_slots((v.row["category_id"], v.next_slot_at) for v in schedules)
            return {
                "cohorts": present.cohort_lines(cohorts, by_cohort, next_slots),
                "unassigned_open": present.unassigned_open_alerts(cohorts, by_cohort),
                "open_by_severity": present.distribution(
                    await db.fetch_all(conn, "console_open_alerts_by_severity"), "alert_type"
                ),
                "open_high": await db.fetch_all(conn, "console_open_high"),
                "locks": await db.fetch_all(conn, "console_lock"),
                "queues": await db.fetch_all(conn, "console_queue_health"),
            }

    async def runs(self, where: RunFilter) -> Page:
        params = {**where.query(), "limit": present.PAGE_SIZE + 1}
        for key in ("status", "trigger_type", "category_id", "before_id"):
            params.setdefault(key, None)
        return present.page(await self._all("console_runs", params))

    async def run_detail(self, run_id: int) -> dict[str, Any] | None:
        async with self.database.connection() as conn:
            run = await db.fetch_one(conn, "console_run", {"run_id": run_id})
            if run is None:
                return None
            by_run = {"run_id": run_id}
            chart_runs: list[Row] = []
            neighbours: list[Row] = []
            if run["category_id"] is not None:
                cohort = {"category_id": run["category_id"]}
                chart_runs = await db.fetch_all(conn, "console_cohort_recent_runs", {**cohort, "limit": 50})
                neighbours = await db.fetch_all(conn, "console_run_neighbours", {**cohort, **by_run})
            return {
                "run": run,
                "chain": await db.fetch_all(conn, "console_retry_chain", by_run),
                "alerts": await db.fetch_all(conn, "console_run_alerts", by_run),
                "neighbours": neighbours,
                "sheet_counts": await db.fetch_all(conn, "console_run_sheet_counts", by_run),
                "sheet_rows": await db.fetch_all(conn, "console_run_sheet_rows", by_run),
                "notifications": await db.fetch_all(conn, "console_run_notifications", by_run),
                "chart": present.run_chart(chart_runs),
            }

    async def alerts(self, where: AlertFilter) -> dict[str, Any]:
        async with self.database.connection() as conn:
            paging = {"before_id": where.before_id, "limit": present.PAGE_SIZE + 1}
            if where.show_all:
                listed = await db.fetch_all(conn, "console_alerts_recent", paging)
            else:
                listed = await db.fetch_all(
                    conn, "console_alerts_open", {**paging, "alert_type": where.alert_type, "severity": where.severity}
                )
            return {
                "page": present.page(listed),
                "distribution": present.distribution(
                    await db.fetch_all(conn, "console_alert_distribution"), "alert_type"
                ),
                "failed_groups": present.distribution(await db.fetch_all(conn, "console_failed_groups"), "error_group"),
                "failed": await db.fetch_all(conn, "console_failed_alerts"),
            }

    async def alert_detail(self, alert_id: int) -> dict[str, Any] | None:
        async with self.database.connection() as conn:
            alert = await db.fetch_one(conn, "console_alert", {"alert_id": alert_id})
            if alert is None:
                return None
            audit = await db.fetch_all(conn, "console_audit_for_target", {"target": f"alert:{alert_id}"})
            return {"alert": alert, "audit": audit}

    async def records(self, category_id: int, q: str | None) -> list[Row]:
        search = present.learner_query(q)
        cohort = {"category_id": category_id}
        if search is None:
            return await self._all("console_records_sample", cohort)
        kind, value = search
        if kind == "course":
            return await self._all("console_records_by_course", {**cohort, "course_id": value})
        return await self._all("console_records_by_user_prefix", {**cohort, "prefix": present.like_prefix(str(value))})

    async def learner(self, category_id: int, user_id: str) -> dict[str, Any]:
        async with self.database.connection() as conn:
            records = await db.fetch_all(
                conn, "console_learner_records", {"category_id": category_id, "user_id": user_id}
            )
            keys = sorted({r["source_id"] for r in records if r["source_type"] == "enrolment_status"})
            changes = await db.fetch_all(conn, "console_learner_changes", {"source_ids": keys}) if keys else []
            return {"records": records, "changes": changes}

    async def queues(self, *, before_sheet: int | None, before_notification: int | None) -> dict[str, Any]:
        async with self.database.connection() as conn:
            size = present.PAGE_SIZE + 1
            sheet = await db.fetch_all(conn, "console_dead_sheet", {"before_id": before_sheet, "limit": size})
            notes = await db.fetch_all(
                conn, "console_dead_notification", {"before_id": before_notification, "limit": size}
            )
            return {
                "health": await db.fetch_all(conn, "console_queue_health"),
                "dead": {"sheet": present.page(sheet), "notification": present.page(notes)},
                "audit": await db.fetch_all(conn, "console_audit_for_target", {"target": "queues"}),
            }

    async def schedules(self) -> dict[str, Any]:
        async with self.database.connection() as conn:
            views = await list_schedules(conn, job_name=self.job_name)
            slots = await db.fetch_all(conn, "console_schedule_slots")
            return {
                "schedules": present.schedule_lines(
                    [{**v.row, "rule": v.spec.describe(), "next_slot_at": v.next_slot_at} for v in views], slots
                ),
                "requests": await db.fetch_all(conn, "console_requests_open"),
                "audit": await db.fetch_all(conn, "console_audit_for_target", {"target": "schedules"}),
            }

    async def silences(self, now: dt.datetime) -> dict[str, Any]:
        """Silences not removed, current, future and recently ended, with the console's actions on them."""
        async with self.database.connection() as conn:
            return {
                "silences": await alerts.silences(conn, now=now, include_ended=True),
                "audit": await db.fetch_all(conn, "console_audit_for_target", {"target": "silences"}),
            }

    async def audit(self, before_id: int | None) -> Page:
        return present.page(await self._all("console_audit", {"before_id": before_id, "limit": present.PAGE_SIZE + 1}))

    # Writes: each runs inside the caller's transaction, beside its audit entry.

    @staticmethod
    async def record(conn: psycopg.AsyncConnection[Any], entry: AuditEntry) -> None:
        await db.fetch_one(
            conn,
            "console_audit_record",
            {
                "actor": entry.actor,
                "role": entry.role,
                "action": entry.action,
                "target": entry.target,
                "outcome": entry.outcome,
                "detail": Jsonb(entry.detail),
                "remote_addr": entry.remote_addr,
            },
        )

    @staticmethod
    async def requeue(
        conn: psycopg.AsyncConnection[Any], queue: str, ids: list[int] | None, *, limit: int
    ) -> list[Row]:
        name = "console_requeue_sheet" if queue == "sheet_outbox" else "console_requeue_notification"
        return await db.fetch_all(conn, name, {"ids": ids, "limit": limit})
