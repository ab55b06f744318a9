"""The KVCA contract's rows, validated: the row models, the statuses, parsing a listed row or a detail.

Only this module knows how KVCA shapes a status row or a detail; `adapter.py` turns them into domain records.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from ..errors import UpstreamDataError

Status = Literal["ENROLLED", "IN_PROGRESS", "COMPLETED", "FAILED", "CANCELLED"]


class StatusRow(BaseModel):
    """A status row as the contract describes it; unknown fields are kept, not rejected."""

    model_config = ConfigDict(extra="allow")

    user_id: str
    course_id: int
    status: Status
    status_msg: str | None = None
    gc_date: dt.date | None = None
    sjc_date: dt.date | None = None
    update_time: dt.datetime | None = None


class DetailRow(BaseModel):
    model_config = ConfigDict(extra="allow")

    user_id: str
    course_id: int
    update_time: dt.datetime | None = None


def _explain(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "row"
    return f"{where}: {first['msg']} (got {first.get('input')!r})"


def parse_status_row(raw: dict[str, Any], course_id: int) -> StatusRow:
    try:
        row = StatusRow.model_validate(raw)
    except ValidationError as exc:
        raise UpstreamDataError(
            f"upstream enrolment row of course {course_id} breaks the contract: {_explain(exc)}"
        ) from exc
    if row.course_id != course_id:
        raise UpstreamDataError(
            f"upstream enrolment row of course {course_id} names course_id {row.course_id} (user {row.user_id})"
        )
    return row


def parse_detail(raw: dict[str, Any], course_id: int, user_id: str) -> DetailRow:
    try:
        row = DetailRow.model_validate(raw)
    except ValidationError as exc:
        raise UpstreamDataError(
            f"upstream detail of course {course_id} user {user_id} breaks the contract: {_explain(exc)}"
        ) from exc
    if (row.course_id, row.user_id) != (course_id, user_id):
        raise UpstreamDataError(
            f"upstream detail asked for course {course_id} user {user_id} names course_id {row.course_id}"
            f" user_id {row.user_id}"
        )
    return row


def dedupe_rows(
    pairs: list[tuple[dict[str, Any], StatusRow]],
) -> tuple[list[tuple[dict[str, Any], StatusRow]], int]:
    """One status row per learner. Pages read from live data can list a learner twice when the list shifts
    between two pages; the copy with the later update_time wins. Returns the rows and how many were dropped."""
    kept: dict[str, tuple[dict[str, Any], StatusRow]] = {}
    for raw, row in pairs:
        seen = kept.get(row.user_id)
        if seen is None or _later(row, seen[1]):
            kept[row.user_id] = (raw, row)
    return list(kept.values()), len(pairs) - len(kept)


def _later(a: StatusRow, b: StatusRow) -> bool:
    if a.update_time is None or b.update_time is None:
        return b.update_time is None
    return a.update_time >= b.update_time
