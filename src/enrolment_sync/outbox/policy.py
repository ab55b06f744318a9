"""Decisions of the outbox consumers, as pure functions: retry or park, sheet layout, where each row goes."""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..retrying import Backoff, Rand

KEY_COLUMN = "source_id"
SHEET_COLUMNS: tuple[str, ...] = (
    "source_id",
    "category_id",
    "course_id",
    "course_name",
    "user_id",
    "status",
    "status_msg",
    "gc_date",
    "sjc_date",
    "update_time",
    "progress_rate",
    "attendance_rate",
    "exam_score",
    "completed",
    "completion_date",
    "last_change",
    "run_id",
    "synced_at",
)
HEADER_ROW: list[str] = list(SHEET_COLUMNS)


@dataclass(frozen=True)
class RetryDecision:
    dead: bool
    delay_s: float


def retry_decision(
    attempts: int, *, max_attempts: int, base_s: float, max_s: float, rand: Rand = random.random
) -> RetryDecision:
    """After a failed attempt: park as dead on the last allowed attempt, else wait the backoff."""
    if attempts >= max_attempts:
        return RetryDecision(True, 0.0)
    return RetryDecision(False, Backoff(base_s, max_s, rand).delay_s(attempts))


def sheet_title(category_id: int) -> str:
    """The worksheet of a category."""
    return f"category_{category_id}"


# Characters a workbook cannot hold (XML 1.0 forbids them; openpyxl refuses the whole write): tab, newline and
# carriage return stay. Google Sheets refuses a cell over 50,000 characters.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ufffe\uffff]")
MAX_CELL_CHARS = 50_000
REPLACEMENT = "\ufffd"


def cell_text(text: str) -> str:
    """Upstream text as a cell can hold it: control characters become U+FFFD, at most MAX_CELL_CHARS."""
    if text.isprintable() and len(text) <= MAX_CELL_CHARS:  # nearly every cell: no regex (the consumer's hot path)
        return text
    return _CONTROL.sub(REPLACEMENT, text)[:MAX_CELL_CHARS]


def _cell(value: Any) -> str | int | float | bool:
    if value is None:
        return ""
    if isinstance(value, bool | int | float):
        return value
    return cell_text(value if isinstance(value, str) else str(value))


def sheet_row(source_id: str, payload: Mapping[str, Any], *, synced_at: str) -> list[str | int | float | bool]:
    """One enrolment's row, in SHEET_COLUMNS order, from a sheet_outbox payload."""
    values: dict[str, Any] = {**payload, "source_id": source_id, "last_change": payload.get("change")}
    values["synced_at"] = synced_at
    return [_cell(values.get(column)) for column in SHEET_COLUMNS]


@dataclass
class WritePlan:
    """Rows to rewrite in place (1-based sheet row numbers) and rows to append, for one worksheet."""

    updates: list[tuple[int, list[Any]]] = field(default_factory=list)
    appends: list[list[Any]] = field(default_factory=list)
    needs_header: bool = False
    duplicate_keys: list[str] = field(default_factory=list)


def key_rows(column_a: Iterable[Iterable[Any]]) -> dict[str, list[int]]:
    """Map each source_id in column A (as the API returns it: one list per row) to its row numbers."""
    found: dict[str, list[int]] = {}
    for index, cells in enumerate(column_a, start=1):
        first = next(iter(cells), "")
        key = str(first).strip() if first is not None else ""
        if (index == 1 and key == KEY_COLUMN) or not key:
            continue
        found.setdefault(key, []).append(index)
    return found


def plan_writes(column_a: list[list[Any]], rows: Mapping[str, list[Any]]) -> WritePlan:
    """Decide, from the sheet's current column A, which rows are rewritten and which are appended.

    A key already present is rewritten where it stands (every row holding it, should a person have copied
    it); an unknown key is appended. So a message delivered twice rewrites the row it appended the first time.
    """
    existing = key_rows(column_a)
    # A header is written only into an empty sheet: row 1 holding anything else is never overwritten.
    plan = WritePlan(needs_header=not any(column_a))
    for key, values in rows.items():
        where = existing.get(key)
        if where:
            plan.updates.extend((row, values) for row in where)
            if len(where) > 1:
                plan.duplicate_keys.append(key)
        else:
            plan.appends.append(values)
    return plan


def column_letter(number: int) -> str:
    """1 -> A, 26 -> Z, 27 -> AA."""
    letters = ""
    while number > 0:
        number, rest = divmod(number - 1, 26)
        letters = chr(65 + rest) + letters
    return letters


LAST_COLUMN = column_letter(len(SHEET_COLUMNS))


def a1(title: str, cells: str | None = None) -> str:
    """An A1 range with the sheet title quoted (quotes doubled), e.g. 'category_303'!A2:R2."""
    quoted = "'" + title.replace("'", "''") + "'"
    return f"{quoted}!{cells}" if cells else quoted


def row_range(title: str, row: int) -> str:
    return a1(title, f"A{row}:{LAST_COLUMN}{row}")


_URL_SPLIT = re.compile(r"[\s,]+")


def split_urls(value: str) -> list[str]:
    """NOTIFY_URLS: Apprise URLs separated by commas, spaces or newlines."""
    return [u for u in _URL_SPLIT.split(value.strip()) if u]


def channel_id(url: str) -> str:
    """A stable, secret-free name for a channel URL (kept in notification_outbox.delivered_to)."""
    return hashlib.sha256(url.encode()).hexdigest()[:12]


def channels_for(severity: str, *, urls: list[str], urls_high: list[str]) -> list[str]:
    """Every notification goes to NOTIFY_URLS; high-severity ones to NOTIFY_URLS_HIGH as well."""
    chosen = list(urls)
    if severity == "high":
        chosen += [u for u in urls_high if u not in chosen]
    return chosen
