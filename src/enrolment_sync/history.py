"""status_history: the rows a sync's diff adds to it (pure), a learner's timeline read from it (I/O), and how
staff read it, in Korean and KST (pure).

The read functions take a plain (sync) psycopg connection, so the CLI and a console's sync routes or worker
threads call them alike.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.rows import dict_row

from . import db
from .alerts import STATUS_KO
from .clock import to_kst
from .records import STATUS, Diff, Incoming

CHANGE_KO = {"NEW": "신규", "CHANGED": "변경", "MISSING": "목록에서 빠짐", "RETURNED": "복귀"}


def status_name(code: str | None) -> str:
    """`수강중(IN_PROGRESS)`; `-` for no status (not listed)."""
    if code is None:
        return "-"
    return f"{STATUS_KO.get(code, code)}({code})"


def kst_text(moment: dt.datetime | None) -> str:
    return "" if moment is None else to_kst(moment).strftime("%Y-%m-%d %H:%M:%S KST")


@dataclass(frozen=True)
class HistoryEntry:
    """One version of a status record that mattered: what it was, what it became, when (UTC) and in which run."""

    source_id: str
    course_id: int
    change: str
    old_status: str | None
    new_status: str | None
    old_status_msg: str | None
    new_status_msg: str | None
    old_gc_date: dt.date | None
    new_gc_date: dt.date | None
    old_sjc_date: dt.date | None
    new_sjc_date: dt.date | None
    update_time: dt.datetime | None
    run_id: int | None
    changed_at: dt.datetime
    backfill: str | None

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> HistoryEntry:
        return cls(**{name: row[name] for name in cls.__dataclass_fields__})

    def what(self) -> str:
        """What changed, in the words of the timeline: `수강중(IN_PROGRESS) → 수강취소(CANCELLED)` and the rest."""
        if self.change == "NEW":
            head = status_name(self.new_status)
        elif self.change == "MISSING":
            head = f"{status_name(self.old_status)} → 목록에서 빠짐"
        elif self.change == "RETURNED":
            head = f"목록에 다시 나타남: {status_name(self.new_status)}"
        elif self.old_status != self.new_status:
            head = f"{status_name(self.old_status)} → {status_name(self.new_status)}"
        else:
            head = status_name(self.new_status)
        changes = [
            f"{label} {old or '-'} → {new or '-'}"
            for label, old, new in (
                ("상태 메시지", self.old_status_msg, self.new_status_msg),
                ("gc_date", self.old_gc_date, self.new_gc_date),
                ("sjc_date", self.old_sjc_date, self.new_sjc_date),
            )
            if self.change == "CHANGED" and old != new
        ]
        return "; ".join([head, *changes])


def timeline(conn: psycopg.Connection[Any], category_id: int, user_id: str) -> list[HistoryEntry]:
    """Every history row of a learner in a category, across their courses, oldest first."""
    cur = conn.cursor(row_factory=dict_row)
    cur.execute(db.query("history_timeline"), {"category_id": category_id, "user_id": user_id})
    return [HistoryEntry.from_row(r) for r in cur.fetchall()]


def _iso_date(text: Any) -> str | None:
    """A stored date as the upstream wrote it, for a date column; None when it is not an ISO date."""
    try:
        return dt.date.fromisoformat(str(text)).isoformat() if text is not None else None
    except ValueError:
        return None


def history_rows(d: Diff) -> list[dict[str, Any]]:
    """The status_history rows for what a course's diff writes: NEW, CHANGED (from the stored version) and
    RETURNED (a record marked missing that is listed again, changed or not). Details get no history; MISSING
    rows are written by the statements that mark records missing."""

    def row(rec: Incoming, change: str, old: dict[str, Any] | None) -> dict[str, Any]:
        old = old or {}
        return {
            "source_id": rec.source_id,
            "category_id": rec.category_id,
            "course_id": rec.course_id,
            "user_id": rec.user_id,
            "change": change,
            "old_status": old.get("status"),
            "new_status": rec.status,
            "old_status_msg": old.get("status_msg"),
            "new_status_msg": rec.status_msg,
            "old_gc_date": _iso_date(old.get("gc_date")),
            "new_gc_date": rec.gc_date,
            "old_sjc_date": _iso_date(old.get("sjc_date")),
            "new_sjc_date": rec.sjc_date,
            "update_time": rec.update_time,
        }

    out = [row(rec, "NEW", None) for rec in d.new if rec.source_type == STATUS]
    for rec, before in d.changed:
        if rec.source_type == STATUS:
            out.append(row(rec, "RETURNED", None) if before.missing else row(rec, "CHANGED", before.fields))
    out += [row(rec, "RETURNED", None) for rec in d.returned if rec.source_type == STATUS]
    return out
