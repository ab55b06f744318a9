"""The KVCA upstream contract as a client: token and renewal, paging, bounded concurrency and rate, retries.

Every failure that leaves this module is an `UpstreamError` whose text carries the HTTP status between
spaces (`upstream HTTP 503 Service Unavailable on GET ...`) or the word `timeout`, so the seeds'
query 3-3 files it in the same group as the worker does.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any
from urllib.parse import quote, urlencode

import httpx
from aiolimiter import AsyncLimiter

from .. import redact
from ..errors import UpstreamDataError, UpstreamError
from ..retrying import Backoff, RetryBudget, retry_after_s
from .transport import AiohttpWire, Answer, HttpxWire, Wire, WireError, WireTimeout

RETRYABLE_STATUS = frozenset({409, 500, 502, 503, 504})
MAX_BODY_IN_MESSAGE = 300
MAX_RATE_LIMIT_WAITS = 30
DEFAULT_RETRY_AFTER_S = 1.0
RATE_BURST_S = 0.1  # the limiter lets at most this much of a second's requests through at once

Sleep = Callable[[float], Awaitable[None]]


# Retries are a plain loop (`_with_retries`) rather than tenacity: a 429 must wait as told without using
# up KVCA_RETRIES, and the first attempt, which nearly always succeeds, must cost nothing extra.


class _Retryable(Exception):
    """One attempt failed in a way worth another try; `final` is what to raise if none is left."""

    def __init__(self, final: UpstreamError, *, retry_after_s: float | None = None) -> None:
        super().__init__(str(final))
        self.final = final
        self.retry_after_s = retry_after_s


@dataclass
class ClientStats:
    requests: int = 0
    retries: int = 0
    rate_limited: int = 0
    token_renewals: int = 0
    by_status: dict[int, int] = field(default_factory=dict)


def api_path(*segments: str | int) -> str:
    """`/api/v1/` and the segments, each percent-encoded whole: an id holding `/`, `?`, `#` or `..` stays one
    segment of the path it was meant for (RFC 3986 reads a bare `.` or `..` segment as a step, so dots go
    encoded there)."""
    encoded = []
    for segment in segments:
        part = quote(str(segment), safe="")
        encoded.append(part.replace(".", "%2E") if part in {".", ".."} else part)
    return "/api/v1/" + "/".join(encoded)


def rate_limiter(requests_per_second: float) -> AsyncLimiter:
    """At most `requests_per_second` on average, and in any second at most that plus a tenth of it: the
    bucket holds RATE_BURST_S of the rate (at least one request), not a whole second's worth."""
    capacity = max(1.0, requests_per_second * RATE_BURST_S)
    return AsyncLimiter(capacity, capacity / requests_per_second)


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown Status"


def _body_text(response: Answer) -> str:
    """The upstream's own words, compacted (JSON re-serialised without spaces), secrets masked, truncated
    (masked first: a cut through a secret would leave a prefix no mask recognises)."""
    raw = response.text
    try:
        text = json.dumps(json.loads(raw), ensure_ascii=False, separators=(",", ":"))
    except ValueError:
        text = " ".join(raw.split())
    return redact.redact(text)[:MAX_BODY_IN_MESSAGE]


def http_error(method: str, path: str, response: Answer, attempts: int) -> UpstreamError:
    status = response.status_code
    tries = f" after {attempts} attempts" if attempts > 1 else ""
    message = f"upstream HTTP {status} {_reason(status)} on {method} {path}{tries}: {_body_text(response)}"
    return UpstreamError(message, status_code=status)


