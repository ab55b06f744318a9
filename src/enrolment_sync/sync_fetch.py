"""The fetch side of the sync engine: one course's status rows and details, parsed against the contract, with
the rows it would not take set aside as `Rejected` (each becomes an UPSTREAM_DATA alert)."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .alerts import AlertSpec
from .failures import Severity
from .kvca.adapter import detail_record, status_record
from .kvca.client import KvcaClient
from .kvca.contract import MAX_USER_ID_CHARS, RowRejected, dedupe_rows, parse_detail, parse_status_row, shown_id
from .records import DETAIL, STATUS, Incoming, record_key

if TYPE_CHECKING:
    from .sync import SyncSummary


async def all_or_first_error(coros: list[Coroutine[Any, Any, Any]]) -> list[Any]:
    """Run concurrently; on the first failure cancel the rest and raise that failure itself."""
    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(c) for c in coros]
    except BaseExceptionGroup as eg:
        raise _first_error(eg) from None
    return [t.result() for t in tasks]


def _first_error(eg: BaseExceptionGroup[Any]) -> BaseException:
    for exc in eg.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            return _first_error(exc)
        if not isinstance(exc, asyncio.CancelledError):
            return exc
    return eg.exceptions[0]


UPSTREAM_DATA = "UPSTREAM_DATA"  # the alert type of an answer the sync would not take as it came


@dataclass(frozen=True)
class Rejected:
    """One status row or detail skipped, and why."""

    source_type: str
    category_id: int
    course_id: int
    user_id: str | None
    field: str
    reason: str

    def alert(self, run_id: int) -> AlertSpec:
        """Medium: one learner's record is not synced until KVCA fixes it; nothing stored is lost."""
        user = shown_id(self.user_id) if self.user_id is not None else "?"
        kind = "상태" if self.source_type == STATUS else "상세"
        message = (
            f"수강 데이터 건너뜀 ({kind}): 과정 {self.course_id} · 수강생 {user} · 필드 {self.field}"
            " — 저장할 수 없는 값이라 이 수강생만 건너뛰고 나머지는 반영했습니다"
        )
        detail = {
            "category_id": self.category_id,
            "course_id": self.course_id,
            "user_id": user,
            "field": self.field,
            "reason": self.reason,
            "run_id": run_id,
        }
        return AlertSpec(
            self.source_type, record_key(self.category_id, self.course_id, user), Severity.MEDIUM, message, detail
        )

    def listed(self) -> dict[str, Any]:
        user = shown_id(self.user_id) if self.user_id is not None else None
        return {"source_type": self.source_type, "course_id": self.course_id, "user_id": user, "field": self.field}


def empty_course_list_alert(category_id: int, stored: int, *, run_id: int) -> AlertSpec:
    """High: KVCA answered that a category with stored records has no course at all. The records are left as
    they are (not marked missing) until a list names courses again; the alert asks someone to look."""
    message = (
        f"과정 목록이 비어 있음: 기수 {category_id}의 저장된 수강 기록 {stored}건을"
        " 누락 처리하지 않고 그대로 두었습니다 — KVCA의 과정 목록을 확인하세요"
    )
    detail = {"category_id": category_id, "stored_records": stored, "run_id": run_id}
    return AlertSpec("course_list", str(category_id), Severity.HIGH, message, detail)


def _keyable(user_id: str | None) -> bool:
    return user_id is not None and "\x00" not in user_id and len(user_id) <= MAX_USER_ID_CHARS


@dataclass(frozen=True)
class Fetched:
    category_id: int
    course_id: int
    course_name: str | None
    incoming: list[Incoming]
    present: set[str] | None
    status_rows: int
    details: int
    skipped: list[str]
    rejected: list[Rejected]


async def fetch_course(
    client: KvcaClient, summary: SyncSummary, category_id: int, course_id: int, name: str | None, cap: int
) -> Fetched:
    """One course complete: its status rows (parsed, deduplicated, rejected ones set aside) and their details."""
    listed, total_items = await client.list_enrolments(course_id, limit=cap)
    parsed, rejected = [], []
    for raw in listed:
        try:
            parsed.append((raw, parse_status_row(raw, course_id)))
        except RowRejected as exc:
            rejected.append(Rejected(STATUS, category_id, course_id, exc.user_id, exc.field, str(exc)))
    pairs, duplicates = dedupe_rows(parsed)
    summary.duplicate_rows += duplicates
    raw_rows = [raw for raw, _ in pairs]
    rows = [row for _, row in pairs]
    capped = total_items > len(listed)
    if capped:
        summary.capped_courses.append(
            {"category_id": category_id, "course_id": course_id, "total_items": total_items, "taken": len(rows)}
        )

    async def one_detail(user_id: str) -> Incoming | Rejected | None:
        raw = await client.get_enrolment_detail(course_id, user_id)
        if raw is None:
            return None
        try:
            return detail_record(category_id, raw, parse_detail(raw, course_id, user_id), course_id)
        except RowRejected as exc:
            return Rejected(DETAIL, category_id, course_id, user_id, exc.field, str(exc))

    details = await all_or_first_error([one_detail(row.user_id) for row in rows])
    incoming = [status_record(category_id, raw, row) for raw, row in zip(raw_rows, rows, strict=True)]
    skipped = [
        record_key(category_id, course_id, row.user_id) for row, d in zip(rows, details, strict=True) if d is None
    ]
    incoming += [d for d in details if isinstance(d, Incoming)]
    rejected += [d for d in details if isinstance(d, Rejected)]
    # a learner whose row was rejected is still listed: what is stored of them must not be marked missing
    listed_ids = [row.user_id for row in rows] + [r.user_id for r in rejected if _keyable(r.user_id)]
    present = None if capped else {record_key(category_id, course_id, str(u)) for u in listed_ids}
    details_done = sum(isinstance(d, Incoming) for d in details)
    return Fetched(category_id, course_id, name, incoming, present, len(rows), details_done, skipped, rejected)
