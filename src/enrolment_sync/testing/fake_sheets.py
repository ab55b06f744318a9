"""A fake of the Google Sheets API v4, on loopback: just what gspread calls for the sheet consumer.

Endpoints: spreadsheets.get, spreadsheets.batchUpdate (addSheet), values.get / batchGet, values.update /
batchUpdate, values.append. Errors have Google's JSON shape (`{"error": {"code", "message", "status"}}`).
It counts every call (reads, writes, per endpoint) and the valueInputOption of every value write, and injects
faults on demand: 429 RESOURCE_EXHAUSTED, 5xx, a stall after a write was applied (to kill a consumer between
the write and its acknowledgement), a protected worksheet or a refused value (400). Test helpers act as a person
would in the sheet: delete or rename a worksheet, sort rows, insert rows.
Used by the tests, the benchmark and the demo; never by production code paths.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import re
import threading
from collections import Counter
from dataclasses import dataclass
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from ..outbox.policy import column_letter
from .servers import ThreadedServer

DEFAULT_SPREADSHEET_ID = "fake-spreadsheet"
DEFAULT_ROWS = 1000
DEFAULT_COLUMNS = 26
STALL_MAX_S = 60.0
GOOGLE_STATUS = {
    400: "INVALID_ARGUMENT",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    502: "BAD_GATEWAY",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
GOOGLE_MESSAGE = {
    429: "Quota exceeded for quota metric 'Write requests' and limit 'Write requests per minute per user' of "
    "service 'sheets.googleapis.com' for consumer 'project_number:000000000000'.",
    500: "Internal error encountered.",
    502: "Bad Gateway",
    503: "The service is currently unavailable.",
    504: "The request timed out. Please try again.",
}
_RANGE = re.compile(r"^(?:'((?:[^']|'')+)'|([^!']+))(?:!([A-Z]*)(\d*)(?::([A-Z]*)(\d*))?)?$")


class ApiError(Exception):
    def __init__(self, code: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.headers = headers or {}

    def response(self) -> JSONResponse:
        body = {
            "error": {"code": self.code, "message": self.message, "status": GOOGLE_STATUS.get(self.code, "UNKNOWN")}
        }
        if self.code == 429:
            body["error"]["details"] = [
                {
                    "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                    "reason": "RATE_LIMIT_EXCEEDED",
                    "domain": "googleapis.com",
                    "metadata": {
                        "service": "sheets.googleapis.com",
                        "quota_metric": "sheets.googleapis.com/write_requests",
                    },
                }
            ]
        return JSONResponse(body, status_code=self.code, headers=self.headers)


def column_number(letters: str) -> int:
    number = 0
    for ch in letters:
        number = number * 26 + ord(ch) - 64
    return number


@dataclass(frozen=True)
class Span:
    title: str
    col1: int
    row1: int
    col2: int | None  # None: to the last column
    row2: int | None  # None: to the last row


def parse_range(text: str) -> Span:
    m = _RANGE.match(text)
    if not m:
        raise ApiError(400, f"Unable to parse range: {text}")
    title = (m.group(1) or "").replace("''", "'") if m.group(1) is not None else m.group(2)
    c1, r1, c2, r2 = m.group(3), m.group(4), m.group(5), m.group(6)
    col1 = column_number(c1) if c1 else 1
    row1 = int(r1) if r1 else 1
    if m.group(5) is None and m.group(6) is None:  # a single cell or a bare title / column
        col2 = col1 if c1 and r1 else (col1 if c1 else None)
        row2 = row1 if r1 else None
    else:
        col2 = column_number(c2) if c2 else None
        row2 = int(r2) if r2 else None
    return Span(title, col1, row1, col2, row2)


@dataclass
class Sheet:
    sheet_id: int
    title: str
    index: int
    row_count: int = DEFAULT_ROWS
    column_count: int = DEFAULT_COLUMNS
    rows: list[list[Any]] | None = None

    def __post_init__(self) -> None:
        self.rows = self.rows or []

    @property
    def grid(self) -> list[list[Any]]:
        assert self.rows is not None
        return self.rows

    def properties(self) -> dict[str, Any]:
        return {
            "sheetId": self.sheet_id,
            "title": self.title,
            "index": self.index,
            "sheetType": "GRID",
            "gridProperties": {"rowCount": self.row_count, "columnCount": self.column_count},
        }

    def last_row(self) -> int:
        for number in range(len(self.grid), 0, -1):
            if any(v not in ("", None) for v in self.grid[number - 1]):
                return number
        return 0


@dataclass
class Fault:
    status: int
    count: int  # -1: forever
    kind: str | None = None  # "read" | "write" | None (any)
    endpoint: str | None = None
    retry_after: int | None = None
    stall_after_s: float | None = None  # apply the call, then hold the answer this long
    apply_first: bool = False  # apply the call, then answer the error anyway (an ambiguous failure)


class FakeSheetsState:
    """The spreadsheets, the call counters and the fault queue; thread-safe."""

    def __init__(self, spreadsheet_ids: tuple[str, ...] = (DEFAULT_SPREADSHEET_ID,)) -> None:
        self._lock = threading.Lock()
        self._ids = itertools.count(1000)
        self.spreadsheets: dict[str, dict[str, Sheet]] = {sid: {} for sid in spreadsheet_ids}
        self.calls: Counter[str] = Counter()
        self.faults: list[Fault] = []
        self.release = threading.Event()
        self.stalled = 0
        self.input_options: Counter[str] = Counter()  # valueInputOption of every value write
        self.protected: set[str] = set()
        self.rejected_text: set[str] = set()

    # -- test helpers -----------------------------------------------------------------------

    def add_fault(
        self,
        status: int = 429,
        count: int = 1,
        *,
        kind: str | None = None,
        endpoint: str | None = None,
        retry_after: int | None = None,
    ) -> None:
        with self._lock:
            self.faults.append(Fault(status, count, kind, endpoint, retry_after))

    def stall_after(self, endpoint: str, *, count: int = 1, seconds: float = STALL_MAX_S) -> None:
        """Apply the next `count` calls of `endpoint`, then hold their answers (until release() or timeout)."""
        with self._lock:
            self.release.clear()
            self.faults.append(Fault(200, count, None, endpoint, None, seconds))

    def fail_after_apply(self, endpoint: str, status: int = 503, *, count: int = 1) -> None:
        """Apply the next `count` calls of `endpoint`, then answer `status` as if they had failed."""
        with self._lock:
            self.faults.append(Fault(status, count, None, endpoint, None, None, apply_first=True))

    def protect(self, title: str) -> None:
        """Refuse every value write to a worksheet, as Google does for a protected one (400)."""
        with self._lock:
            self.protected.add(title)

    def reject_text(self, text: str) -> None:
        """Refuse (400, INVALID_ARGUMENT) every value write that carries a cell containing `text`."""
        with self._lock:
            self.rejected_text.add(text)

    def delete_sheet(self, title: str, spreadsheet_id: str = DEFAULT_SPREADSHEET_ID) -> None:
        """A person deleting a worksheet."""
        with self._lock:
            del self.spreadsheets[spreadsheet_id][title]

    def rename_sheet(self, title: str, new_title: str, spreadsheet_id: str = DEFAULT_SPREADSHEET_ID) -> None:
        """A person renaming a worksheet."""
        with self._lock:
            book = self.spreadsheets[spreadsheet_id]
            sheet = book.pop(title)
            sheet.title = new_title
            book[new_title] = sheet

    def sort_rows(self, title: str, *, column: int = 0, reverse: bool = True) -> None:
        """A person sorting the rows below the header by one column (0: A), descending by default."""
        with self._lock:
            sheet = self.spreadsheets[DEFAULT_SPREADSHEET_ID][title]
            body = sheet.grid[1 : sheet.last_row()]
            body.sort(key=lambda r: str(r[column]) if len(r) > column else "", reverse=reverse)
            sheet.grid[1 : 1 + len(body)] = body

    def insert_rows(self, title: str, *, before: int, rows: list[list[Any]]) -> None:
        """A person inserting rows above row `before` (1-based)."""
        with self._lock:
            sheet = self.spreadsheets[DEFAULT_SPREADSHEET_ID][title]
            sheet.grid[before - 1 : before - 1] = [list(r) for r in rows]
            sheet.row_count += len(rows)

    def clear_faults(self) -> None:
        with self._lock:
            self.faults.clear()
        self.release.set()

    def stats(self) -> dict[str, int]:
        with self._lock:
            return dict(self.calls)

    def reset_stats(self) -> None:
        with self._lock:
            self.calls.clear()

    def titles(self, spreadsheet_id: str = DEFAULT_SPREADSHEET_ID) -> list[str]:
        with self._lock:
            return list(self.spreadsheets[spreadsheet_id])

    def rows(self, title: str, spreadsheet_id: str = DEFAULT_SPREADSHEET_ID) -> list[list[Any]]:
        """Every row of a worksheet up to its last non-empty one (copies)."""
        with self._lock:
            sheet = self.spreadsheets[spreadsheet_id].get(title)
            if sheet is None:
                return []
            return [list(r) for r in sheet.grid[: sheet.last_row()]]

    def keys(self, title: str, spreadsheet_id: str = DEFAULT_SPREADSHEET_ID) -> list[str]:
        """Column A below the header."""
        return [str(r[0]) if r else "" for r in self.rows(title, spreadsheet_id)[1:]]

    # -- the API ----------------------------------------------------------------------------

    def take_fault(self, kind: str, endpoint: str) -> Fault | None:
        with self._lock:
            self.calls["total"] += 1
            self.calls[kind] += 1
            self.calls[endpoint] += 1
            for fault in self.faults:
                if (fault.kind in (None, kind)) and (fault.endpoint in (None, endpoint)):
                    if fault.count > 0:
                        fault.count -= 1
                        if fault.count == 0:
                            self.faults.remove(fault)
                    return fault
        return None

    def _book(self, spreadsheet_id: str) -> dict[str, Sheet]:
        book = self.spreadsheets.get(spreadsheet_id)
        if book is None:
            raise ApiError(404, "Requested entity was not found.")
        return book

    def _sheet(self, spreadsheet_id: str, title: str) -> Sheet:
        sheet = self._book(spreadsheet_id).get(title)
        if sheet is None:
            raise ApiError(400, f"Unable to parse range: {title}")
        return sheet

    def get_spreadsheet(self, spreadsheet_id: str) -> dict[str, Any]:
        with self._lock:
            book = self._book(spreadsheet_id)
            return {
                "spreadsheetId": spreadsheet_id,
                "properties": {"title": spreadsheet_id, "locale": "ko_KR", "timeZone": "Asia/Seoul"},
                "sheets": [{"properties": s.properties()} for s in sorted(book.values(), key=lambda s: s.index)],
                "spreadsheetUrl": f"https://docs.google.com/spreadsheets/d/{spreadsheet_id}/edit",
            }

    def batch_update(self, spreadsheet_id: str, body: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            book = self._book(spreadsheet_id)
            replies: list[dict[str, Any]] = []
            pending: list[Sheet] = []
            for number, request in enumerate(body.get("requests", [])):
                if "addSheet" not in request:
                    raise ApiError(400, f"Invalid requests[{number}]: only addSheet is implemented by the fake")
                props = request["addSheet"].get("properties", {})
                title = props.get("title") or f"Sheet{len(book) + 1}"
                if title in book or any(s.title == title for s in pending):
                    raise ApiError(
                        400,
                        f'Invalid requests[{number}].addSheet: A sheet with the name "{title}" already exists. '
                        "Please enter another name.",
                    )
                grid = props.get("gridProperties", {})
                sheet = Sheet(
                    next(self._ids),
                    title,
                    len(book) + len(pending),
                    int(grid.get("rowCount", DEFAULT_ROWS)),
                    int(grid.get("columnCount", DEFAULT_COLUMNS)),
                )
                pending.append(sheet)
                replies.append({"addSheet": {"properties": sheet.properties()}})
            for sheet in pending:  # all or nothing, like the real batchUpdate
                book[sheet.title] = sheet
            return {"spreadsheetId": spreadsheet_id, "replies": replies}

    def _read(self, spreadsheet_id: str, text: str) -> dict[str, Any]:
        span = parse_range(text)
        sheet = self._sheet(spreadsheet_id, span.title)
        last = sheet.last_row()
        row2 = min(span.row2 or last, last)
        out: list[list[Any]] = []
        for number in range(span.row1, row2 + 1):
            row = sheet.grid[number - 1] if number <= len(sheet.grid) else []
            cells = row[span.col1 - 1 : span.col2] if span.col2 is not None else row[span.col1 - 1 :]
            while cells and cells[-1] in ("", None):
                cells = cells[:-1]
            out.append(list(cells))
        while out and not out[-1]:
            out.pop()
        result: dict[str, Any] = {"range": text, "majorDimension": "ROWS"}
        if out:
            result["values"] = out
        return result

    def values_get(self, spreadsheet_id: str, text: str) -> dict[str, Any]:
        with self._lock:
            return self._read(spreadsheet_id, text)

    def values_batch_get(self, spreadsheet_id: str, ranges: list[str]) -> dict[str, Any]:
        with self._lock:
            return {"spreadsheetId": spreadsheet_id, "valueRanges": [self._read(spreadsheet_id, r) for r in ranges]}

    def _check_values(self, title: str, values: list[list[Any]], where: str) -> None:
        if title in self.protected:
            raise ApiError(
                400,
                "You are trying to edit a protected cell or object. Please contact the spreadsheet owner to "
                "remove protection if you need to edit.",
            )
        for r, row in enumerate(values):
            for c, value in enumerate(row):
                if isinstance(value, str) and any(t in value for t in self.rejected_text):
                    raise ApiError(400, f"Invalid value at '{where}.values[{r}][{c}]'")

    def _write(self, spreadsheet_id: str, text: str, values: list[list[Any]]) -> int:
        span = parse_range(text)
        sheet = self._sheet(spreadsheet_id, span.title)
        last_row = span.row1 + len(values) - 1
        widest = max((len(v) for v in values), default=0)
        if last_row > sheet.row_count or span.col1 + widest - 1 > sheet.column_count:
            raise ApiError(
                400,
                f"Range ({text}) exceeds grid limits. Max rows: {sheet.row_count}, max columns: {sheet.column_count}",
            )
        while len(sheet.grid) < last_row:
            sheet.grid.append([])
        for offset, new in enumerate(values):
            row = sheet.grid[span.row1 - 1 + offset]
            while len(row) < span.col1 - 1 + len(new):
                row.append("")
            row[span.col1 - 1 : span.col1 - 1 + len(new)] = list(new)
        return len(values)

    def values_update(self, spreadsheet_id: str, text: str, values: list[list[Any]]) -> dict[str, Any]:
        with self._lock:
            rows = self._write(spreadsheet_id, text, values)
        return {"spreadsheetId": spreadsheet_id, "updatedRange": text, "updatedRows": rows}

    def values_batch_update(self, spreadsheet_id: str, body: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            self.input_options[str(body.get("valueInputOption"))] += 1
            for number, item in enumerate(body.get("data", [])):  # validate everything first: the call is atomic
                span = parse_range(item["range"])
                self._sheet(spreadsheet_id, span.title)
                self._check_values(span.title, item.get("values", []), f"data[{number}]")
            total = sum(
                self._write(spreadsheet_id, item["range"], item.get("values", [])) for item in body.get("data", [])
            )
        return {
            "spreadsheetId": spreadsheet_id,
            "totalUpdatedRows": total,
            "totalUpdatedSheets": len(body.get("data", [])),
        }

    def values_append(
        self, spreadsheet_id: str, text: str, values: list[list[Any]], input_option: str | None = None
    ) -> dict[str, Any]:
        with self._lock:
            self.input_options[str(input_option)] += 1
            span = parse_range(text)
            sheet = self._sheet(spreadsheet_id, span.title)
            self._check_values(span.title, values, "data")
            start = sheet.last_row() + 1
            end = start + len(values) - 1
            if end > sheet.row_count:
                sheet.row_count = end  # INSERT_ROWS grows the grid
            del sheet.grid[start - 1 :]
            sheet.grid.extend([list(v) for v in values])
            width = max((len(v) for v in values), default=1)
            quoted = "'" + sheet.title.replace("'", "''") + "'"
            updated = f"{quoted}!A{start}:{column_letter(width)}{end}"
        return {
            "spreadsheetId": spreadsheet_id,
            "tableRange": f"{quoted}!A1:{column_letter(width)}{start - 1}",
            "updates": {
                "spreadsheetId": spreadsheet_id,
                "updatedRange": updated,
                "updatedRows": len(values),
                "updatedColumns": width,
                "updatedCells": len(values) * width,
            },
        }


async def _json(request: Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError as exc:
        raise ApiError(400, f"Invalid JSON payload received. {exc}") from exc
    if not isinstance(body, dict):
        raise ApiError(400, "Invalid JSON payload received: not an object")
    return body


def create_app(state: FakeSheetsState | None = None) -> Starlette:
    state = state or FakeSheetsState()

    async def dispatch(request: Request) -> JSONResponse:
        rest = request.path_params["rest"]
        sid, _, tail = rest.partition("/")
        method = request.method
        try:
            if method == "GET" and not tail and ":" not in sid:
                kind, endpoint = "read", "spreadsheets.get"
                call = lambda body: state.get_spreadsheet(sid)  # noqa: E731
            elif method == "POST" and sid.endswith(":batchUpdate") and not tail:
                sid = sid.removesuffix(":batchUpdate")
                kind, endpoint = "write", "spreadsheets.batchUpdate"
                call = lambda body: state.batch_update(sid, body)  # noqa: E731
            elif method == "GET" and tail == "values:batchGet":
                kind, endpoint = "read", "values.batchGet"
                ranges = request.query_params.getlist("ranges")
                call = lambda body: state.values_batch_get(sid, ranges)  # noqa: E731
            elif method == "POST" and tail == "values:batchUpdate":
                kind, endpoint = "write", "values.batchUpdate"
                call = lambda body: state.values_batch_update(sid, body)  # noqa: E731
            elif method == "POST" and tail.startswith("values/") and tail.endswith(":append"):
                text = tail.removeprefix("values/").removesuffix(":append")
                kind, endpoint = "write", "values.append"
                option = request.query_params.get("valueInputOption")
                call = lambda body: state.values_append(sid, text, body.get("values", []), option)  # noqa: E731
            elif method == "PUT" and tail.startswith("values/"):
                text = tail.removeprefix("values/")
                kind, endpoint = "write", "values.update"
                call = lambda body: state.values_update(sid, text, body.get("values", []))  # noqa: E731
            elif method == "GET" and tail.startswith("values/"):
                text = tail.removeprefix("values/")
                kind, endpoint = "read", "values.get"
                call = lambda body: state.values_get(sid, text)  # noqa: E731
            else:
                raise ApiError(404, f"Method not found: {method} /v4/spreadsheets/{rest}")
            fault = state.take_fault(kind, endpoint)
            if fault is not None and fault.apply_first:
                call(await _json(request) if method in ("POST", "PUT") else {})
                raise ApiError(fault.status, GOOGLE_MESSAGE.get(fault.status, "Injected fault."))
            if fault is not None and fault.stall_after_s is None:
                headers = {"Retry-After": str(fault.retry_after)} if fault.retry_after is not None else None
                raise ApiError(fault.status, GOOGLE_MESSAGE.get(fault.status, "Injected fault."), headers)
            body = await _json(request) if method in ("POST", "PUT") else {}
            result = call(body)
            if fault is not None and fault.stall_after_s is not None:
                state.stalled += 1
                await _stall(state.release, fault.stall_after_s)
            return JSONResponse(result)
        except ApiError as exc:
            return exc.response()

    return Starlette(routes=[Route("/v4/spreadsheets/{rest:path}", dispatch, methods=["GET", "POST", "PUT"])])


async def _stall(release: threading.Event, seconds: float) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + min(seconds, STALL_MAX_S)
    while not release.is_set() and loop.time() < deadline:
        await asyncio.sleep(0.02)


class RunningFakeSheets:
    """The fake on a background thread, on 127.0.0.1 (port 0: a free one). `base_url` once entered."""

    def __init__(self, state: FakeSheetsState | None = None, *, port: int = 0) -> None:
        self.state = state or FakeSheetsState()
        self.server = ThreadedServer(create_app(self.state), port=port)
        self.base_url = ""
        self.spreadsheet_id = DEFAULT_SPREADSHEET_ID

    def __enter__(self) -> RunningFakeSheets:
        self.server.__enter__()
        self.base_url = self.server.base_url
        return self

    def __exit__(self, *exc: object) -> None:
        self.state.release.set()
        self.server.__exit__(*exc)


def main(argv: list[str] | None = None) -> int:  # pragma: no cover - manual use
    import uvicorn

    parser = argparse.ArgumentParser(description="Fake Google Sheets API v4 on loopback.")
    parser.add_argument("--port", type=int, default=18082)
    parser.add_argument("--spreadsheet-id", default=DEFAULT_SPREADSHEET_ID)
    args = parser.parse_args(argv)
    print(f"fake Sheets API on http://127.0.0.1:{args.port} (spreadsheet {args.spreadsheet_id})")
    uvicorn.run(
        create_app(FakeSheetsState((args.spreadsheet_id,))), host="127.0.0.1", port=args.port, log_level="warning"
    )
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
