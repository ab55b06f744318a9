"""Where sheet rows go: a Google Sheet through gspread, or a local .xlsx workbook per category.

Both take one batch of rows per category (already coalesced: one row per enrolment) and place each row by
its source_id as found in column A at write time, so a re-delivered message rewrites its row, never adds one.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import os
import random
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import gspread
import requests
import structlog
from gspread.exceptions import APIError

from ..config import Settings
from ..errors import ConfigError, EnrolmentSyncError
from ..retrying import Backoff, Rand, RetryBudget, retry_after_s
from .policy import HEADER_ROW, a1, plan_writes, row_range, sheet_title

log = structlog.get_logger(__name__)

GOOGLE_SHEETS_ORIGIN = "https://sheets.googleapis.com"
API_TIMEOUT_S = 60.0
API_RETRIES = 4  # per call, for 429 / 5xx / transport errors, before the batch is given back to the queue
API_BACKOFF_BASE_S = 1.0
API_BACKOFF_MAX_S = 32.0
QUOTA_WAIT_MAX_S = 300.0
ALREADY_EXISTS = "already exists"

Rows = Mapping[int, Mapping[str, list[Any]]]  # category_id -> source_id -> row values
Guard = Callable[[], None]


class SheetsError(EnrolmentSyncError):
    """A batch could not be written (after the retries each API call deserved)."""


class Interrupted(EnrolmentSyncError):
    """The consumer was told to stop while waiting (quota, backoff): the batch is given back untried."""


@dataclass
class WriteReport:
    updated: int = 0
    appended: int = 0
    headers: int = 0
    duplicate_keys: list[str] = field(default_factory=list)


class SheetTarget(Protocol):
    location: str
    calls: Counter[str]

    def write(self, rows: Rows, guard: Guard) -> WriteReport:
        """Write rows in place by source_id; call `guard` (raises if our lease is gone) before adding rows."""
        ...


class Quota(Protocol):
    def acquire(self, kind: str) -> None: ...

    def exhausted(self, kind: str) -> None: ...


class NoQuota:
    def acquire(self, kind: str) -> None:
        return None

    def exhausted(self, kind: str) -> None:
        return None


# --------------------------------------------------------------------------------- Google Sheets


class RedirectSession(requests.Session):
    """A requests session that sends https://sheets.googleapis.com calls to another origin (the fake)."""

    def __init__(self, base_url: str) -> None:
        super().__init__()
        self.base_url = base_url.rstrip("/")

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> requests.Response:
        text = url.decode() if isinstance(url, bytes) else url
        if text.startswith(GOOGLE_SHEETS_ORIGIN):
            text = self.base_url + text[len(GOOGLE_SHEETS_ORIGIN) :]
        verb = method.decode() if isinstance(method, bytes) else method
        return super().request(verb, text, *args, **kwargs)


def google_client(settings: Settings) -> gspread.Client:
    """gspread with a service account, or with no credentials against GOOGLE_SHEETS_API_URL (the fake)."""
    if settings.google_sheets_api_url:
        client = gspread.Client(auth=None, session=RedirectSession(settings.google_sheets_api_url))  # type: ignore[arg-type]
    else:
        if settings.google_service_account_file is None:
            raise ConfigError("GOOGLE_SHEET_ID is set but GOOGLE_SERVICE_ACCOUNT_FILE is not")
        try:
            client = gspread.service_account(filename=str(settings.google_service_account_file))
        except (OSError, ValueError) as exc:
            raise ConfigError(f"GOOGLE_SERVICE_ACCOUNT_FILE cannot be used: {exc}") from exc
    client.http_client.set_timeout(API_TIMEOUT_S)
    return client