class KvcaClient:
    """Async client. Use as `async with KvcaClient(...) as client:`."""

    def __init__(
        self,
        *,
        base_url: str,
        client_id: str,
        client_secret: str,
        timeout_s: float = 10.0,
        max_concurrency: int = 8,
        retries: int = 3,
        backoff_base_s: float = 0.5,
        backoff_max_s: float = 30.0,
        page_size: int = 100,
        max_pages: int = 1000,
        max_requests_per_second: float | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Sleep = asyncio.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self._client_id = client_id
        self._client_secret = client_secret
        redact.register(client_secret)
        self._retries = retries
        self._backoff = Backoff(backoff_base_s, backoff_max_s, (rng or random.Random()).random)
        self._page_size = page_size
        self._max_pages = max_pages
        self._page_window = max_concurrency
        self._sleep = sleep
        self._slots = asyncio.Semaphore(max_concurrency)
        self._rate = rate_limiter(max_requests_per_second) if max_requests_per_second else None
        self._token: str | None = None
        self._token_lock = asyncio.Lock()
        self._paused_until = 0.0
        self.stats = ClientStats()
        self._wire: Wire = (
            HttpxWire(base_url, timeout_s=timeout_s, transport=transport)
            if transport is not None
            else AiohttpWire(base_url, timeout_s=timeout_s, max_connections=max_concurrency)
        )
        self._timeout_s = timeout_s

    async def __aenter__(self) -> KvcaClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._wire.aclose()

    # -- contract ---------------------------------------------------------------------------

    async def get_category(self, category_id: int) -> dict[str, Any]:
        return await self._get_json(api_path("categories", category_id))

    async def list_courses(self, category_id: int) -> list[dict[str, Any]]:
        items, _total = await self._paged(api_path("categories", category_id, "courses"), limit=None)
        return items

    async def list_enrolments(self, course_id: int, *, limit: int | None = None) -> tuple[list[dict[str, Any]], int]:
        """Status rows of a course, up to `limit`; returns (rows, total_items upstream reports)."""
        return await self._paged(api_path("courses", course_id, "enrolments"), limit=limit)

    async def get_enrolment_detail(self, course_id: int, user_id: str) -> dict[str, Any] | None:
        """The detail of one enrolment, or None when the learner left the course (404)."""
        return await self._get_json(api_path("courses", course_id, "enrolments", user_id), allow_404=True)

    # -- mechanics --------------------------------------------------------------------------

    async def _paged(self, path: str, *, limit: int | None) -> tuple[list[dict[str, Any]], int]:
        """Page 1, then the rest a window of `max_concurrency` pages at a time, up to the first empty page.

        `total_pages` is the upstream's claim, not a plan: a claim beyond KVCA_MAX_PAGES fails before any
        further page is asked for, so neither the requests nor the memory a run holds follow a lie.
        """
        first = await self._get_json(path, params={"page": 1, "per_page": self._page_size})
        items, total_pages, total_items = self._page_items(path, first)
        wanted_pages = total_pages
        if limit is not None:
            wanted_pages = min(total_pages, max(1, -(-limit // self._page_size)))
        if wanted_pages > self._max_pages:
            raise UpstreamDataError(
                f"upstream GET {path} claims total_pages={total_pages} (total_items={total_items}), more than"
                f" KVCA_MAX_PAGES={self._max_pages} pages of {self._page_size}: refused before asking for them"
            )
        page, more = 2, bool(items)
        while more and page <= wanted_pages:
            window = range(page, min(wanted_pages, page + self._page_window - 1) + 1)
            bodies = await asyncio.gather(
                *(self._get_json(path, params={"page": p, "per_page": self._page_size}) for p in window)
            )
            for body in bodies:
                got = self._page_items(path, body)[0]
                if not got:
                    more = False  # past the real end, whatever total_pages said
                    break
                items.extend(got)
            page = window.stop
        if limit is not None:
            items = items[:limit]
        return items, total_items

    @staticmethod
    def _page_items(path: str, body: dict[str, Any]) -> tuple[list[dict[str, Any]], int, int]:
        try:
            items = body["items"]
            total_pages = int(body["total_pages"])
            total_items = int(body["total_items"])
        except (KeyError, TypeError, ValueError) as exc:
            raise UpstreamDataError(f"upstream page of {path} lacks a valid {exc} field") from exc
        if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
            raise UpstreamDataError(f"upstream page of {path}: items is not a list of objects")
        return list(items), total_pages, total_items

    async def _get_json(self, path: str, *, params: dict[str, Any] | None = None, allow_404: bool = False) -> Any:
        response = await self._with_retries("GET", path, params=params, authed=True, allow_404=allow_404)
        if response is None:
            return None
        try:
            return response.json()
        except ValueError as exc:
            raise UpstreamDataError(f"upstream GET {path} answered 200 with a body that is not JSON") from exc

    async def _ensure_token(self, stale: str | None = None) -> str:
        async with self._token_lock:
            if self._token is not None and self._token != stale:
                return self._token
            response = await self._with_retries(
                "POST",
                "/api/v1/auth/token",
                json_body={"client_id": self._client_id, "client_secret": self._client_secret},
                authed=False,
            )
            assert response is not None
            try:
                token = response.json()["access_token"]
            except (ValueError, KeyError, TypeError) as exc:
                raise UpstreamDataError("upstream token answer lacks access_token") from exc
            if stale is not None:
                self.stats.token_renewals += 1
            self._token = str(token)
            redact.register(self._token)
            return self._token

    async def _with_retries(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        json_body: dict[str, Any] | None = None,
        authed: bool,
        allow_404: bool = False,
    ) -> Answer | None:
        budget = RetryBudget(retries=self._retries, rate_waits=MAX_RATE_LIMIT_WAITS)
        while True:
            try:
                return await self._attempt(method, path, params, json_body, authed, allow_404, budget.attempts + 1)
            except _Retryable as exc:
                allowed = budget.rate_limited() if exc.retry_after_s is not None else budget.failed()
                if not allowed:
                    final = exc.final
                    if budget.attempts > 1 and " attempts" not in str(final):
                        final = UpstreamError(
                            f"{final} (gave up after {budget.attempts} attempts)",
                            status_code=final.status_code,
                            timeout=final.timeout,
                        )
                    raise final from None
                await self._sleep(budget.wait_s(exc.retry_after_s, self._backoff))

    async def _attempt(
        self,
        method: str,
        path: str,
        params: dict[str, Any] | None,
        json_body: dict[str, Any] | None,
        authed: bool,
        allow_404: bool,
        attempts: int,
    ) -> Answer | None:
        target = path if not params else f"{path}?{urlencode(params)}"
        token: str | None = None
        for renewal in (False, True):
            headers = {}
            if authed:
                # on renewal, name the token that got the 401: concurrent 401s then renew it only once
                token = await self._ensure_token(stale=token if renewal else None)
                headers["Authorization"] = f"Bearer {token}"
            response = await self._send(method, path, target, params, json_body, headers)
            if response.status_code == 401 and authed and not renewal:
                continue  # the token expired: renew once and repeat the call
            return self._judge(method, target, response, allow_404, attempts)
        raise AssertionError("unreachable")

    async def _send(
        self,
        method: str,
        path: str,
        target: str,
        params: dict[str, Any] | None,
        json_body: dict[str, Any] | None,
        headers: dict[str, str],
    ) -> Answer:
        async with self._slots:
            # checked once a slot is ours, so requests queued for a slot also wait out a 429's Retry-After
            pause = self._paused_until - time.monotonic()
            if pause > 0:
                await self._sleep(pause)
            if self._rate is not None:
                await self._rate.acquire()
            self.stats.requests += 1
            try:
                # the whole exchange, body included: socket timeouts alone let a body that drips in go on forever
                async with asyncio.timeout(self._timeout_s):
                    response = await self._wire.request(
                        method, path, params=params, json_body=json_body, headers=headers
                    )
            except (WireTimeout, TimeoutError) as exc:
                raise _Retryable(
                    UpstreamError(
                        f"upstream timeout: no complete answer within {self._timeout_s:g}s on {method} {target}"
                        f" ({type(exc).__name__ if isinstance(exc, TimeoutError) else exc})",
                        timeout=True,
                    )
                ) from exc
            except WireError as exc:
                raise _Retryable(UpstreamError(f"upstream unreachable on {method} {target}: {exc}")) from exc
        self.stats.by_status[response.status_code] = self.stats.by_status.get(response.status_code, 0) + 1
        return response

    def _judge(self, method: str, target: str, response: Answer, allow_404: bool, attempts: int) -> Answer | None:
        status = response.status_code
        if 200 <= status < 300:
            return response
        if status == 404 and allow_404:
            return None
        if status == 429:
            self.stats.rate_limited += 1
            told_s = retry_after_s(response.headers.get("Retry-After"), now=dt.datetime.now(dt.UTC))
            wait_s = DEFAULT_RETRY_AFTER_S if told_s is None else told_s
            self._paused_until = max(self._paused_until, time.monotonic() + wait_s)
            raise _Retryable(http_error(method, target, response, attempts), retry_after_s=wait_s)
        if status in RETRYABLE_STATUS or 500 <= status <= 599:
            self.stats.retries += 1
            raise _Retryable(http_error(method, target, response, attempts))
        raise http_error(method, target, response, attempts)
