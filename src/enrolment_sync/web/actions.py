"""The console's actions. Each one is recorded in ops_audit (who, when, what, target, outcome), in the same
transaction as the change it makes; a refused one is recorded too (the refusal itself changes nothing)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import structlog

from ..alerts import SilenceSpec
from ..clock import Clock
from ..scheduler.store import ScheduleNotFound, create_request, pause_schedule, resume_schedule
from ..store import alerts
from ..sync import TriggerType
from .auth import Viewer
from .store import AuditEntry, ConsoleStore

log = structlog.get_logger(__name__)
REQUEUE_ALL_LIMIT = 500  # "re-queue all" takes the oldest this many dead messages per press


@dataclass(frozen=True)
class Outcome:
    """What happened, for the audit, the page's notice and a script's JSON answer."""

    outcome: str  # OK, NOOP, DENIED, FAILED
    notice: str  # a key of the notices the templates know
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.outcome in ("OK", "NOOP")


class Actions:
    def __init__(self, store: ConsoleStore, *, clock: Clock) -> None:
        self.store = store
        self.database = store.database
        self.clock = clock

    def _entry(self, viewer: Viewer, action: str, target: str, result: Outcome, remote: str | None) -> AuditEntry:
        return AuditEntry(viewer.name, str(viewer.role), action, target, result.outcome, result.detail, remote)

    async def deny(self, viewer: Viewer, action: str, target: str, reason: str, remote: str | None) -> Outcome:
        result = Outcome("DENIED", "denied", {"reason": reason})
        async with self.database.transaction() as conn:
            await self.store.record(conn, self._entry(viewer, action, target, result, remote))
        log.info("console action refused", actor=viewer.name, action=action, target=target)
        return result

    async def resolve_alert(self, viewer: Viewer, alert_id: int, remote: str | None) -> Outcome:
        target = f"alert:{alert_id}"
        async with self.database.transaction() as conn:
            row = await alerts.resolve_one(conn, alert_id, by=f"console:{viewer.name}", now=self.clock.now())
            if row is not None:
                result = Outcome("OK", "resolved", {"alert_type": row["alert_type"], "severity": row["severity"]})
            elif await alerts.get(conn, alert_id) is None:
                result = Outcome("FAILED", "no_alert", {"reason": "no such alert"})
            else:
                result = Outcome("NOOP", "already_resolved")
            await self.store.record(conn, self._entry(viewer, "resolve_alert", target, result, remote))
        log.info("console resolved alert", actor=viewer.name, alert_id=alert_id, outcome=result.outcome)
        return result

    async def acknowledge_alert(self, viewer: Viewer, alert_id: int, note: str | None, remote: str | None) -> Outcome:
        """Someone is on it: acknowledged_by = console:<name>, with the note; NOOP when resolved or acknowledged."""
        target = f"alert:{alert_id}"
        async with self.database.transaction() as conn:
            by = f"console:{viewer.name}"
            row = await alerts.acknowledge(conn, alert_id, by=by, note=note, now=self.clock.now())
            if row is not None:
                result = Outcome("OK", "acknowledged", {"note": note} if note else {})
            elif await alerts.get(conn, alert_id) is None:
                result = Outcome("FAILED", "no_alert", {"reason": "no such alert"})
            else:
                result = Outcome("NOOP", "not_acknowledgeable")
            await self.store.record(conn, self._entry(viewer, "acknowledge_alert", target, result, remote))
        log.info("console acknowledged alert", actor=viewer.name, alert_id=alert_id, outcome=result.outcome)
        return result

    async def add_silence(self, viewer: Viewer, spec: SilenceSpec, remote: str | None) -> Outcome:
        async with self.database.transaction() as conn:
            row = await alerts.add_silence(conn, spec, by=f"console:{viewer.name}", now=self.clock.now())
            detail = {k: v for k, v in spec.as_params().items() if k not in ("starts_at", "ends_at")}
            detail.update(
                silence_id=row["id"], starts_at=row["starts_at"].isoformat(), ends_at=row["ends_at"].isoformat()
            )
            result = Outcome("OK", "silence_added", detail)
            await self.store.record(conn, self._entry(viewer, "add_silence", "silences", result, remote))
        log.info("console added a silence", actor=viewer.name, silence_id=row["id"])
        return result

    async def remove_silence(self, viewer: Viewer, silence_id: int, remote: str | None) -> Outcome:
        async with self.database.transaction() as conn:
            removed = await alerts.remove_silence(conn, silence_id, by=f"console:{viewer.name}", now=self.clock.now())
            result = Outcome("OK", "silence_removed") if removed else Outcome("NOOP", "no_silence")
            result.detail["silence_id"] = silence_id
            await self.store.record(conn, self._entry(viewer, "remove_silence", "silences", result, remote))
        log.info("console removed a silence", actor=viewer.name, silence_id=silence_id, outcome=result.outcome)
        return result

    async def requeue(self, viewer: Viewer, queue: str, ids: list[int] | None, remote: str | None) -> Outcome:
        async with self.database.transaction() as conn:
            rows = await self.store.requeue(conn, queue, ids, limit=len(ids) if ids else REQUEUE_ALL_LIMIT)
            requeued = [int(r["id"]) for r in rows if not r["stale"]]
            superseded = [int(r["id"]) for r in rows if r["stale"]]
            detail = {"queue": queue, "asked": ids or "all", "requeued": requeued, "superseded": superseded}
            result = Outcome("OK" if rows else "NOOP", "requeued" if rows else "nothing_dead", detail)
            await self.store.record(conn, self._entry(viewer, "requeue_dead", "queues", result, remote))
        log.info("console re-queued dead messages", actor=viewer.name, queue=queue, count=len(requeued))
        return result

    async def set_schedule(self, viewer: Viewer, schedule_id: int, *, enable: bool, remote: str | None) -> Outcome:
        """Pause or resume a schedule; either is a NOOP when it is already so."""
        action = "resume_schedule" if enable else "pause_schedule"
        async with self.database.transaction() as conn:
            try:
                if enable:
                    changed = await resume_schedule(conn, schedule_id)
                else:
                    changed = await pause_schedule(
                        conn, schedule_id, reason=f"paused from the console by {viewer.name}"
                    )
                result = Outcome("OK" if changed else "NOOP", action if changed else "schedule_unchanged")
            except ScheduleNotFound:
                result = Outcome("FAILED", "no_schedule", {"reason": "no such schedule"})
            result.detail["schedule_id"] = schedule_id
            await self.store.record(conn, self._entry(viewer, action, "schedules", result, remote))
        log.info("console changed a schedule", actor=viewer.name, schedule_id=schedule_id, outcome=result.outcome)
        return result

    async def run_now(
        self,
        viewer: Viewer,
        category_id: int,
        trigger_type: TriggerType,
        remote: str | None,
        *,
        wake: Callable[[], None] | None,
    ) -> Outcome:
        """Queue a sync request for the cohort (one already waiting with the same parameters absorbs it). A
        process running requests takes it: this one when `wake` is given, else another `serve`."""
        async with self.database.transaction() as conn:
            request_id = await create_request(
                conn, category_id=category_id, trigger_type=trigger_type, requested_by=f"console:{viewer.name}"
            )
            notice = "run_queued" if wake is not None else "run_queued_elsewhere"
            result = Outcome("OK", notice, {"trigger_type": trigger_type, "request_id": request_id})
            await self.store.record(conn, self._entry(viewer, "run_now", f"category:{category_id}", result, remote))
        if wake is not None:
            wake()
        log.info("console queued a sync", actor=viewer.name, category_id=category_id, request_id=request_id)
        return result
