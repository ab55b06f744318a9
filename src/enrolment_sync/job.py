"""One sync job run: lease + run_log + engine + failure path + recovery. Shared by the API and the CLI."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import socket
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psycopg
import structlog
from psycopg.types.json import Jsonb

from . import db
from .alerts import failed_alert, raise_alerts
from .clock import Clock, SystemClock
from .config import JOB_NAME, Settings
from .errors import EnrolmentSyncError, LeaseLost, LockConflict, RunAbandoned, RunCancelled
from .failures import HTTP_STATUS_BY_GROUP, Classified, ErrorGroup, classify_exception
from .kvca.client import KvcaClient
from .staleness import check_staleness, stale_key
from .sync import Progress, SyncEngine, SyncRequest, SyncSummary

log = structlog.get_logger(__name__)


def new_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


@dataclass
class JobOutcome:
    ok: bool
    run_id: int
    summary: SyncSummary = field(default_factory=SyncSummary)
    failure: Classified | None = None

    @property
    def http_status(self) -> int:
        return 200 if self.failure is None else HTTP_STATUS_BY_GROUP[self.failure.group]

    def body(self) -> dict[str, Any]:
        if self.ok:
            return {
                "ok": True,
                "run_id": self.run_id,
                "summary": self.summary.public(),
                "report": _report(self.summary),
            }
        assert self.failure is not None
        return {
            "ok": False,
            "run_id": self.run_id,
            "error_group": str(self.failure.group),
            "http_status_code": self.failure.http_status_code,
            "error": self.failure.message,
            "summary": self.summary.public(),
        }


def _report(s: SyncSummary) -> dict[str, Any]:
    return {
        "records_written": s.records_written,
        "suppressed_alerts": s.suppressed_alerts,
        "details_skipped": s.details_skipped_count,
        "capped_courses": s.capped_courses,
        "vanished_records": s.vanished_count,
        "upstream_requests": s.upstream_requests,
    }


ClientFactory = Callable[[Settings], KvcaClient]


def default_client(settings: Settings) -> KvcaClient:
    return KvcaClient(
        base_url=settings.kvca_base_url,
        client_id=settings.kvca_client_id,
        client_secret=settings.kvca_client_secret.get_secret_value(),
        timeout_s=settings.kvca_timeout_seconds,
        max_concurrency=settings.kvca_max_concurrency,
        retries=settings.kvca_retries,
        backoff_base_s=settings.kvca_backoff_base_seconds,
        backoff_max_s=settings.kvca_backoff_max_seconds,
        page_size=settings.kvca_page_size,
    )


class JobRunner:
    """Runs the enrolment sync under the job lease. One instance per worker process."""

    def __init__(
        self,
        database: db.Database,
        settings: Settings,
        *,
        clock: Clock | None = None,
        worker_id: str | None = None,
        client_factory: ClientFactory = default_client,
        job_name: str = JOB_NAME,
    ) -> None:
        self.db = database
        self.settings = settings
        self.clock = clock or SystemClock()
        self.worker_id = worker_id or new_worker_id()
        self.client_factory = client_factory
        self.job_name = job_name

    # -- lease ------------------------------------------------------------------------------

    def _lease_params(self, run_id: int | None = None) -> dict[str, Any]:
        return {
            "job_name": self.job_name,
            "locked_by": self.worker_id,
            "run_id": run_id,
            "ttl_s": self.settings.lock_ttl_s,
        }

    async def _begin(self, request: SyncRequest) -> tuple[int, str | None]:
        """Take the lease and open the run in one transaction. Returns (run_id, conflict text or None)."""
        now = self.clock.now()
        params = {"max_categories": request.max_categories, "max_users_per_course": request.max_users_per_course}
        async with self.db.transaction() as conn:
            held = await db.fetch_one(conn, "lock_select_for_update", {"job_name": self.job_name})
            conflict: str | None = None
            taken_over: int | None = None
            if held is None:
                got = await db.fetch_one(conn, "lock_insert", self._lease_params())
                if got is None:
                    conflict = f"job_lock active: {self.job_name} was just taken by another worker"
            elif not held["expired"]:
                conflict = (
                    f"job_lock active: {self.job_name} is held by {held['locked_by']} "
                    f"(run_id={held['run_id']}) until {held['lock_expires_at'].isoformat()}"
                )
            else:
                await db.fetch_one(conn, "lock_take_over", self._lease_params())
                taken_over = held["run_id"]
            row = await db.fetch_one(
                conn,
                "run_insert",
                {
                    "job_name": self.job_name,
                    "trigger_type": request.trigger_type,
                    "status": "FAILED" if conflict else "RUNNING",
                    "category_id": request.category_id,
                    "params": Jsonb(params),
                    "worker_id": self.worker_id,
                    "now": now,
                    "error_message": conflict,
                    "error_group": ErrorGroup.LOCK_CONFLICT.value if conflict else None,
                    "finished_at": now if conflict else None,
                },
            )
            assert row is not None
            run_id = int(row["id"])
            if conflict is None:
                await db.execute(conn, "run_set_lock_owner", {**self._lease_params(run_id)})
                if taken_over is not None:
                    await self._close_abandoned(
                        conn, run_id=taken_over, closed_by=f"run_id={run_id} taking over the expired lease", now=now
                    )
        return run_id, conflict

    async def _fence(self, conn: psycopg.AsyncConnection[Any], run_id: int) -> None:
        """Inside a write transaction: prove we still hold the lease, and keep it from being taken."""
        row = await db.fetch_one(conn, "lock_renew", self._lease_params(run_id))
        if row is None:
            raise LeaseLost(f"run_id={run_id} lost the job lease (it expired and was taken over); stopped writing")

    async def _keep_lease(self, run_id: int, engine_task: asyncio.Task[Any], lost: asyncio.Event) -> None:
        interval = max(0.05, self.settings.lock_ttl_s / 3)
        while True:
            await asyncio.sleep(interval)
            try:
                async with self.db.transaction() as conn:
                    row = await db.fetch_one(conn, "lock_renew", self._lease_params(run_id))
            except psycopg.Error as exc:
                log.warning("lease renewal failed, will retry", run_id=run_id, error=str(exc))
                continue
            if row is None:
                lost.set()
                engine_task.cancel(f"run_id={run_id} lost the job lease")
                return

    # -- the run ----------------------------------------------------------------------------

    async def run(self, request: SyncRequest, *, progress: Progress | None = None) -> JobOutcome:
        await check_staleness(
            self.db, self.settings, self.clock, category_id=request.category_id, job_name=self.job_name
        )
        run_id, conflict = await self._begin(request)
        if conflict is not None:
            failure = classify_exception(LockConflict(conflict))
            async with self.db.transaction() as conn:
                await self._raise_failed(conn, run_id, failure, now=self.clock.now())
            log.info("lock conflict", run_id=run_id, error=conflict)
            return JobOutcome(False, run_id, failure=failure)
        log.info("run started", run_id=run_id, category_id=request.category_id, trigger_type=request.trigger_type)
        return await self._run_with_lease(run_id, request, progress)

    async def _run_with_lease(self, run_id: int, request: SyncRequest, progress: Progress | None) -> JobOutcome:
        client = self.client_factory(self.settings)
        engine = SyncEngine(
            self.db,
            client,
            run_id=run_id,
            clock=self.clock,
            cooldown_s=self.settings.cooldown_s,
            fence=lambda conn: self._fence(conn, run_id),
            progress=progress,
        )
        engine_task = asyncio.create_task(engine.run(request))
        lost = asyncio.Event()
        keeper = asyncio.create_task(self._keep_lease(run_id, engine_task, lost))
        failure: Classified | None = None
        try:
            await engine_task
        except asyncio.CancelledError:
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
        return await self._finish(run_id, request, engine.summary, failure)

    async def _finish(
        self, run_id: int, request: SyncRequest, summary: SyncSummary, failure: Classified | None
    ) -> JobOutcome:
        now = self.clock.now()
        async with self.db.transaction() as conn:
            closed = await db.fetch_one(
                conn,
                "run_finish",
                {
                    "run_id": run_id,
                    "status": "FAILED" if failure else "SUCCESS",
                    "total_records": summary.source_records_upserted,
                    "new_records": summary.new_records,
                    "changed_records": summary.changed_records,
                    "created_alerts": summary.created_alerts,
                    "summary": Jsonb(summary.full()),
                    "error_message": failure.message if failure else None,
                    "error_group": str(failure.group) if failure else None,
                    "http_status_code": failure.http_status_code if failure else None,
                    "now": now,
                },
            )
            await db.execute(conn, "lock_release", self._lease_params(run_id))
            if closed is None:
                # Our lease lapsed and another worker closed this run as abandoned (with its alert).
                lost = classify_exception(
                    LeaseLost(f"run_id={run_id} was closed as abandoned by another worker: its lease lapsed")
                )
                log.warning("run was closed by another worker", run_id=run_id)
                return JobOutcome(False, run_id, summary, lost)
            if failure is not None:
                await self._raise_failed(conn, run_id, failure, now=now)
            else:
                await self._resolve_on_success(conn, run_id, request, now=now)
        if failure is not None:
            log.warning("run failed", run_id=run_id, error_group=str(failure.group), error=failure.message)
        else:
            log.info("run succeeded", run_id=run_id, **summary.public())
        return JobOutcome(failure is None, run_id, summary, failure)

    async def _resolve_on_success(
        self, conn: psycopg.AsyncConnection[Any], run_id: int, request: SyncRequest, *, now: dt.datetime
    ) -> None:
        """The first success after failures resolves the job's FAILED alerts and the category's STALE alert."""
        by = f"run_id={run_id} (SUCCESS)"
        resolved = await db.fetch_all(
            conn, "alerts_resolve_failed", {"now": now, "resolved_by": by, "job_prefix": f"{self.job_name}:%"}
        )
        resolved += await db.fetch_all(
            conn,
            "alerts_resolve_stale",
            {"now": now, "resolved_by": by, "source_id": stale_key(self.job_name, request.category_id)},
        )
        if resolved:
            log.info("alerts resolved by success", run_id=run_id, alert_ids=[r["id"] for r in resolved])

    async def _raise_failed(
        self, conn: psycopg.AsyncConnection[Any], run_id: int, failure: Classified, *, now: dt.datetime
    ) -> None:
        """The FAILED alert of a run (cooldown applies); a created one is counted on the run."""
        raised = await raise_alerts(
            conn,
            "FAILED",
            [failed_alert(self.job_name, failure, run_id=run_id)],
            run_id=run_id,
            now=now,
            cooldown_s=self.settings.cooldown_s,
            serialise=True,
        )
        if raised.created:
            await db.execute(conn, "run_add_alerts", {"run_id": run_id, "count": 1, "now": now})

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
        dead = await db.fetch_all(conn, "run_abandoned", {"job_name": self.job_name, "run_id": run_id})
        for row in dead:
            failure = classify_exception(
                RunAbandoned(
                    f"abandoned: the worker {row['worker_id'] or '?'} stopped without closing run_id={row['id']}"
                    f" (its lease expired; closed by {closed_by})"
                )
            )
            raised = await raise_alerts(
                conn,
                "FAILED",
                [failed_alert(self.job_name, failure, run_id=row["id"])],
                run_id=row["id"],
                now=now,
                cooldown_s=self.settings.cooldown_s,
                serialise=True,
            )
            await db.execute(
                conn,
                "run_close_abandoned",
                {
                    "run_id": row["id"],
                    "error_message": failure.message,
                    "created_alerts": len(raised.created),
                    "now": now,
                },
            )
            log.warning("abandoned run closed", dead_run_id=row["id"], closed_by=closed_by)
        return [int(r["id"]) for r in dead]
