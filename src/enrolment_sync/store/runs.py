"""The job lease (job_lock) and run_log: begin, renew, finish, close abandoned, and history per category.

A lease is one job_lock row per job name, held by one worker for one run until `lock_expires_at`; expiry
is judged by the database's clock (`now()`), never the worker's. Every write of a run renews the lease in
its own transaction first (the fence), so a run whose lease was taken over cannot write beside the new one.
"""

from __future__ import annotations

import datetime as dt
import enum
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from .. import db
from ..failures import Classified, ErrorGroup
from ..redact import redact


@dataclass(frozen=True)
class Begun:
    run_id: int
    conflict: str | None  # the lock conflict's text (the run was logged FAILED), or None: the lease is ours
    taken_over: int | None  # the run whose expired lease we took, to be closed as abandoned


@dataclass(frozen=True)
class AbandonedRun:
    run_id: int
    worker_id: str | None
    category_id: int | None


class Finished(enum.Enum):
    CLOSED = "closed"  # this call closed the run and gave the lease back
    ALREADY = "already"  # an earlier attempt of ours had closed it (its commit's answer was lost)
    BY_OTHER = "by_other"  # another worker closed it as abandoned: our lease had lapsed


@dataclass(frozen=True)
class CategoryHistory:
    category_id: int
    last_success_at: dt.datetime | None
    first_started_at: dt.datetime | None


@dataclass(frozen=True)
class Lease:
    """Who holds (or wants) a job's lease, and for how long each renewal extends it."""

    job_name: str
    worker_id: str
    ttl_s: float

    def _params(self, run_id: int | None = None) -> dict[str, Any]:
        return {"job_name": self.job_name, "locked_by": self.worker_id, "run_id": run_id, "ttl_s": self.ttl_s}

    async def begin(
        self,
        conn: psycopg.AsyncConnection[Any],
        *,
        trigger_type: str,
        category_id: int,
        params: dict[str, Any],
        now: dt.datetime,
        request_id: int | None = None,
        retry_of_run_id: int | None = None,
        record_conflict: bool = True,
    ) -> Begun | None:
        """Take the lease (free, or expired) and open the run; a live lease held by another logs a FAILED run.

        None, and nothing written, when the lease is held and `record_conflict` is off (a caller that waits).
        """
        held = await db.fetch_one(conn, "lock_select_for_update", {"job_name": self.job_name})
        conflict: str | None = None
        taken_over: int | None = None
        if held is None:
            if await db.fetch_one(conn, "lock_insert", self._params()) is None:
                conflict = f"job_lock active: {self.job_name} was just taken by another worker"
        elif not held["expired"]:
            conflict = (
                f"job_lock active: {self.job_name} is held by {held['locked_by']} "
                f"(run_id={held['run_id']}) until {held['lock_expires_at'].isoformat()}"
            )
        else:
            await db.fetch_one(conn, "lock_take_over", self._params())
            taken_over = held["run_id"]
        if conflict and not record_conflict:
            return None
        row = await db.fetch_one(
            conn,
            "run_insert",
            {
                "job_name": self.job_name,
                "trigger_type": trigger_type,
                "status": "FAILED" if conflict else "RUNNING",
                "category_id": category_id,
                "params": Jsonb(params),
                "worker_id": self.worker_id,
                "now": now,
                "error_message": conflict,
                "error_group": ErrorGroup.LOCK_CONFLICT.value if conflict else None,
                "finished_at": now if conflict else None,
                "request_id": request_id,
                "retry_of_run_id": retry_of_run_id,
            },
        )
        assert row is not None
        run_id = int(row["id"])
        if conflict is None:
            await db.execute(conn, "run_set_lock_owner", self._params(run_id))
        return Begun(run_id, conflict, taken_over)

    async def renew(self, conn: psycopg.AsyncConnection[Any], run_id: int) -> bool:
        """Extend our live lease; False when it was lost (it expired, and may have been taken over)."""
        return await db.fetch_one(conn, "lock_renew", self._params(run_id)) is not None

    async def finish(
        self,
        conn: psycopg.AsyncConnection[Any],
        run_id: int,
        *,
        counts: dict[str, int],
        summary: dict[str, Any],
        failure: Classified | None,
        now: dt.datetime,
    ) -> Finished:
        """Close the run (SUCCESS, or FAILED with its failure) and give the lease back.

        `counts`: total_records, new_records, changed_records, created_alerts. Idempotent, so a caller may
        repeat it after a lost answer: a run already closed with exactly these values (status, time, text) was
        closed by an earlier attempt of this call.
        """
        status = "FAILED" if failure else "SUCCESS"
        error_message = redact(failure.message) if failure else None
        closed = await db.fetch_one(
            conn,
            "run_finish",
            {
                "run_id": run_id,
                "status": status,
                **counts,
                "summary": Jsonb(summary),
                "error_message": error_message,
                "error_group": str(failure.group) if failure else None,
                "http_status_code": failure.http_status_code if failure else None,
                "now": now,
            },
        )
        await db.execute(conn, "lock_release", self._params(run_id))
        if closed is not None:
            return Finished.CLOSED
        row = await db.fetch_one(conn, "run_state", {"run_id": run_id})
        ours = row is not None and (row["status"], row["finished_at"], row["error_message"]) == (
            status,
            now,
            error_message,
        )
        return Finished.ALREADY if ours else Finished.BY_OTHER

    async def release(self, conn: psycopg.AsyncConnection[Any], run_id: int) -> None:
        """Give our lease back without closing the run (the last resort when closing it keeps failing)."""
        await db.execute(conn, "lock_release", self._params(run_id))

    async def abandoned(self, conn: psycopg.AsyncConnection[Any], *, run_id: int | None) -> list[AbandonedRun]:
        """RUNNING runs of the job that no live lease vouches for (one of them when `run_id`), locked."""
        rows = await db.fetch_all(conn, "run_abandoned", {"job_name": self.job_name, "run_id": run_id})
        return [AbandonedRun(int(r["id"]), r["worker_id"], r["category_id"]) for r in rows]


async def count_alerts(conn: psycopg.AsyncConnection[Any], run_id: int, count: int, *, now: dt.datetime) -> None:
    """Count alerts created for a run after it was closed (a lock conflict's FAILED alert)."""
    await db.execute(conn, "run_add_alerts", {"run_id": run_id, "count": count, "now": now})


async def close_abandoned(
    conn: psycopg.AsyncConnection[Any], run_id: int, *, error_message: str, created_alerts: int, now: dt.datetime
) -> None:
    """Close one abandoned run as FAILED (UNKNOWN), counting its FAILED alert if one was created."""
    params = {"run_id": run_id, "error_message": redact(error_message), "created_alerts": created_alerts, "now": now}
    await db.execute(conn, "run_close_abandoned", params)


async def category_history(
    conn: psycopg.AsyncConnection[Any], job_name: str, category_id: int | None = None
) -> list[CategoryHistory]:
    """The last success and first attempt of one category (or of every category the job ever ran for).

    Index probes per category (run_log grows by a row per request; the check runs before each one).
    """
    if category_id is not None:
        rows = await db.fetch_all(conn, "run_category_history", {"job_name": job_name, "category_id": category_id})
        rows = [r for r in rows if r["first_started_at"] is not None]
    else:
        rows = await db.fetch_all(conn, "run_categories_history", {"job_name": job_name})
    return [CategoryHistory(r["category_id"], r["last_success_at"], r["first_started_at"]) for r in rows]
