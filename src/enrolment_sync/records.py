"""Decisions about records, with no I/O and no LMS in sight: the key, the content hash, the diff.

An upstream adapter (`kvca/adapter.py`) turns its answers into `Incoming` records; everything here works on those.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass, field
from typing import Any

import orjson

STATUS = "enrolment_status"
DETAIL = "enrolment_detail"
ALERT_FIELDS = ("status", "status_msg", "gc_date", "sjc_date")


def record_key(category_id: int, course_id: int, user_id: str) -> str:
    """The final key (docs/decisions/record-key.md): one learner in several courses stays several records."""
    return f"{category_id}:{course_id}:{user_id}"


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
