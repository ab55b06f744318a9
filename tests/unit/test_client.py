"""The KVCA client against httpx.MockTransport: auth, paging, retries, limits, error texts."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from enrolment_sync.errors import UpstreamError
from enrolment_sync.failures import classify_exception, ops_query_group
from enrolment_sync.kvca.client import KvcaClient

Handler = Callable[[httpx.Request], httpx.Response]


class Upstream:
    """A scripted upstream: a token endpoint and whatever `data` answers."""

    def __init__(self, data: Handler, *, token_status: int = 200) -> None:
        self.data = data
        self.token_status = token_status
        self.tokens_issued = 0
        self.calls: list[str] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.calls.append(f"{request.method} {request.url.path}")
        if request.url.path == "/api/v1/auth/token":
            if self.token_status != 200:
                return httpx.Response(self.token_status, json={"error": "invalid_client"})
            self.tokens_issued += 1
            return httpx.Response(200, json={"access_token": f"t{self.tokens_issued}", "token_type": "Bearer"})
        return self.data(request)


def make_client(upstream: Upstream, sleeps: list[float] | None = None, **kwargs: Any) -> KvcaClient:
    recorded = sleeps if sleeps is not None else []

    async def fake_sleep(seconds: float) -> None:
        recorded.append(seconds)

    defaults: dict[str, Any] = {"retries": 3, "backoff_base_s": 0.5, "backoff_max_s": 30.0}
    defaults.update(kwargs)
    return KvcaClient(
        base_url="http://kvca.test",
        client_id="id",
        client_secret="top-secret",
        transport=httpx.MockTransport(upstream),
        sleep=fake_sleep,
        **defaults,
    )


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_token_is_sent_and_renewed_once_on_401() -> None:
    seen: list[str] = []

    def data(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers["authorization"])
        if request.headers["authorization"] == "Bearer t1":
            return httpx.Response(401, json={"error": "invalid_token"})
        return httpx.Response(200, json={"id": 303, "subcategory_ids": []})

    upstream = Upstream(data)

    async def go() -> Any:
        async with make_client(upstream) as client:
            return await client.get_category(303), client.stats.token_renewals

    body, renewals = run(go())
    assert body["id"] == 303
    assert seen == ["Bearer t1", "Bearer t2"]
    assert renewals == 1


def test_second_401_is_a_failure_without_retry() -> None:
    upstream = Upstream(lambda r: httpx.Response(401, json={"error": "invalid_token"}))

    async def go() -> None:
        async with make_client(upstream) as client:
            await client.get_category(303)

    with pytest.raises(UpstreamError) as info:
        run(go())
    assert info.value.status_code == 401
    assert upstream.tokens_issued == 2
    assert classify_exception(info.value).group == "HTTP_4XX"


def test_wrong_credentials_fail_as_4xx_without_the_secret() -> None:
    upstream = Upstream(lambda r: httpx.Response(200, json={}), token_status=401)

    async def go() -> None:
        async with make_client(upstream) as client:
            await client.get_category(303)

    with pytest.raises(UpstreamError) as info:
        run(go())
    text = str(info.value)
    assert "upstream HTTP 401 Unauthorized on POST /api/v1/auth/token" in text
    assert "invalid_client" in text and "top-secret" not in text
    assert upstream.calls.count("POST /api/v1/auth/token") == 1  # a 4xx is not retried


@pytest.mark.parametrize("status", [409, 500, 502, 503, 504])
def test_retryable_status_is_retried_with_growing_jittered_backoff(status: int) -> None:
    upstream = Upstream(lambda r: httpx.Response(status, json={"error": "x"}))
    sleeps: list[float] = []

    async def go() -> None:
        async with make_client(upstream, sleeps) as client:
            await client.get_category(303)

    with pytest.raises(UpstreamError) as info:
        run(go())
    assert upstream.calls.count("GET /api/v1/categories/303") == 4  # 1 + KVCA_RETRIES
    assert len(sleeps) == 3
    for attempt, slept in enumerate(sleeps):
        ceiling = 0.5 * 2**attempt
        assert ceiling / 2 <= slept <= ceiling
    assert info.value.status_code == status
    assert f" {status} " in str(info.value) and "4 attempts" in str(info.value)
    expected = "HTTP_409" if status == 409 else "HTTP_5XX"
    assert classify_exception(info.value).group == expected
    assert ops_query_group(str(info.value)) == expected


def test_two_502_then_ok_succeeds() -> None:
    answers = iter([502, 502, 200])

    def data(request: httpx.Request) -> httpx.Response:
        status = next(answers)
        return httpx.Response(status, json={"id": 303} if status == 200 else {"error": "bad_gateway"})

    async def go() -> Any:
        async with make_client(Upstream(data)) as client:
            return await client.get_category(303)

    assert run(go()) == {"id": 303}


def test_429_waits_retry_after_and_does_not_use_up_retries() -> None:
    answers = iter([429, 429, 429, 429, 429, 200])

    def data(request: httpx.Request) -> httpx.Response:
        status = next(answers)
        if status == 429:
            return httpx.Response(429, headers={"Retry-After": "2"}, json={"error": "rate_limited"})
        return httpx.Response(200, json={"id": 303})

    sleeps: list[float] = []

    async def go() -> Any:
        async with make_client(Upstream(data), sleeps, retries=1) as client:
            return await client.get_category(303), client.stats.rate_limited

    body, limited = run(go())
    assert body == {"id": 303} and limited == 5
    assert sleeps.count(2.0) >= 5


@pytest.mark.parametrize("status", [400, 403, 404])
def test_other_4xx_is_not_retried(status: int) -> None:
    upstream = Upstream(lambda r: httpx.Response(status, json={"error": "forbidden"}))

    async def go() -> None:
        async with make_client(upstream) as client:
            await client.get_category(303)

    with pytest.raises(UpstreamError) as info:
        run(go())
    assert upstream.calls.count("GET /api/v1/categories/303") == 1
    assert classify_exception(info.value).group == "HTTP_4XX"
    assert ops_query_group(str(info.value)) == "OTHER"


def test_timeouts_are_retried_then_fail_as_timeout() -> None:
    def data(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    upstream = Upstream(data)

    async def go() -> None:
        async with make_client(upstream, timeout_s=5.0) as client:
            await client.get_category(303)

    with pytest.raises(UpstreamError) as info:
        run(go())
    assert upstream.calls.count("GET /api/v1/categories/303") == 4
    assert info.value.status_code is None and info.value.timeout
    assert classify_exception(info.value).group == "TIMEOUT"
    assert ops_query_group(str(info.value)) == "TIMEOUT"  # "5s", never " 5.0 ", so 3-3 agrees


def test_detail_404_is_none() -> None:
    upstream = Upstream(lambda r: httpx.Response(404, json={"error": "not_found"}))

    async def go() -> Any:
        async with make_client(upstream) as client:
            return await client.get_enrolment_detail(9001, "u000001")

    assert run(go()) is None


def test_paging_collects_every_page_and_honours_the_cap() -> None:
    rows = [{"user_id": f"u{i:06d}", "course_id": 9001} for i in range(1, 251)]

    def data(request: httpx.Request) -> httpx.Response:
        page = int(request.url.params["page"])
        per_page = int(request.url.params["per_page"])
        items = rows[(page - 1) * per_page : page * per_page]
        return httpx.Response(
            200, json={"items": items, "page": page, "per_page": per_page, "total_pages": 3, "total_items": 250}
        )

    upstream = Upstream(data)

    async def go() -> Any:
        async with make_client(upstream) as client:
            return await client.list_enrolments(9001), await client.list_enrolments(9001, limit=120)

    (everything, total), (capped, total2) = run(go())
    assert [r["user_id"] for r in everything] == [r["user_id"] for r in rows] and total == 250
    assert len(capped) == 120 and total2 == 250
    # the capped call needed only two pages
    assert upstream.calls.count("GET /api/v1/courses/9001/enrolments") == 3 + 2


def test_at_most_max_concurrency_in_flight() -> None:
    in_flight = 0
    peak = 0

    class SlowTransport(httpx.AsyncBaseTransport):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            nonlocal in_flight, peak
            if request.url.path.endswith("/token"):
                return httpx.Response(200, json={"access_token": "t"})
            in_flight += 1
            peak = max(peak, in_flight)
            await asyncio.sleep(0.005)
            in_flight -= 1
            return httpx.Response(200, json={"user_id": "u1", "course_id": 1})

    async def go() -> None:
        client = KvcaClient(
            base_url="http://kvca.test", client_id="i", client_secret="s", max_concurrency=4, transport=SlowTransport()
        )
        async with client:
            await asyncio.gather(*(client.get_enrolment_detail(1, f"u{i}") for i in range(40)))

    run(go())
    assert peak == 4


def test_non_json_body_names_the_call() -> None:
    upstream = Upstream(lambda r: httpx.Response(200, content=b"<html>"))

    async def go() -> None:
        async with make_client(upstream) as client:
            await client.get_category(303)

    with pytest.raises(Exception, match="GET /api/v1/categories/303"):
        run(go())


def test_error_body_is_compacted_so_3_3_files_it_right() -> None:
    body = json.dumps({"error": "forbidden", "detail": "course 509 is closed"})  # " 509 " inside a 4xx text
    upstream = Upstream(lambda r: httpx.Response(403, content=body.encode()))

    async def go() -> None:
        async with make_client(upstream) as client:
            await client.get_category(303)

    with pytest.raises(UpstreamError) as info:
        run(go())
    assert "course 509 is closed" in str(info.value)  # the original words are kept ...
    assert classify_exception(info.value).group == "HTTP_4XX"


def test_concurrent_401s_renew_the_token_once() -> None:
    valid = {"t2"}

    def data(request: httpx.Request) -> httpx.Response:
        if request.headers["authorization"].removeprefix("Bearer ") not in valid:
            return httpx.Response(401, json={"error": "invalid_token"})
        return httpx.Response(200, json={"user_id": "u1", "course_id": 1})

    upstream = Upstream(data)  # issues t1 first (already expired upstream), then t2, t3, ...

    async def go() -> int:
        async with make_client(upstream, max_concurrency=8) as client:
            await asyncio.gather(*(client.get_enrolment_detail(1, f"u{i}") for i in range(8)))
            return client.stats.token_renewals

    assert run(go()) == 1
    assert upstream.tokens_issued == 2


def test_retry_after_holds_back_requests_already_waiting_for_a_slot() -> None:
    answers = iter([429] + [200] * 10)

    def data(request: httpx.Request) -> httpx.Response:
        if next(answers) == 429:
            return httpx.Response(429, headers={"Retry-After": "3"}, json={"error": "rate_limited"})
        return httpx.Response(200, json={"user_id": "u1", "course_id": 1})

    sleeps: list[float] = []

    async def go() -> None:
        async with make_client(Upstream(data), sleeps, max_concurrency=1) as client:
            await asyncio.gather(*(client.get_enrolment_detail(1, f"u{i}") for i in range(4)))

    run(go())
    # the retry waits 3 s, and so does each of the three requests that were queued for the slot when the 429
    # came (the fake sleep returns at once, so the pause never runs out): checked before taking a slot, they
    # would have gone out at once
    assert len([s for s in sleeps if s > 2]) >= 4
