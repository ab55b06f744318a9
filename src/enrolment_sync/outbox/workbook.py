"""The local sheet target: one .xlsx workbook per category (openpyxl), when no Google settings are given."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from filelock import FileLock

from .policy import HEADER_ROW, plan_writes, sheet_title
from .sheets import Guard, Rows, WriteReport


class LocalWorkbookTarget:
    """Without Google settings: one .xlsx per category under ENROLMENT_SYNC_HOME/sheets, same layout.

    Each write holds a lock file for the category (filelock: consumers on one host, Windows included), finds
    the category's worksheet by name (added if missing, never whichever sheet is active), rewrites rows in
    place by source_id, stores text as text (never a formula), and replaces the file atomically (temporary
    file + rename) with the permissions the umask gives, like any file the user creates.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.calls: Counter[str] = Counter()
        self.location = str(folder)

    def path(self, category_id: int) -> Path:
        return self.folder / f"{sheet_title(category_id)}.xlsx"

    def write(self, rows: Rows, guard: Guard) -> WriteReport:
        report = WriteReport()
        self.folder.mkdir(parents=True, exist_ok=True)
        for category_id, by_key in rows.items():
            path = self.path(category_id)
            with FileLock(path.with_suffix(".lock")):
                self._write_one(path, sheet_title(category_id), by_key, guard, report)
        return report

    def _write_one(
        self, path: Path, title: str, by_key: Mapping[str, list[Any]], guard: Guard, report: WriteReport
    ) -> None:
        import openpyxl

        if path.exists():
            workbook = openpyxl.load_workbook(path)
            sheet = workbook[title] if title in workbook.sheetnames else workbook.create_sheet(title)
        else:
            workbook = openpyxl.Workbook()
            sheet = workbook.active
            assert sheet is not None
            sheet.title = title
        column = [[cell.value] if cell.value is not None else [] for cell in sheet["A"]]
        plan = plan_writes(column if any(column) else [], by_key)
        if plan.needs_header:
            _put_row(sheet, 1, HEADER_ROW)
            report.headers += 1
        for row, values in plan.updates:
            _put_row(sheet, row, values)
        guard()
        next_row = sheet.max_row + 1 if any(c.value is not None for c in sheet[sheet.max_row]) else sheet.max_row
        for offset, values in enumerate(plan.appends):
            _put_row(sheet, next_row + offset, values)
        self.calls["file.write"] += 1
        report.updated += len(plan.updates)
        report.appended += len(plan.appends)
        report.duplicate_keys += plan.duplicate_keys
        tmp = path.with_name(f".{path.stem}.{uuid.uuid4().hex[:12]}.xlsx")
        # created by us with 0666 so the umask decides (mkstemp's 0600 would hide the sheet from its readers)
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        try:
            workbook.save(tmp)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise


def _put_row(sheet: Any, row: int, values: list[Any]) -> None:
    """One row; text is stored as a string cell whatever it starts with (=, +, -, @), never as a formula."""
    for index, value in enumerate(values, start=1):
        cell = sheet.cell(row=row, column=index, value=value)
        if isinstance(value, str):
            cell.data_type = "s"


def read_local_sheet(path: Path) -> list[list[Any]]:
    """Every row of a local workbook's category worksheet (tests, demo)."""
    import openpyxl

    workbook = openpyxl.load_workbook(path, read_only=True)
    try:
        sheet = workbook[path.stem] if path.stem in workbook.sheetnames else workbook.active
        assert sheet is not None
        return [list(row) for row in sheet.iter_rows(values_only=True)]
    finally:
        workbook.close()
