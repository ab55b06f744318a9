"""The request runner (I/O): claim a sync request from the queue, run it once through the sync job (same lease,
same run_log), store its answer, and act on the outcome: a RETRY request, the end of a retry series, or the
pause of a category's schedules after repeated failures."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import structlog
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from .. import db
from ..alerts import AlertSpec
from ..config import JOB_NAME, Settings
from ..job import JobOutcome, SyncJob
from ..queue import Queue, QueueSpec, announce_dead
from ..store import alerts
from ..sync import SyncRequest
from . import store
from .alert_texts import exhausted_alert, paused_alert
from .policy import consecutive_failures, decide_retry, should_pause

log = structlog.get_logger(__name__)

SYNC_REQUESTS = QueueSpec(
    table="sync_request",
    columns=(
        "category_id",
        "trigger_type",
        "max_categories",
        "max_users_per_course",
        "retry_of_run_id",
        "retry_number",
        "schedule_id",
    ),
    dead_group="category_id",
    dead_label="category {}",
    dead_group_is_category=True,
)
Answer = Callable[[JobOutcome], tuple[int, dict[str, Any]]]


@dataclass
class RunnerState:
    requests_run: int = 0
    retries_queued: int = 0
    current_request_id: int | None = None
    last_error: str | None = None


class RequestRunner:
    """Runs sync requests one at a time; any number of runners may share the queue."""

    def __init__(self, database: db.Database, settings: Settings, job: SyncJob, *, answer: Answer) -> None:
        self.db = database
        self.settings = settings
        self.job = job
        self.answer = answer
        self.queue = Queue(SYNC_REQUESTS)
        self.consumer = job.worker_id
        self.wake = asyncio.Event()
        self.state = RunnerState()

    async def run(self, stop: asyncio.Event) -> None:
        """Claim and run requests until `stop`; a request cut short by the stop goes back to the queue."""
        while not stop.is_set():
            ran = False
            try:
                ran = await self.run_one()
                self.state.last_error = None
            except Exception as exc:
                self.state.last_error = str(exc)[:500]
                log.warning("request runner failed, will retry", error=str(exc))
            if ran:
                continue
            self.wake.clear()
            with contextlib.suppress(TimeoutError):
                waiting = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(self.wake.wait())]
                try:
                    await asyncio.wait_for(
                        asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED),
                        timeout=self.settings.request_poll_interval_seconds,
                    )
                finally:
                    for task in waiting:
                        task.cancel()

    async def run_one(self) -> bool:
        """Claim one ready request and run it; False when none was ready."""
        max_attempts = self.settings.request_max_attempts
        async with self.db.connection() as conn:
            await conn.execute(*self.queue.park_expired(max_attempts=max_attempts))
            await announce_dead(
                conn, self.queue, cooldown_minutes=self.settings.alert_cooldown_minutes, max_attempts=max_attempts
            )
            cur = conn.cursor(row_factory=dict_row)
            claimed = await (
                await cur.execute(
                    *self.queue.claim(
                        consumer=self.consumer,
                        lease_s=self.settings.request_lease_seconds,
                        batch=1,
                        max_attempts=max_attempts,
                    )
                )
            ).fetchall()
        if not claimed:
            return False
        request = claimed[0]
        self.state.current_request_id = request["id"]
        try:
            await self._run_claimed(request)
        finally:
            self.state.current_request_id = None
        return True

    async def _run_claimed(self, request: dict[str, Any]) -> None:
        sync_request = SyncRequest(
            category_id=request["category_id"],
            trigger_type=request["trigger_type"],
            max_categories=request["max_categories"],
            max_users_per_course=request["max_users_per_course"],
            request_id=request["id"],
            retry_of_run_id=request["retry_of_run_id"],
        )
        log.info("request claimed", request_id=request["id"], category_id=request["category_id"])
        keeper = asyncio.create_task(self._keep_claim(request["id"]))
        try:
            outcome = await self.job.execute(sync_request, lock_wait_s=self.settings.request_lock_wait_seconds)
        except asyncio.CancelledError:
            async with self.db.connection() as conn:
                await asyncio.shield(conn.execute(*self.queue.release([request["id"]], consumer=self.consumer)))
            raise
        finally:
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper
        await self._finish(request, outcome)

    async def _keep_claim(self, request_id: int) -> None:
        lease_s = self.settings.request_lease_seconds
        while True:
            await asyncio.sleep(lease_s / 3)
            try:
                async with self.db.connection() as conn:
                    await conn.execute(*self.queue.renew([request_id], consumer=self.consumer, lease_s=lease_s))
            except Exception as exc:
                log.warning("request lease renewal failed, will retry", request_id=request_id, error=str(exc))

    async def _finish(self, request: dict[str, Any], outcome: JobOutcome) -> None:
        """The answer, the queue's done, and the retry / exhaustion / pause decisions, in one transaction."""
        status, body = self.answer(outcome)
        group = outcome.failure.group if outcome.failure else None
        decision = decide_retry(group, request["retry_number"], self.settings.retry_delays_s)
        async with self.db.transaction() as conn:
            now = await _db_now(conn)
            await db.fetch_one(
                conn,
                "request_finish",
                {
                    "request_id": request["id"],
                    "consumer": self.consumer,
                    "run_id": outcome.run_id,
                    "http_status": status,
                    "result": Jsonb(body),
                },
            )
            await conn.execute(*self.queue.done([request["id"]], consumer=self.consumer))
            specs: list[AlertSpec] = []
            paused = await self._pause_if_failing(conn, request, outcome, specs) if outcome.failure else False
            if decision.retry and not paused:
                assert decision.delay_s is not None
                await store.create_request(
                    conn,
                    category_id=request["category_id"],
                    trigger_type="RETRY",
                    max_categories=request["max_categories"],
                    max_users_per_course=request["max_users_per_course"],
                    not_before=now + dt.timedelta(seconds=decision.delay_s),
                    retry_of_run_id=outcome.run_id,
                    retry_number=request["retry_number"] + 1,
                    schedule_id=request["schedule_id"],
                    requested_by=f"retry of run {outcome.run_id}",
                )
                self.state.retries_queued += 1
            elif decision.exhausted:
                specs.append(exhausted_alert(request, outcome, request["retry_number"] + 1))
            for spec in specs:
                await alerts.raise_alerts(
                    conn,
                    "FAILED",
                    [spec],
                    run_id=outcome.run_id,
                    now=now,
                    cooldown_minutes=self.settings.alert_cooldown_minutes,
                    serialise=True,
                )
        self.state.requests_run += 1
        log.info(
            "request done",
            request_id=request["id"],
            run_id=outcome.run_id,
            ok=outcome.ok,
            retry_in_s=decision.delay_s if decision.retry else None,
            retries_exhausted=decision.exhausted,
        )

    async def _pause_if_failing(
        self, conn: Any, request: dict[str, Any], outcome: JobOutcome, specs: list[AlertSpec]
    ) -> bool:
        pause_after = self.settings.schedule_pause_after_failures
        recent = await db.fetch_all(
            conn,
            "category_recent_runs",
            {"job_name": JOB_NAME, "category_id": request["category_id"], "limit": max(pause_after, 1) * 4},
        )
        failures = consecutive_failures([(r["status"], r["error_group"]) for r in recent])
        if not should_pause(failures, pause_after):
            return False
        reason = f"자동 일시정지: 연속 {failures}번 실패 (run {outcome.run_id})"
        paused = await db.fetch_all(
            conn, "schedules_pause_category", {"category_id": request["category_id"], "reason": reason}
        )
        if paused:
            ids = [int(r["id"]) for r in paused]
            specs.append(paused_alert(request["category_id"], ids, failures, outcome))
            log.warning("schedules paused after repeated failures", category_id=request["category_id"], ids=ids)
        return True

    def status(self) -> dict[str, Any]:
        return asdict(self.state)


async def _db_now(conn: Any) -> dt.datetime:
    row = await db.fetch_one(conn, "queue_now")
    assert row is not None
    return row["now"]
