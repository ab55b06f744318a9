"""The scheduler's tick (I/O): fire due slots once across processes, watch each schedule's freshness, resume
schedules a manual success cleared, resolve recovered alerts, and beat the heartbeat."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import structlog
from psycopg.types.json import Jsonb

from .. import db
from ..clock import SystemClock
from ..config import JOB_NAME, Settings
from ..staleness import check_staleness
from ..store import alerts
from . import store
from .alert_texts import stale_slot_alert
from .policy import stale_slot
from .slots import ScheduleSpec, due_slot, next_slot

log = structlog.get_logger(__name__)
STALENESS_EVERY_S = 300.0  # how often the loop applies STALE_AFTER_HOURS to unscheduled categories
WAKE_MARGIN_S = 0.005  # wake just after a slot, so the database's clock has passed it


@dataclass
class LoopState:
    """What the heartbeat carries and what the loop writes when it stops."""

    ticks: int = 0
    slots_fired: int = 0
    stale_alerts: int = 0
    last_tick_at: str | None = None
    last_error: str | None = None
    stopped: bool = False


class SchedulerLoop:
    """One per process; any number of processes may run it against one database."""

    def __init__(
        self,
        database: db.Database,
        settings: Settings,
        *,
        worker_id: str,
        on_request: Callable[[], None] | None = None,
    ) -> None:
        self.db = database
        self.settings = settings
        self.worker_id = worker_id
        self.on_request = on_request
        self.state = LoopState()
        self.last_beat_monotonic: float | None = None
        self._staleness_checked_at: float | None = None

    async def tick(self) -> float:
        """One pass; returns how long to sleep before the next (until the next slot, at most one tick)."""
        async with self.db.transaction() as conn:
            schedules = await db.fetch_all(conn, "schedules_due", {"job_name": JOB_NAME})
        wait_s = self.settings.scheduler_tick_seconds
        for row in schedules:
            spec = store.spec_of(row)
            now = row["db_now"]
            slot = due_slot(spec, now, max(row["last_slot_at"] or row["enabled_since"], row["enabled_since"]))
            if slot is not None:
                await self._fire(row, slot)
            await self._watch(row, spec, now)
            wait_s = min(wait_s, (next_slot(spec, now) - now).total_seconds() + WAKE_MARGIN_S)
        async with self.db.transaction() as conn:
            resumed = await db.fetch_all(conn, "schedules_resume_after_manual_success", {"job_name": JOB_NAME})
            resolved = await alerts.resolve_recovered(conn, JOB_NAME)
        if resumed:
            log.info("schedules resumed by a manual success", schedule_ids=[r["id"] for r in resumed])
        if resolved:
            log.info("alerts resolved by a success", alert_ids=resolved)
        await self._check_unscheduled()
        self.state.ticks += 1
        return max(wait_s, 0.0)

    async def _check_unscheduled(self) -> None:
        """STALE_AFTER_HOURS for categories without an enabled schedule, every few minutes."""
        now = asyncio.get_running_loop().time()
        if self._staleness_checked_at is not None and now - self._staleness_checked_at < STALENESS_EVERY_S:
            return
        self._staleness_checked_at = now
        async with self.db.transaction() as conn:
            scheduled = frozenset(r["category_id"] for r in await db.fetch_all(conn, "schedules_enabled_categories"))
        await check_staleness(self.db, self.settings, SystemClock(), skip_categories=scheduled)

    async def _fire(self, row: dict[str, Any], slot: dt.datetime) -> None:
        async with self.db.transaction() as conn:
            params = {"schedule_id": row["id"], "slot_at": slot, "fired_by": self.worker_id}
            if await db.fetch_one(conn, "slot_claim", params) is None:
                return  # another process fired it
            request_id = await store.create_request(
                conn,
                category_id=row["category_id"],
                trigger_type="SCHEDULER",
                max_categories=row["max_categories"],
                max_users_per_course=row["max_users_per_course"],
                schedule_id=row["id"],
                requested_by=f"schedule {row['id']} slot {slot.isoformat()}",
            )
            await db.execute(conn, "slot_fired", {**params, "request_id": request_id})
        self.state.slots_fired += 1
        log.info("slot fired", schedule_id=row["id"], slot_at=slot.isoformat(), request_id=request_id)
        if self.on_request is not None:
            self.on_request()

    async def _watch(self, row: dict[str, Any], spec: ScheduleSpec, now: dt.datetime) -> None:
        grace_min = self.settings.schedule_grace_minutes
        slot = stale_slot(
            spec,
            now,
            grace_s=grace_min * 60,
            watched_since=row["enabled_since"],
            last_success_at=row["last_success_at"],
            alerted_slot=row["stale_slot_at"],
        )
        if slot is None:
            return
        async with self.db.transaction() as conn:
            if await db.fetch_one(conn, "schedule_stale_slot", {"schedule_id": row["id"], "slot_at": slot}) is None:
                return  # another process alerted for this slot
            await alerts.raise_alerts(
                conn,
                "STALE",
                [stale_slot_alert(row, spec, slot, grace_min)],
                run_id=None,
                now=now,
                cooldown_minutes=self.settings.alert_cooldown_minutes,
                serialise=True,
            )
        self.state.stale_alerts += 1
        log.warning("schedule slot stale", schedule_id=row["id"], slot_at=slot.isoformat())

    async def beat(self, extra: dict[str, Any]) -> None:
        async with self.db.transaction() as conn:
            await db.fetch_one(
                conn, "heartbeat_beat", {"worker_id": self.worker_id, "state": Jsonb({**asdict(self.state), **extra})}
            )
        self.last_beat_monotonic = asyncio.get_running_loop().time()

    async def run(self, stop: asyncio.Event, extra_state: Callable[[], dict[str, Any]] = dict) -> None:
        """Tick until `stop` is set; a failing tick is logged and retried. Writes the final state when stopped."""
        async with self.db.transaction() as conn:
            await db.execute(conn, "heartbeat_prune")
        try:
            while not stop.is_set():
                wait_s = self.settings.scheduler_tick_seconds
                try:
                    wait_s = await self.tick()
                    self.state.last_tick_at = dt.datetime.now(dt.UTC).isoformat()
                    self.state.last_error = None
                    await self.beat(extra_state())
                except Exception as exc:  # the database went away: keep trying, say so in the heartbeat
                    self.state.last_error = str(exc)[:500]
                    log.warning("scheduler tick failed, will retry", error=str(exc))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=wait_s)
        finally:
            self.state.stopped = True
            with contextlib.suppress(Exception):
                async with self.db.transaction() as conn:
                    await db.execute(
                        conn,
                        "heartbeat_stop",
                        {"worker_id": self.worker_id, "state": Jsonb({**asdict(self.state), **extra_state()})},
                    )
            log.info("scheduler stopped", **asdict(self.state))
