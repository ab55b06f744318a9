"""The KVCA contract's rows, validated: the row models, the statuses, parsing a listed row or a detail.

Only this module knows how KVCA shapes a status row or a detail; `adapter.py` turns them into domain records.
A row is also refused when Postgres could not store it (a NUL character anywhere, a user_id too long for the
record key's index): `RowRejected` names the field, so the sync skips that one row and reports it.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, ValidationError

from ..errors import UpstreamDataError

Status = Literal["ENROLLED", "IN_PROGRESS", "COMPLETED", "FAILED", "CANCELLED"]

# The record key category:course:user is unique-indexed; a btree entry holds at most about 2,700 bytes, and no
# LMS id comes near this (KVCA's are like u000123).
MAX_USER_ID_CHARS = 200
SHOWN_ID_CHARS = 40


class RowRejected(UpstreamDataError):
    """One status row or detail the worker cannot take (`field` says why); the rest of the answer is fine."""

    def __init__(self, message: str, *, user_id: str | None, field: str) -> None:
        super().__init__(message)
        self.user_id = user_id
        self.field = field


def shown_id(user_id: object) -> str:
    """A user_id fit for a message and for storage: NULs written out, a long one cut with its length."""
    text = str(user_id).replace("\x00", "\\x00")
    if len(text) > SHOWN_ID_CHARS:
        return f"{text[:SHOWN_ID_CHARS]}…({len(text)}자)"
    return text


def unstorable_field(value: Any, where: str = "") -> str | None:
    """The first field holding a NUL character (Postgres text and jsonb refuse it), keys and nested values too."""
    try:
        # one pass in C over the row (orjson writes NUL as \u0000) instead of a Python walk over every field
        if b"\\u0000" not in orjson.dumps(value):
            return None
    except TypeError:
        pass
    return _nul_field(value, where)


def _nul_field(value: Any, where: str) -> str | None:
    if isinstance(value, str):
        return (where or "value") if "\x00" in value else None
    items: Any = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        at = f"{where}.{key}" if where else str(key)
        if isinstance(key, str) and "\x00" in key:
            return at
        found = _nul_field(item, at)
        if found is not None:
            return found
    return None


def _storable(raw: dict[str, Any], what: str) -> None:
    user_id = raw.get("user_id")
    known = user_id if isinstance(user_id, str) else None
    field = unstorable_field(raw)
    if field is not None:
        raise RowRejected(
            f"{what}: {field} holds a NUL character, which Postgres cannot store", user_id=known, field=field
        )
    if known is not None and len(known) > MAX_USER_ID_CHARS:
        raise RowRejected(
            f"{what}: user_id is {len(known)} characters long, more than {MAX_USER_ID_CHARS}",
            user_id=known,
            field="user_id",
        )


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


def _explain(exc: ValidationError) -> tuple[str, str]:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "row"
    got = repr(first.get("input"))
    got = got if len(got) <= 80 else f"{got[:80]}…"
    return where, f"{where}: {first['msg']} (got {got})"


def parse_status_row(raw: dict[str, Any], course_id: int) -> StatusRow:
    """The row, or RowRejected: it breaks the contract, or holds what Postgres cannot store."""
    what = f"upstream enrolment row of course {course_id} user {shown_id(raw.get('user_id'))}"
    _storable(raw, what)
    try:
        row = StatusRow.model_validate(raw)
    except ValidationError as exc:
        where, text = _explain(exc)
        user_id = raw.get("user_id") if isinstance(raw.get("user_id"), str) else None
        raise RowRejected(
            f"upstream enrolment row of course {course_id} breaks the contract: {text}", user_id=user_id, field=where
        ) from exc
    if row.course_id != course_id:
        raise RowRejected(
            f"upstream enrolment row of course {course_id} names course_id {row.course_id} (user {row.user_id})",
            user_id=row.user_id,
            field="course_id",
        )
    return row


def parse_detail(raw: dict[str, Any], course_id: int, user_id: str) -> DetailRow:
    """The detail, or RowRejected like `parse_status_row`; it must name the learner and course asked for."""
    _storable(raw, f"upstream detail of course {course_id} user {shown_id(user_id)}")
    try:
        row = DetailRow.model_validate(raw)
    except ValidationError as exc:
        where, text = _explain(exc)
        raise RowRejected(
            f"upstream detail of course {course_id} user {user_id} breaks the contract: {text}",
            user_id=user_id,
            field=where,
        ) from exc
    if (row.course_id, row.user_id) != (course_id, user_id):
        raise RowRejected(
            f"upstream detail asked for course {course_id} user {user_id} names course_id {row.course_id}"
            f" user_id {row.user_id}",
            user_id=user_id,
            field="user_id" if row.user_id != user_id else "course_id",
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
