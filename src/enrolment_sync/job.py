"""One sync job under the lease: begin the run, keep the lease, run the engine, finish, raise or resolve alerts.

Shared by the API and the CLI. The SQL is the store's; the HTTP answer is api.py's.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from dataclasses import dataclass, field
from typing import Any

import psycopg
import structlog

from . import db
from .alerts import failed_alert
from .clock import Clock, SystemClock
from .config import JOB_NAME, Settings
from .errors import DatabaseError, EnrolmentSyncError, LeaseLost, LockConflict, RunAbandoned, RunCancelled
from .failures import Classified, classify_exception
from .kvca.factory import ClientFactory, client_from_settings
from .retrying import Backoff
from .staleness import check_staleness, stale_key
from .store import alerts, runs
from .sync import Progress, SyncEngine, SyncRequest, SyncSummary
from .worker_id import new_worker_id

log = structlog.get_logger(__name__)
LOCK_POLL_FIRST_S = 0.05  # a request waiting for the lease looks again after this, doubling up to the max
LOCK_POLL_MAX_S = 1.0

# Closing a run is retried this often (about 6 s in all): long enough for a dropped connection or a failover
# blip, short enough that the caller still gets its answer.
FINISH_ATTEMPTS = 6
FINISH_BACKOFF = Backoff(base_s=0.2, max_s=3.0)


@dataclass
class JobOutcome:
    ok: bool
    run_id: int
    summary: SyncSummary = field(default_factory=SyncSummary)
    failure: Classified | None = None


class SyncJob:
    """Executes the enrolment sync under the job lease. One instance per worker process."""

    def __init__(
        self,
        database: db.Database,
        settings: Settings,
        *,
        clock: Clock | None = None,
        worker_id: str | None = None,
        client_factory: ClientFactory = client_from_settings,
        job_name: str = JOB_NAME,
    ) -> None:
        self.db = database
        self.settings = settings
        self.clock = clock or SystemClock()
        self.worker_id = worker_id or new_worker_id()
        self.client_factory = client_factory
        self.job_name = job_name
        self.lease = runs.Lease(job_name, self.worker_id, settings.job_lock_ttl_seconds)

    async def execute(
        self, request: SyncRequest, *, progress: Progress | None = None, lock_wait_s: float = 0
    ) -> JobOutcome:
        """Run the sync; with `lock_wait_s`, wait up to that long for a held lease before failing as a conflict."""
        outcome = await self._execute(request, progress, lock_wait_s)
        if not outcome.ok:
            # Staleness is judged after the request, never before it: a check before the run raised a STALE
            # alert that the same run's success resolved, and it was paged all the same (issue 10.2).
            await check_staleness(
                self.db, self.settings, self.clock, category_id=request.category_id, job_name=self.job_name
            )
        return outcome

    async def _execute(self, request: SyncRequest, progress: Progress | None, lock_wait_s: float) -> JobOutcome:
        run_id, conflict = await self._begin_waiting(request, lock_wait_s)
        if conflict is not None:
            log.info("lock conflict", run_id=run_id, error=conflict.message)
            return JobOutcome(False, run_id, failure=conflict)
        log.info("run started", run_id=run_id, category_id=request.category_id, trigger_type=request.trigger_type)
        return await self._execute_under_lease(run_id, request, progress)

    async def _begin_waiting(self, request: SyncRequest, wait_s: float) -> tuple[int, Classified | None]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        pause_s = LOCK_POLL_FIRST_S
        while True:
            begun = await self._begin(request, record_conflict=loop.time() >= deadline)
            if begun is not None:
                return begun
            await asyncio.sleep(max(0.0, min(pause_s, deadline - loop.time())))
            pause_s = min(pause_s * 2, LOCK_POLL_MAX_S)

    async def _begin(
        self, request: SyncRequest, *, record_conflict: bool = True
    ) -> tuple[int, Classified | None] | None:
        """Take the lease and open the run in one transaction: a lock conflict's FAILED run and its FAILED
        alert are written together or not at all. Returns (run_id, the conflict's failure or None), or None
        when the lease is held and the conflict is not to be recorded yet."""
        now = self.clock.now()
        params = {"max_categories": request.max_categories, "max_users_per_course": request.max_users_per_course}
        async with self.db.transaction() as conn:
            begun = await self.lease.begin(
                conn,
                trigger_type=request.trigger_type,
                category_id=request.category_id,
                params=params,
                now=now,
                request_id=request.request_id,
                retry_of_run_id=request.retry_of_run_id,
                record_conflict=record_conflict,
            )
            if begun is None:
                return None
            if begun.taken_over is not None:
                closed_by = f"run_id={begun.run_id} taking over the expired lease"
                await self._close_abandoned(conn, run_id=begun.taken_over, closed_by=closed_by, now=now)
            if begun.conflict is None:
                return begun.run_id, None
            failure = classify_exception(LockConflict(begun.conflict))
            await self._raise_failed_counted(conn, begun.run_id, request.category_id, failure, now=now)
        return begun.run_id, failure

    async def _fence(self, conn: psycopg.AsyncConnection[Any], run_id: int) -> None:
        """Inside a write transaction: prove we still hold the lease, and keep it from being taken."""
        if not await self.lease.renew(conn, run_id):
            raise LeaseLost(f"run_id={run_id} lost the job lease (it expired and was taken over); stopped writing")

    async def _keep_lease(self, run_id: int, engine_task: asyncio.Task[Any], lost: asyncio.Event) -> None:
        interval = max(0.05, self.settings.job_lock_ttl_seconds / 3)
        while True:
            await asyncio.sleep(interval)
            try:
                async with self.db.transaction() as conn:
                    held = await self.lease.renew(conn, run_id)
            except psycopg.Error as exc:
                log.warning("lease renewal failed, will retry", run_id=run_id, error=str(exc))
                continue
            if not held:
                lost.set()
                engine_task.cancel(f"run_id={run_id} lost the job lease")
                return

    async def _execute_under_lease(self, run_id: int, request: SyncRequest, progress: Progress | None) -> JobOutcome:
        client = self.client_factory(self.settings)
        engine = SyncEngine(
            self.db,
            client,
            run_id=run_id,
            clock=self.clock,
            cooldown_minutes=self.settings.alert_cooldown_minutes,
            fence=lambda conn: self._fence(conn, run_id),
            progress=progress,
            mass_change_share=self.settings.mass_change_share,
            mass_change_min_rows=self.settings.mass_change_min_rows,
        )
        engine_task = asyncio.create_task(engine.sync_categories(request))
        lost = asyncio.Event()
        keeper = asyncio.create_task(self._keep_lease(run_id, engine_task, lost))
        failure: Classified | None = None
        try:
            await engine_task
        except asyncio.CancelledError:
            engine.summary.count_requests(client.stats.requests, client.stats.by_status)
            if not lost.is_set():
                # Cancelled from outside (shutdown): close the run and free the lease, then propagate.
                stop = classify_exception(
                    RunCancelled("run cancelled before it finished (worker shutdown, or the caller went away)")
                )
                await asyncio.shield(self._finish(run_id, request, engine.summary, stop))
                raise
            failure = classify_exception(LeaseLost(f"run_id={run_id} lost the job lease; stopped writing"))
        except EnrolmentSyncError as exc:
            failure = classify_exception(exc)
        except Exception as exc:
            log.exception("run crashed", run_id=run_id)
            failure = classify_exception(exc)
        finally:
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper
            await client.aclose()
        engine.summary.count_requests(client.stats.requests, client.stats.by_status)
        return await self._finish(run_id, request, engine.summary, failure)

    async def _finish(
        self, run_id: int, request: SyncRequest, summary: SyncSummary, failure: Classified | None
    ) -> JobOutcome:
        """Close the run with its alerts, retrying a failed attempt (closing is idempotent); the lease is given
        back on every path, so a database hiccup at the end never strands a run or blocks the next one."""
        now = self.clock.now()
        counts = {
            "total_records": summary.source_records_upserted,
            "new_records": summary.new_records,
            "changed_records": summary.changed_records,
            "created_alerts": summary.created_alerts,
        }
        for attempt in range(1, FINISH_ATTEMPTS + 1):
            try:
                async with self.db.transaction() as conn:
                    finished = await self.lease.finish(
                        conn, run_id, counts=counts, summary=summary.full(), failure=failure, now=now
                    )
                    if finished is runs.Finished.CLOSED:
                        if failure is not None:
                            await self._raise_failed_counted(conn, run_id, request.category_id, failure, now=now)
                        else:
                            await self._resolve_on_success(conn, run_id, request, now=now)
                break
            except psycopg.Error as exc:
                log.warning(
                    "closing the run failed, will retry" if attempt < FINISH_ATTEMPTS else "closing the run failed",
                    run_id=run_id,
                    attempt=attempt,
                    error_type=type(exc).__name__,
                )
                if attempt == FINISH_ATTEMPTS:
                    await self._give_back_lease(run_id)
                    raise DatabaseError(
                        f"run_id={run_id} could not be recorded as finished ({type(exc).__name__}, "
                        f"{FINISH_ATTEMPTS} attempts); its lease was given back"
                    ) from exc
                await asyncio.sleep(FINISH_BACKOFF.delay_s(attempt))
        if finished is runs.Finished.BY_OTHER:
            # Our lease lapsed and another worker closed this run as abandoned (with its alert).
            lost = classify_exception(
                LeaseLost(f"run_id={run_id} was closed as abandoned by another worker: its lease lapsed")
            )
            log.warning("run was closed by another worker", run_id=run_id)
            return JobOutcome(False, run_id, summary, lost)
        if failure is not None:
            log.warning("run failed", run_id=run_id, error_group=str(failure.group), error=failure.message)
        else:
            log.info("run succeeded", run_id=run_id, **summary.public())
        return JobOutcome(failure is None, run_id, summary, failure)

    async def _give_back_lease(self, run_id: int) -> None:
        """Last resort after closing failed: free the lease now rather than at its TTL (best effort)."""
        try:
            async with self.db.transaction() as conn:
                await self.lease.release(conn, run_id)
        except psycopg.Error as exc:
            log.error(
                "could not give the lease back; it expires by itself", run_id=run_id, error_type=type(exc).__name__
            )

    async def _resolve_on_success(
        self, conn: psycopg.AsyncConnection[Any], run_id: int, request: SyncRequest, *, now: dt.datetime
    ) -> None:
        """A success resolves the FAILED alerts only this category kept open (others record that it
        recovered), and the category's STALE alert."""
        by = f"run_id={run_id} (SUCCESS, category {request.category_id})"
        failed = await alerts.resolve_failed(
            conn, self.job_name, category_id=request.category_id, run_id=run_id, by=by, now=now
        )
        resolved = failed.resolved
        resolved += await alerts.resolve_stale(conn, stale_key(self.job_name, request.category_id), by=by, now=now)
        if resolved or failed.narrowed:
            log.info("alerts resolved by success", run_id=run_id, alert_ids=resolved, still_open=failed.narrowed)

    async def _raise_failed(
        self,
        conn: psycopg.AsyncConnection[Any],
        run_id: int,
        category_id: int | None,
        failure: Classified,
        *,
        now: dt.datetime,
    ) -> int:
        """The FAILED alert of a run (cooldown applies); returns how many were created (0 or 1)."""
        raised = await alerts.raise_alerts(
            conn,
            "FAILED",
            [failed_alert(self.job_name, failure, run_id=run_id, category_id=category_id)],
            run_id=run_id,
            now=now,
            cooldown_minutes=self.settings.alert_cooldown_minutes,
            serialise=True,
        )
        return len(raised.created)

    async def _raise_failed_counted(
        self,
        conn: psycopg.AsyncConnection[Any],
        run_id: int,
        category_id: int | None,
        failure: Classified,
        *,
        now: dt.datetime,
    ) -> None:
        """A created FAILED alert of a run closed by this worker is counted on it."""
        if await self._raise_failed(conn, run_id, category_id, failure, now=now):
            await runs.count_alerts(conn, run_id, 1, now=now)

    async def close_abandoned(self) -> list[int]:
        """Close RUNNING runs of this job that no live lease vouches for (their worker died)."""
        async with self.db.transaction() as conn:
            return await self._close_abandoned(
                conn, run_id=None, closed_by=f"worker {self.worker_id} at its start", now=self.clock.now()
            )

    async def _close_abandoned(
        self, conn: psycopg.AsyncConnection[Any], *, run_id: int | None, closed_by: str, now: dt.datetime
    ) -> list[int]:
        """Each dead run ends FAILED (UNKNOWN, saying it was abandoned) with its FAILED alert, like any failure."""
        dead = await self.lease.abandoned(conn, run_id=run_id)
        for run in dead:
            failure = classify_exception(
                RunAbandoned(
                    f"abandoned: the worker {run.worker_id or '?'} stopped without closing run_id={run.run_id}"
                    f" (its lease expired; closed by {closed_by})"
                )
            )
            created = await self._raise_failed(conn, run.run_id, run.category_id, failure, now=now)
            await runs.close_abandoned(conn, run.run_id, error_message=failure.message, created_alerts=created, now=now)
            log.warning("abandoned run closed", dead_run_id=run.run_id, closed_by=closed_by)
        return [run.run_id for run in dead]
