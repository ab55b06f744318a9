"""The sync engine: category -> courses -> status rows -> details -> diff -> upsert -> alerts -> outbox.

Each course is fetched completely, then stored in one transaction (all or nothing). Unchanged records are
never written. The engine knows nothing of run_log or leases beyond the fence it is handed.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import psycopg

from . import db
from .alert_policy import is_mass_change
from .alerts import changed_alert, mass_change_alert
from .clock import Clock
from .errors import UpstreamDataError
from .history import history_rows
from .kvca.client import KvcaClient
from .records import DETAIL, STATUS, Incoming, diff
from .store import alerts, records, status_history
from .sync_fetch import UPSTREAM_DATA, Fetched, Rejected, all_or_first_error, empty_course_list_alert, fetch_course

__all__ = ["UPSTREAM_DATA", "Progress", "Rejected", "SyncEngine", "SyncRequest", "SyncSummary", "TriggerType"]

TriggerType = Literal["MANUAL", "SCHEDULER", "RETRY"]
MAX_LISTED = 50  # how many skipped/vanished keys a summary lists before it only counts

Fence = Callable[[psycopg.AsyncConnection[Any]], Awaitable[None]]
Progress = Callable[[str, dict[str, Any]], None]


@dataclass(frozen=True)
class SyncRequest:
    category_id: int
    trigger_type: TriggerType = "MANUAL"
    max_categories: int = 1
    max_users_per_course: int = 500
    request_id: int | None = None  # the sync_request it serves (a pulled request)
    retry_of_run_id: int | None = None  # the failed run it retries


@dataclass
class SyncSummary:
    """The eight counters of Step 1's answer, and what an operator needs besides."""

    categories_processed: int = 0
    courses_processed: int = 0
    status_rows_processed: int = 0
    details_processed: int = 0
    source_records_upserted: int = 0
    new_records: int = 0
    changed_records: int = 0
    created_alerts: int = 0
    # beyond Step 1's shape
    records_written: int = 0
    suppressed_alerts: int = 0
    details_skipped: list[str] = field(default_factory=list)
    details_skipped_count: int = 0
    capped_courses: list[dict[str, int]] = field(default_factory=list)
    vanished_records: list[str] = field(default_factory=list)
    vanished_count: int = 0
    returned_records: int = 0
    duplicate_rows: int = 0
    upstream_requests: int = 0
    rejected_rows: int = 0  # status rows and details skipped because they break the contract or cannot be stored
    rejected: list[dict[str, Any]] = field(default_factory=list)
    empty_course_lists: list[dict[str, int]] = field(default_factory=list)
    upstream_codes: dict[str, int] = field(default_factory=dict)  # by answer status code; "none": no answer
    mass_changes: list[dict[str, Any]] = field(default_factory=list)

    PUBLIC = (
        "categories_processed",
        "courses_processed",
        "status_rows_processed",
        "details_processed",
        "source_records_upserted",
        "new_records",
        "changed_records",
        "created_alerts",
    )

    def public(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.PUBLIC}

    def count_requests(self, requests: int, by_status: dict[int, int]) -> None:
        """The upstream requests the run made, also when it failed part way (the metrics count them)."""
        self.upstream_requests = requests
        self.upstream_codes = {str(code): n for code, n in sorted(by_status.items())}
        if requests > sum(by_status.values()):
            self.upstream_codes["none"] = requests - sum(by_status.values())

    def full(self) -> dict[str, Any]:
        return asdict(self)


