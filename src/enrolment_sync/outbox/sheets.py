"""Where sheet rows go: a Google Sheet through gspread (here), or a local .xlsx workbook per category (workbook.py).

Both take one batch of rows per category (already coalesced: one row per enrolment) and place each row by
its source_id as found in column A at write time, so a re-delivered message rewrites its row, never adds one.
"""

from __future__ import annotations

import datetime as dt
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
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
MISSING_SHEET = "Unable to parse range"  # what Google answers for a range on a worksheet that is not there

Rows = Mapping[int, Mapping[str, list[Any]]]  # category_id -> source_id -> row values
Guard = Callable[[], None]


class SheetsError(EnrolmentSyncError):
    """A batch could not be written (after the retries each API call deserved).

    `rejected`: the API refused the request itself (a 4xx other than 429: a value, a range, a protected
    worksheet), so trying the same rows again cannot help; the consumer isolates the rows that cause it.
    """

    def __init__(self, message: str, *, rejected: bool = False) -> None:
        super().__init__(message)
        self.rejected = rejected


class Replan(EnrolmentSyncError):
    """A write that failed in a way worth retrying, but not in place: its row numbers were read before it.
    The worksheet's write starts again from reading column A, after `wait_s` (None: the backoff)."""

    def __init__(self, message: str, wait_s: float | None) -> None:
        super().__init__(message)
        self.wait_s = wait_s


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

    Per category of a batch: a write quota token first, then one values.batchGet of column A, then at once
    one values.batchUpdate for rows already there (and the header of a new worksheet) and one values.append
    for new learners; spreadsheets.get once per process and an addSheet for a category seen for the first
    time. Waiting (quota, backoff) happens only before column A is read, so rows are placed by what the sheet
    holds at write time. Values are written RAW, so text from upstream is never interpreted as a formula.
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
        self._titles: set[str] | None = None  # worksheets known to exist (dropped when one turns out missing)
        self._guard: Guard | None = None  # set for the duration of write(): renews our lease before each write call
        self.location = f"Google Sheet {spreadsheet_id}"

    def _call(self, kind: str, what: str, fn: Callable[[], Any], *, paid: bool = False, in_place: bool = True) -> Any:
        """One API call under the quota (`paid`: its token was taken already), retried on 429 / 5xx / transport
        errors with backoff and jitter. A call that carries row numbers or appends (`in_place=False`) is never
        retried in place: the rows may have moved, or an append may have landed; it raises Replan instead.
        """
        # Unlike the KVCA client, a 429 here spends a retry: the shared quota bucket, drained by the 429, paces us.
        budget = RetryBudget(retries=self.retries)
        while True:
            if not paid:
                self.quota.acquire(kind)
            paid = False
            if kind == "write" and self._guard is not None:
                self._guard()  # the quota wait or a backoff may have outlasted our lease: prove it first
            self.calls[kind] += 1
            self.calls[what] += 1
            try:
                return fn()
            except APIError as exc:
                status = exc.response.status_code
                text = f"Sheets API {what}: HTTP {status}: {exc.error.get('message')}"
                if status != 429 and status < 500:
                    raise SheetsError(text, rejected=True) from exc
                if status == 429:
                    self.quota.exhausted(kind)
                error: Exception = exc
                wait = retry_after_s(exc.response.headers.get("Retry-After"), now=dt.datetime.now(dt.UTC))
            except requests.RequestException as exc:
                error, wait, text = exc, None, f"Sheets API {what}: {type(exc).__name__}: {exc}"
            if not in_place:
                raise Replan(text, wait) from error
            if not budget.failed():
                raise SheetsError(text) from error
            self._pause(budget.wait_s(wait, self._backoff()), what, budget.failures, text)

    def _backoff(self) -> Backoff:
        return Backoff(self.backoff_base_s, self.backoff_max_s, self.rand)

    def _pause(self, delay: float, what: str, attempt: int, text: str) -> None:
        log.warning("sheets api call failed, backing off", what=what, attempt=attempt, delay_s=round(delay, 3))
        if self.stop.wait(delay):
            raise Interrupted(f"stopped while backing off after: {text}")

    def _ensure_tab(self, title: str) -> None:
        """The worksheet exists (added if not). Only a worksheet seen or added is remembered, never a failure."""
        if self._titles is None:
            meta = self._call("read", "spreadsheets.get", lambda: self.http.fetch_sheet_metadata(self.spreadsheet_id))
            self._titles = {s["properties"]["title"] for s in meta.get("sheets", [])}
        if title in self._titles:
            return
        grid = {"rowCount": 1000, "columnCount": 26}
        body = {"requests": [{"addSheet": {"properties": {"title": title, "gridProperties": grid}}}]}
        try:
            self._call("write", "batchUpdate.addSheet", lambda: self.http.batch_update(self.spreadsheet_id, body))
        except SheetsError as exc:
            if ALREADY_EXISTS not in str(exc):  # another consumer added it first: fine
                raise SheetsError(str(exc)) from exc  # the worksheet's fault, not its rows': nothing to isolate
        self._titles.add(title)

    def write(self, rows: Rows, guard: Guard) -> WriteReport:
        self._guard = guard
        try:
            report = WriteReport()
            for category_id, by_key in rows.items():
                self._write_sheet(sheet_title(category_id), by_key, report)
            return report
        finally:
            self._guard = None

    def _write_sheet(self, title: str, by_key: Mapping[str, list[Any]], report: WriteReport) -> None:
        """One worksheet's rows; started again from column A after a failure that allows it, and once after the
        worksheet turned out deleted or renamed (recreated)."""
        budget = RetryBudget(retries=self.retries)
        recreated = False
        while True:
            try:
                self._ensure_tab(title)
                self._place(title, by_key, report)
                return
            except Replan as exc:
                if not budget.failed():
                    raise SheetsError(str(exc)) from exc
                self._pause(budget.wait_s(exc.wait_s, self._backoff()), title, budget.failures, str(exc))
            except SheetsError as exc:
                if MISSING_SHEET not in str(exc):
                    raise
                if recreated:
                    raise SheetsError(str(exc)) from exc  # the worksheet's fault, not its rows'
                recreated = True
                log.warning("worksheet missing (deleted or renamed): adding it again", title=title)
                self._titles = None

    def _place(self, title: str, by_key: Mapping[str, list[Any]], report: WriteReport) -> None:
        # The write token is taken before column A is read: a wait for quota must not fall between reading row
        # numbers and writing to them (a person may sort or insert rows meanwhile).
        self.quota.acquire("write")
        column_a = [a1(title, "A:A")]
        got = self._call(
            "read",
            "values.batchGet",
            lambda: self.http.values_batch_get(self.spreadsheet_id, column_a, params={"majorDimension": "ROWS"}),
        )
        ranges = got.get("valueRanges", [])
        plan = plan_writes(ranges[0].get("values", []) if ranges else [], by_key)
        data: list[dict[str, Any]] = []
        if plan.needs_header:
            data.append({"range": row_range(title, 1), "values": [HEADER_ROW]})
        data += [{"range": row_range(title, row), "values": [values]} for row, values in plan.updates]
        paid = True
        if data:
            body = {"valueInputOption": "RAW", "data": data}
            self._call(
                "write",
                "values.batchUpdate",
                lambda: self.http.values_batch_update(self.spreadsheet_id, body=body),
                paid=True,
                in_place=False,
            )
            paid = False
        if plan.appends:
            params: dict[str, Any] = {"valueInputOption": "RAW", "insertDataOption": "INSERT_ROWS"}
            self._call(
                "write",
                "values.append",
                lambda: self.http.values_append(self.spreadsheet_id, a1(title, "A1"), params, {"values": plan.appends}),
                paid=paid,
                in_place=False,
            )
        report.headers += int(plan.needs_header)
        report.updated += len(plan.updates)
        report.appended += len(plan.appends)
        report.duplicate_keys += plan.duplicate_keys


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


def make_target(settings: Settings, *, quota: Quota | None, stop: threading.Event) -> SheetTarget:
    """Google Sheets when GOOGLE_SHEET_ID is set, else the local workbooks."""
    if settings.google_sheet_id:
        return GoogleSheetTarget(google_client(settings), settings.google_sheet_id, quota=quota, stop=stop)
    if settings.google_service_account_file is not None:
        raise ConfigError("GOOGLE_SERVICE_ACCOUNT_FILE is set but GOOGLE_SHEET_ID is not")
    from .workbook import LocalWorkbookTarget  # here: workbook.py builds on this module's types

    return LocalWorkbookTarget(settings.enrolment_sync_home / "sheets")
