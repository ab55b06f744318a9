"""Decisions about records, with no I/O: the key, validation, the content hash, the diff, change severity."""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, ValidationError

from .errors import UpstreamDataError
from .failures import Severity

STATUS = "enrolment_status"
DETAIL = "enrolment_detail"
ALERT_FIELDS = ("status", "status_msg", "gc_date", "sjc_date")
BAD_STATUSES = frozenset({"CANCELLED", "FAILED"})


def record_key(category_id: int, course_id: int, user_id: str) -> str:
    """The final key (docs/decisions/record-key.md): one learner in several courses stays several records."""
    return f"{category_id}:{course_id}:{user_id}"


class StatusRow(BaseModel):
    """A status row as the contract describes it; unknown fields are kept, not rejected."""

    model_config = ConfigDict(extra="allow")

    user_id: str
    course_id: int
    status: Literal["ENROLLED", "IN_PROGRESS", "COMPLETED", "FAILED", "CANCELLED"]
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


def content_hash(payload: dict[str, Any]) -> str:
    """SHA-256 of the payload's canonical JSON (keys sorted, compact, UTF-8)."""
    return hashlib.sha256(orjson.dumps(payload, option=orjson.OPT_SORT_KEYS)).hexdigest()


@dataclass(frozen=True)
class Incoming:
    """One record as fetched, ready to store."""

    source_type: str
    source_id: str
    category_id: int
    course_id: int
    user_id: str
    payload: dict[str, Any]
    content_hash: str
    status: str | None = None
    status_msg: str | None = None
    gc_date: str | None = None
    sjc_date: str | None = None
    update_time: str | None = None

    def as_row(self) -> dict[str, Any]:
        return {
            "source_type": self.source_type,
            "source_id": self.source_id,
            "category_id": self.category_id,
            "course_id": self.course_id,
            "user_id": self.user_id,
            "status": self.status,
            "status_msg": self.status_msg,
            "gc_date": self.gc_date,
            "sjc_date": self.sjc_date,
            "update_time": self.update_time,
            "payload": self.payload,
            "content_hash": self.content_hash,
        }

    def alert_fields(self) -> dict[str, Any]:
        """The fields a CHANGED alert shows, as the upstream wrote them."""
        return {name: self.payload.get(name) for name in (*ALERT_FIELDS, "update_time")}


def status_record(category_id: int, raw: dict[str, Any], row: StatusRow) -> Incoming:
    def iso(value: dt.date | dt.datetime | None) -> str | None:
        return value.isoformat() if value is not None else None

    return Incoming(
        source_type=STATUS,
        source_id=record_key(category_id, row.course_id, row.user_id),
        category_id=category_id,
        course_id=row.course_id,
        user_id=row.user_id,
        payload=raw,
        content_hash=content_hash(raw),
        status=row.status,
        status_msg=row.status_msg,
        gc_date=iso(row.gc_date),
        sjc_date=iso(row.sjc_date),
        update_time=iso(row.update_time),
    )


def detail_record(category_id: int, raw: dict[str, Any], row: DetailRow, course_id: int) -> Incoming:
    return Incoming(
        source_type=DETAIL,
        source_id=record_key(category_id, course_id, row.user_id),
        category_id=category_id,
        course_id=course_id,
        user_id=row.user_id,
        payload=raw,
        content_hash=content_hash(raw),
        update_time=row.update_time.isoformat() if row.update_time else None,
    )


@dataclass(frozen=True)
class Stored:
    """What the diff needs of a stored record."""

    content_hash: str
    missing: bool
    fields: dict[str, Any]


@dataclass
class Diff:
    new: list[Incoming] = field(default_factory=list)
    changed: list[tuple[Incoming, Stored]] = field(default_factory=list)
    returned: list[Incoming] = field(default_factory=list)  # marked missing before, back now, same content
    unchanged: int = 0
    vanished: list[str] = field(default_factory=list)

    @property
    def to_write(self) -> list[Incoming]:
        return [*self.new, *(inc for inc, _ in self.changed), *self.returned]


def diff(
    incoming: list[Incoming],
    stored: dict[tuple[str, str], Stored],
    *,
    present: set[str] | None,
) -> Diff:
    """Compare fetched records with stored ones.

    `present` holds the keys of every learner listed in the course now; a stored record whose key is
    not among them has vanished. It is None for a capped course: a learner beyond the cap is not seen,
    which must not read as having left.
    """
    result = Diff()
    for record in incoming:
        key = (record.source_type, record.source_id)
        before = stored.get(key)
        if before is None:
            result.new.append(record)
        elif before.content_hash != record.content_hash:
            result.changed.append((record, before))
        elif before.missing:
            result.returned.append(record)
        else:
            result.unchanged += 1
    if present is not None:
        result.vanished = sorted(
            {source_id for (_stype, source_id), rec in stored.items() if source_id not in present and not rec.missing}
        )
    return result


def _norm(value: Any) -> Any:
    if isinstance(value, dt.date | dt.datetime):
        return value.isoformat()
    return value


def changed_fields(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    return [name for name in (*ALERT_FIELDS, "update_time") if _norm(before.get(name)) != _norm(after.get(name))]


def change_severity(before: dict[str, Any], after: dict[str, Any]) -> Severity:
    """high: status becomes CANCELLED or FAILED; medium: another status change; low: anything else."""
    old_status, new_status = before.get("status"), after.get("status")
    if old_status != new_status:
        return Severity.HIGH if new_status in BAD_STATUSES else Severity.MEDIUM
    return Severity.LOW