class GoogleSheetTarget:
    """One spreadsheet; one worksheet per category; a header row; one row per enrolment keyed by source_id.

    Per batch: one values.batchGet of column A of the batch's worksheets (read), one values.batchUpdate for
    rows already there and any missing header (write), one values.append per worksheet with new learners
    (write), and an addSheet for a category seen for the first time. Values are written RAW, so text from
    upstream is never interpreted as a formula.
    """

    def __init__(
        self,
        client: gspread.Client,
        spreadsheet_id: str,
        *,
        quota: Quota | None = None,
        stop: threading.Event | None = None,
        backoff_base_s: float = API_BACKOFF_BASE_S,
        backoff_max_s: float = API_BACKOFF_MAX_S,
        retries: int = API_RETRIES,
        rand: Rand = random.random,
    ) -> None:
        self.http = client.http_client
        self.spreadsheet_id = spreadsheet_id
        self.quota = quota or NoQuota()
        self.stop = stop or threading.Event()
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self.retries = retries
        self.rand = rand
        self.calls: Counter[str] = Counter()
        self._titles: set[str] | None = None
        self._guard: Guard | None = None  # set for the duration of write(): renews our lease before each write call
        self.location = f"Google Sheet {spreadsheet_id}"

    def _call(self, kind: str, what: str, fn: Callable[[], Any], *, idempotent: bool = True) -> Any:
        """One API call under the quota, retried on 429 / 5xx / transport errors with backoff and jitter.

        A call that is not idempotent (an append) is retried in place only on 429, which Google answers
        before doing anything; after a 5xx or a lost answer it may have landed, so the batch fails instead
        and its retry reads the sheet again before writing.
        """
        # Unlike the KVCA client, a 429 here spends a retry: the shared quota bucket, drained by the 429, paces us.
        budget = RetryBudget(retries=self.retries)
        while True:
            self.quota.acquire(kind)
            if kind == "write" and self._guard is not None:
                self._guard()  # the quota wait or a backoff may have outlasted our lease: prove it first
            self.calls[kind] += 1
            self.calls[what] += 1
            try:
                return fn()
            except APIError as exc:
                status = exc.response.status_code
                if status != 429 and status < 500:
                    raise SheetsError(f"Sheets API {what}: HTTP {status}: {exc.error.get('message')}") from exc
                if status == 429:
                    self.quota.exhausted(kind)
                error: Exception = exc
                wait = retry_after_s(exc.response.headers.get("Retry-After"), now=dt.datetime.now(dt.UTC))
                text = f"Sheets API {what}: HTTP {status}: {exc.error.get('message')}"
            except requests.RequestException as exc:
                error, wait, text = exc, None, f"Sheets API {what}: {type(exc).__name__}: {exc}"
            if not idempotent and not (isinstance(error, APIError) and error.response.status_code == 429):
                raise SheetsError(f"{text} (it may have landed: not repeated in place)") from error
            if not budget.failed():
                raise SheetsError(text) from error
            delay = budget.wait_s(wait, Backoff(self.backoff_base_s, self.backoff_max_s, self.rand))
            log.warning(
                "sheets api call failed, backing off", what=what, attempt=budget.failures, delay_s=round(delay, 3)
            )
            if self.stop.wait(delay):
                raise Interrupted(f"stopped while backing off after: {text}")

    def _ensure_tabs(self, titles: list[str]) -> None:
        if self._titles is None or any(t not in self._titles for t in titles):
            meta = self._call("read", "spreadsheets.get", lambda: self.http.fetch_sheet_metadata(self.spreadsheet_id))
            self._titles = {s["properties"]["title"] for s in meta.get("sheets", [])}
        missing = [t for t in titles if t not in self._titles]
        if not missing:
            return
        body = {
            "requests": [
                {"addSheet": {"properties": {"title": t, "gridProperties": {"rowCount": 1000, "columnCount": 26}}}}
                for t in missing
            ]
        }
        try:
            self._call("write", "batchUpdate.addSheet", lambda: self.http.batch_update(self.spreadsheet_id, body))
        except SheetsError as exc:
            if ALREADY_EXISTS not in str(exc):
                raise
            # another consumer added it first: add the rest one by one
            for title in missing:
                with contextlib.suppress(SheetsError):
                    self._add_sheet(title)
        self._titles.update(missing)

    def _add_sheet(self, title: str) -> None:
        body = {"requests": [{"addSheet": {"properties": {"title": title}}}]}
        self._call("write", "batchUpdate.addSheet", lambda: self.http.batch_update(self.spreadsheet_id, body))

    def _append(self, title: str, new_rows: list[list[Any]]) -> None:
        params: dict[str, Any] = {"valueInputOption": "RAW", "insertDataOption": "INSERT_ROWS"}
        self._call(
            "write",
            "values.append",
            lambda: self.http.values_append(self.spreadsheet_id, a1(title, "A1"), params, {"values": new_rows}),
            idempotent=False,
        )

    def write(self, rows: Rows, guard: Guard) -> WriteReport:
        self._guard = guard
        try:
            return self._write(rows)
        finally:
            self._guard = None

    def _write(self, rows: Rows) -> WriteReport:
        titles = {category_id: sheet_title(category_id) for category_id in rows}
        self._ensure_tabs(sorted(titles.values()))
        ranges = [a1(titles[c], "A:A") for c in rows]
        got = self._call(
            "read",
            "values.batchGet",
            lambda: self.http.values_batch_get(self.spreadsheet_id, ranges, params={"majorDimension": "ROWS"}),
        )
        columns = [vr.get("values", []) for vr in got.get("valueRanges", [])]
        report = WriteReport()
        data: list[dict[str, Any]] = []
        appends: list[tuple[str, list[list[Any]]]] = []
        for (category_id, by_key), column in zip(rows.items(), columns, strict=True):
            title = titles[category_id]
            plan = plan_writes(column, by_key)
            if plan.needs_header:
                data.append({"range": row_range(title, 1), "values": [HEADER_ROW]})
                report.headers += 1
            data += [{"range": row_range(title, row), "values": [values]} for row, values in plan.updates]
            report.updated += len(plan.updates)
            report.duplicate_keys += plan.duplicate_keys
            if plan.appends:
                appends.append((title, plan.appends))
        if data:
            body = {"valueInputOption": "RAW", "data": data}
            self._call(
                "write", "values.batchUpdate", lambda: self.http.values_batch_update(self.spreadsheet_id, body=body)
            )
        for title, new_rows in appends:
            self._append(title, new_rows)  # guarded in _call, like every write
            report.appended += len(new_rows)
        return report