class SyncEngine:
    def __init__(
        self,
        database: db.Database,
        client: KvcaClient,
        *,
        run_id: int,
        clock: Clock,
        cooldown_minutes: float,
        fence: Fence | None = None,
        course_concurrency: int = 4,
        progress: Progress | None = None,
        mass_change_share: float = 0.2,
        mass_change_min_rows: int = 20,
    ) -> None:
        self.db = database
        self.client = client
        self.run_id = run_id
        self.clock = clock
        self.cooldown_minutes = cooldown_minutes
        self.fence = fence
        self.course_slots = asyncio.Semaphore(course_concurrency)
        self.progress = progress or (lambda _event, _data: None)
        self.summary = SyncSummary()
        self.mass_change_share = mass_change_share
        self.mass_change_min_rows = mass_change_min_rows
        # per cohort in this run: status rows seen, and changed status rows by (old status, new status)
        self._cohort_rows: Counter[int] = Counter()
        self._cohort_changes: dict[int, Counter[tuple[str, str]]] = {}

    async def sync_categories(self, request: SyncRequest) -> SyncSummary:
        """The category and up to max_categories - 1 of its subcategories, each course stored as it is fetched."""
        root = await self.client.get_category(request.category_id)
        categories = [request.category_id]
        subs = root.get("subcategory_ids") or []
        if not isinstance(subs, list) or not all(isinstance(s, int) and not isinstance(s, bool) for s in subs):
            raise UpstreamDataError(
                f"upstream category {request.category_id}: subcategory_ids is not a list of integers: {subs!r}"
            )
        categories += subs[: max(0, request.max_categories - 1)]
        self.progress("categories", {"categories": categories})
        for category_id in categories:
            await self._category(category_id, request.max_users_per_course)
            self.summary.categories_processed += 1
        self.summary.count_requests(self.client.stats.requests, self.client.stats.by_status)
        return self.summary

    async def _category(self, category_id: int, cap: int) -> None:
        courses = await self.client.list_courses(category_id)
        self.progress("courses", {"category_id": category_id, "courses": len(courses)})
        if not courses and await self._empty_list_left_alone(category_id):
            return
        await all_or_first_error([self._course(category_id, course, cap) for course in courses])
        await self._mark_dropped_courses(category_id, [int(c["id"]) for c in courses])
        await self._guard_mass_change(category_id)

    async def _guard_mass_change(self, category_id: int) -> None:
        """Too large a share of a cohort changed at once (an upstream glitch, a bulk edit): one high 대량 변경
        alert with the counts, and the run's per-learner CHANGED alerts of the cohort folded into it."""
        rows, changes = self._cohort_rows[category_id], self._cohort_changes.get(category_id, Counter())
        changed = sum(changes.values())
        if not is_mass_change(rows, changed, share=self.mass_change_share, min_rows=self.mass_change_min_rows):
            return
        spec = mass_change_alert(
            category_id, run_id=self.run_id, status_rows=rows, transitions=dict(changes), share=self.mass_change_share
        )
        async with self.db.transaction() as conn:
            if self.fence is not None:
                await self.fence(conn)
            raised = await alerts.raise_mass_change(
                conn,
                spec,
                run_id=self.run_id,
                category_id=category_id,
                now=self.clock.now(),
                cooldown_minutes=self.cooldown_minutes,
            )
        self.summary.created_alerts += len(raised.created)
        self.summary.mass_changes.append({"category_id": category_id, "status_rows": rows, "changed": changed})

    async def _empty_list_left_alone(self, category_id: int) -> bool:
        """An empty course list for a category with stored records is not believed: alert, mark nothing."""
        now = self.clock.now()
        async with self.db.transaction() as conn:
            if self.fence is not None:
                await self.fence(conn)
            stored = await records.count_present(conn, category_id)
            if not stored:
                return False
            raised = await alerts.raise_alerts(
                conn,
                UPSTREAM_DATA,
                [empty_course_list_alert(category_id, stored, run_id=self.run_id)],
                run_id=self.run_id,
                now=now,
                cooldown_minutes=self.cooldown_minutes,
            )
        self.summary.empty_course_lists.append({"category_id": category_id, "stored_records": stored})
        self.summary.created_alerts += len(raised.created)
        self.summary.suppressed_alerts += len(raised.suppressed)
        return True

    async def _mark_dropped_courses(self, category_id: int, course_ids: list[int]) -> None:
        """A course no longer listed in its category: its learners' records are marked missing, not deleted."""
        async with self.db.transaction() as conn:
            if self.fence is not None:
                await self.fence(conn)
            marked = await records.mark_missing_outside(
                conn, category_id, course_ids, run_id=self.run_id, now=self.clock.now()
            )
        keys = sorted(set(marked))
        if keys:
            self.summary.records_written += len(marked)
            self.summary.vanished_count += len(keys)
            self.summary.vanished_records = (self.summary.vanished_records + keys)[:MAX_LISTED]

    async def _course(self, category_id: int, course: dict[str, Any], cap: int) -> None:
        try:
            course_id = int(course["id"])
        except (KeyError, TypeError, ValueError) as exc:
            raise UpstreamDataError(f"upstream course of category {category_id} has no valid id: {course!r}") from exc
        async with self.course_slots:
            fetched = await self._fetch_course(category_id, course_id, course.get("name"), cap)
            await self._store_course(fetched)
        self.progress(
            "course_done",
            {"category_id": category_id, "course_id": course_id, "status_rows": fetched.status_rows},
        )

    async def _fetch_course(self, category_id: int, course_id: int, name: str | None, cap: int) -> Fetched:
        return await fetch_course(self.client, self.summary, category_id, course_id, name, cap)

    async def _store_course(self, fetched: Fetched) -> None:
        now = self.clock.now()
        async with self.db.transaction() as conn:
            if self.fence is not None:
                await self.fence(conn)
            stored = await records.of_course(conn, fetched.category_id, fetched.course_id)
            d = diff(fetched.incoming, stored, present=fetched.present)
            to_write = d.to_write
            await records.upsert(conn, to_write, run_id=self.run_id, now=now)
            await status_history.write(conn, history_rows(d), run_id=self.run_id, now=now)
            await records.mark_missing(
                conn, fetched.category_id, fetched.course_id, d.vanished, run_id=self.run_id, now=now
            )
            specs = [
                changed_alert(rec, before, run_id=self.run_id, course_name=fetched.course_name)
                for rec, before in d.changed
                if rec.source_type == STATUS
            ]
            raised = await alerts.raise_alerts(
                conn, "CHANGED", specs, run_id=self.run_id, now=now, cooldown_minutes=self.cooldown_minutes
            )
            refused = await alerts.raise_alerts(
                conn,
                UPSTREAM_DATA,
                [r.alert(self.run_id) for r in fetched.rejected[:MAX_LISTED]],
                run_id=self.run_id,
                now=now,
                cooldown_minutes=self.cooldown_minutes,
            )
            self._cohort_rows[fetched.category_id] += fetched.status_rows
            changes = self._cohort_changes.setdefault(fetched.category_id, Counter())
            for spec in specs:
                before, after = spec.detail["before"], spec.detail["after"]
                changes[(str(before.get("status")), str(after.get("status")))] += 1
            sheet_rows = self._sheet_rows(fetched, d.new, [rec for rec, _ in d.changed])
            await records.queue_sheet_rows(conn, sheet_rows, run_id=self.run_id, now=now)
        s = self.summary
        s.courses_processed += 1
        s.status_rows_processed += fetched.status_rows
        s.details_processed += fetched.details
        s.source_records_upserted += len(fetched.incoming)
        s.new_records += len(d.new)
        s.changed_records += len(d.changed)
        s.returned_records += len(d.returned)
        s.records_written += len(to_write) + len(d.vanished)
        s.created_alerts += len(raised.created) + len(refused.created)
        s.suppressed_alerts += len(raised.suppressed) + len(refused.suppressed)
        s.rejected_rows += len(fetched.rejected)
        s.rejected = (s.rejected + [r.listed() for r in fetched.rejected])[:MAX_LISTED]
        s.details_skipped_count += len(fetched.skipped)
        s.details_skipped = (s.details_skipped + fetched.skipped)[:MAX_LISTED]
        s.vanished_count += len(d.vanished)
        s.vanished_records = (s.vanished_records + d.vanished)[:MAX_LISTED]

    def _sheet_rows(self, fetched: Fetched, new: list[Incoming], changed: list[Incoming]) -> list[dict[str, Any]]:
        """One sheet message per enrolment whose status row or detail is new or changed."""
        touched: dict[str, str] = {}
        for rec in new:
            touched.setdefault(rec.source_id, "NEW")
        for rec in changed:
            if touched.get(rec.source_id) != "NEW":
                touched[rec.source_id] = "CHANGED"
        if not touched:
            return []
        by_key: dict[tuple[str, str], Incoming] = {(r.source_type, r.source_id): r for r in fetched.incoming}
        out = []
        for source_id, change in touched.items():
            status = by_key.get((STATUS, source_id))
            if status is None:
                continue
            detail = by_key.get((DETAIL, source_id))
            payload: dict[str, Any] = {
                "change": change,
                "run_id": self.run_id,
                "category_id": fetched.category_id,
                "course_id": fetched.course_id,
                "course_name": fetched.course_name,
                "user_id": status.user_id,
                **{k: status.payload.get(k) for k in ("status", "status_msg", "gc_date", "sjc_date", "update_time")},
            }
            if detail is not None:
                for k in ("progress_rate", "attendance_rate", "exam_score", "completed", "completion_date"):
                    payload[k] = detail.payload.get(k)
            out.append({"category_id": fetched.category_id, "source_id": source_id, "payload": payload})
        return out
