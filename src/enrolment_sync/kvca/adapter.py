"""KVCA answers as domain records: a status row or a detail becomes an `Incoming` under the record key."""

from __future__ import annotations

import datetime as dt
from typing import Any

from ..records import DETAIL, STATUS, Incoming, content_hash, record_key
from .contract import DetailRow, StatusRow


def _iso(value: dt.date | dt.datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def status_record(category_id: int, raw: dict[str, Any], row: StatusRow) -> Incoming:
    """The stored payload is the upstream's row as it came (`raw`), so the hash sees every field, known or not."""
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
        gc_date=_iso(row.gc_date),
        sjc_date=_iso(row.sjc_date),
        update_time=_iso(row.update_time),
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
        update_time=_iso(row.update_time),
    )