class DatabaseQuota:
    """Sheets API quota (per minute per user) as token buckets in Postgres, shared by every consumer.

    A bucket holds at most a quarter of the minute's quota and refills with the rest over the minute, so no
    60-second window ever sees more calls than the quota allows.
    """

    def __init__(
        self,
        take: Callable[[str, float, float], tuple[bool, float]],
        drain: Callable[[str], None],
        *,
        per_minute: Mapping[str, int],
        stop: threading.Event,
        max_wait_s: float = QUOTA_WAIT_MAX_S,
    ) -> None:
        self.take = take
        self.drain = drain
        self.per_minute = dict(per_minute)
        self.stop = stop
        self.max_wait_s = max_wait_s
        self.waited_s = 0.0

    def bucket(self, kind: str) -> tuple[float, float]:
        quota = self.per_minute[kind]
        capacity = max(1.0, quota / 4)
        return capacity, max(quota - capacity, 1.0) / 60.0

    def acquire(self, kind: str) -> None:
        capacity, rate = self.bucket(kind)
        deadline = time.monotonic() + self.max_wait_s
        while True:
            granted, tokens = self.take(f"sheets:{kind}", capacity, rate)
            if granted:
                return
            wait = max(0.01, (1 - tokens) / rate)
            if time.monotonic() + wait > deadline:
                raise SheetsError(f"waited {self.max_wait_s:g} s for Sheets {kind} quota")
            self.waited_s += wait
            if self.stop.wait(wait):
                raise Interrupted(f"stopped while waiting for Sheets {kind} quota")

    def exhausted(self, kind: str) -> None:
        self.drain(f"sheets:{kind}")


# --------------------------------------------------------------------------------- local workbook


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class LocalWorkbookTarget:
    """Without Google settings: one .xlsx per category under ENROLMENT_SYNC_HOME/sheets, same layout.

    Each write holds a lock file for the category (consumers on one host), rewrites rows in place by
    source_id, and replaces the file atomically (temporary file + rename).
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.calls: Counter[str] = Counter()
        self.location = str(folder)

    def path(self, category_id: int) -> Path:
        return self.folder / f"{sheet_title(category_id)}.xlsx"

    def write(self, rows: Rows, guard: Guard) -> WriteReport:
        report = WriteReport()
        for category_id, by_key in rows.items():
            path = self.path(category_id)
            with _file_lock(path.with_suffix(".lock")):
                self._write_one(path, sheet_title(category_id), by_key, guard, report)
        return report

    def _write_one(
        self, path: Path, title: str, by_key: Mapping[str, list[Any]], guard: Guard, report: WriteReport
    ) -> None:
        import openpyxl

        if path.exists():
            workbook = openpyxl.load_workbook(path)
            sheet = workbook.active
        else:
            workbook = openpyxl.Workbook()
            sheet = workbook.active
            sheet.title = title
        assert sheet is not None
        column = [[cell.value] if cell.value is not None else [] for cell in sheet["A"]] if sheet.max_row else []
        if sheet.max_row == 1 and not column[0]:
            column = []
        plan = plan_writes(column, by_key)
        if plan.needs_header:
            for index, value in enumerate(HEADER_ROW, start=1):
                sheet.cell(row=1, column=index, value=value)
            report.headers += 1
        for row, values in plan.updates:
            for index, value in enumerate(values, start=1):
                sheet.cell(row=row, column=index, value=value)
        guard()
        for values in plan.appends:
            sheet.append(values)
        self.calls["file.write"] += 1
        report.updated += len(plan.updates)
        report.appended += len(plan.appends)
        report.duplicate_keys += plan.duplicate_keys
        fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".xlsx", dir=path.parent)
        os.close(fd)
        try:
            workbook.save(tmp)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise


def read_local_sheet(path: Path) -> list[list[Any]]:
    """Every row of a local workbook (tests, demo)."""
    import openpyxl

    workbook = openpyxl.load_workbook(path, read_only=True)
    try:
        sheet = workbook.active
        assert sheet is not None
        return [list(row) for row in sheet.iter_rows(values_only=True)]
    finally:
        workbook.close()


def make_target(settings: Settings, *, quota: Quota | None, stop: threading.Event) -> SheetTarget:
    """Google Sheets when GOOGLE_SHEET_ID is set, else the local workbooks."""
    if settings.google_sheet_id:
        return GoogleSheetTarget(google_client(settings), settings.google_sheet_id, quota=quota, stop=stop)
    if settings.google_service_account_file is not None:
        raise ConfigError("GOOGLE_SERVICE_ACCOUNT_FILE is set but GOOGLE_SHEET_ID is not")
    return LocalWorkbookTarget(settings.enrolment_sync_home / "sheets")
