"""Retention (docs/metrics.md#retention): `serve`'s always-on loop deletes old finished runs and old resolved
alerts, in bounded batches, each its own short transaction, so the database stops growing and no lock is
held long.

Also deleted: sync requests served (DONE) longer ago than their retention, through the queue's own
statement (`queue_prune_done`, which the outbox consumers use for DONE outbox messages: their housekeeping).
Never deleted: a RUNNING run, each category's latest run and latest success, a run an open alert points at,
an open alert, a record (source_record, status_history), a live queue message. The metrics' counters live in
their own tables and never go down.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass

import psycopg
import structlog

from . import db
from .config import JOB_NAME, Settings
from .queue import Queue, Statement
from .scheduler.runner import SYNC_REQUESTS

log = structlog.get_logger(__name__)
MAX_BATCHES_PER_ROUND = 50  # a round stops here and the next one carries on: no round runs unbounded
DAY_S = 86_400.0


@dataclass(frozen=True)
class RetentionPolicy:
    runs_keep_s: float
    failed_runs_keep_s: float
    resolved_alerts_keep_s: float
    done_requests_keep_s: float
    batch_rows: int
    interval_s: float

    @classmethod
    def from_settings(cls, settings: Settings) -> RetentionPolicy:
        return cls(
            runs_keep_s=settings.retention_runs_days * DAY_S,
            failed_runs_keep_s=max(settings.retention_failed_runs_days, settings.retention_runs_days) * DAY_S,
            resolved_alerts_keep_s=settings.retention_resolved_alerts_days * DAY_S,
            done_requests_keep_s=settings.retention_done_requests_days * DAY_S,
            batch_rows=settings.retention_batch_rows,
            interval_s=settings.retention_interval_seconds,
        )


@dataclass(frozen=True)
class Pruned:
    runs: int
    alerts: int
    requests: int


def _named(name: str, params: dict[str, object]) -> Callable[[int], Statement]:
    return lambda limit: Statement(db.query(name), {**params, "limit": limit})


async def _batches(database: db.Database, batch: Callable[[int], Statement], batch_rows: int) -> int:
    deleted = 0
    for _ in range(MAX_BATCHES_PER_ROUND):
        statement = batch(batch_rows)
        async with database.transaction() as conn:
            cur = await conn.execute(statement.query, statement.params)
            rows = await cur.fetchall()
        deleted += len(rows)
        if len(rows) < batch_rows:
            break
    return deleted


async def prune_once(database: db.Database, policy: RetentionPolicy, *, job_name: str = JOB_NAME) -> Pruned:
    """One round: runs, resolved alerts, served sync requests."""
    keep = {"job_name": job_name, "keep_s": policy.runs_keep_s, "failed_keep_s": policy.failed_runs_keep_s}
    requests = Queue(SYNC_REQUESTS)
    return Pruned(
        runs=await _batches(database, _named("retention_runs", keep), policy.batch_rows),
        alerts=await _batches(
            database, _named("retention_alerts", {"keep_s": policy.resolved_alerts_keep_s}), policy.batch_rows
        ),
        requests=await _batches(
            database,
            lambda limit: requests.prune_done(retention_s=policy.done_requests_keep_s, limit=limit),
            policy.batch_rows,
        ),
    )


class Pruner:
    """The retention loop of `serve`: a round at start, then one every interval; a failed round is logged and
    the next one tries again."""

    def __init__(self, database: db.Database, policy: RetentionPolicy) -> None:
        self.database = database
        self.policy = policy
        self.rounds = 0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self.policy.interval_s > 0:
            self._task = asyncio.create_task(self._loop(), name="retention")

    async def _loop(self) -> None:
        while True:
            try:
                pruned = await prune_once(self.database, self.policy)
            except (psycopg.Error, OSError) as exc:
                log.warning("retention round failed; the next round tries again", error=str(exc))
            else:
                if pruned.runs or pruned.alerts or pruned.requests:
                    log.info("retention pruned", runs=pruned.runs, alerts=pruned.alerts, requests=pruned.requests)
            self.rounds += 1
            await asyncio.sleep(self.policy.interval_s)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
