"""The simulator's side of the KVCA contract: the `/api/v1` endpoints, with the pipeline every call goes through.

Request pipeline for every `/api/v1` call: count it in the stats and in `in_flight`; when `max_in_flight` is
set and that many requests are already in flight, a data request (not the token call) answers 429 with
`Retry-After: 1` right away (it is still counted in `in_flight` while it is answered, so `max_in_flight` in
the stats shows what the client attempted); otherwise the first queued fault matching the path (plus
`?query`) is consumed, the latency is slept, and the fault (or, for a timeout fault, a hang of `hang_s`
seconds followed by the normal answer) replaces the real answer. A hang ends early when the client
disconnects or the server shuts down. A drip fault (`drip_s`) sends the normal answer's body in 20 pieces over
`drip_s` seconds; an `echo` fault's error body repeats the request's Authorization header and body and the
configured client secret. Then the bearer token is checked (not for the token call) and the real handler
answers. Every call is logged (`GET /_control/requests`: arrival time, kind, the target as sent).

The detail's `user_id` is read from the raw path's last segment, decoded on its own, so an id holding `/`,
`?`, `#` or `..` sent percent-encoded reaches its learner.

Paging: `per_page` defaults to 100 and is clamped to 1..100, `page` below 1 is treated as 1; `total_pages` is
at least 1 (an empty list is one empty page), or what `POST /_control/paging` told a path to claim; a page
past the end has no items. Non-integer paging
parameters answer 400 `{"error": "bad_request"}`.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote

from fastapi import FastAPI, Request
from fastapi.responses import Response, StreamingResponse

from .state import SimulatorState

API_PREFIX = "/api/v1"
MAX_PER_PAGE = 100


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()


def json_response(status: int, obj: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(content=_dumps(obj), status_code=status, media_type="application/json", headers=headers)


def _error_body(status: int) -> dict[str, str]:
    if status == 401:
        return {"error": "invalid_token"}
    if status == 404:
        return {"error": "not_found"}
    if status == 409:
        return {"error": "conflict"}
    if status == 429:
        return {"error": "rate_limited"}
    if status >= 500:
        return {"error": "upstream_error"}
    if status == 403:
        return {"error": "forbidden"}
    return {"error": "bad_request"}


def _paging(items_total: int, page: int, per_page: int) -> tuple[int, int, int]:
    """Return (start, end, total_pages) for 1-based ``page``."""
    total_pages = max(1, -(-items_total // per_page))
    start = (page - 1) * per_page
    return start, min(start + per_page, items_total), total_pages


def _int_param(request: Request, name: str, default: int) -> int:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    return int(raw)


def _raw_last_segment(request: Request) -> str:
    """The path's last segment decoded on its own: routing sees the decoded path, where an id's `%2F` is a `/`."""
    raw: bytes = request.scope.get("raw_path") or request.url.path.encode()
    return unquote(raw.decode("latin-1").rsplit("/", 1)[-1])


def _bearer(request: Request) -> str | None:
    auth = request.headers.get("authorization")
    if not auth:
        return None
    scheme, _, token = auth.partition(" ")
    if scheme.lower() != "bearer" or not token:
        return None
    return token.strip()


class _Api:
    """The /api/v1 handlers bound to one state."""

    def __init__(self, state: SimulatorState) -> None:
        self.state = state

    async def run(self, request: Request, kind: str, handler: Callable[[], Response]) -> Response:
        st = self.state
        scope = request.scope
        target: str = scope["path"]
        qs: bytes = scope.get("query_string", b"")
        if qs:
            target = f"{target}?{qs.decode('latin-1')}"
        with st._lock:
            st.requests_total += 1
            st.requests_by_kind[kind] += 1
            raw = scope.get("raw_path", b"").decode("latin-1") + (f"?{qs.decode('latin-1')}" if qs else "")
            st.request_log.append((time.monotonic(), kind, raw))
            limit = st.max_in_flight_limit
            rejected = limit is not None and kind != "token" and st.in_flight >= limit
            st.in_flight += 1
            if st.in_flight > st.in_flight_peak:
                st.in_flight_peak = st.in_flight
            fault = None if rejected else st._take_fault(target)
            latency = st.latency_ms
        status = 500
        try:
            if rejected:
                with st._lock:
                    st.rate_limited += 1
                response = json_response(429, {"error": "rate_limited"}, {"Retry-After": "1"})
            else:
                if latency > 0:
                    await asyncio.sleep(latency / 1000.0)
                drip_s = 0.0
                if fault is not None and fault.timeout:
                    await self._hang(request, fault.hang_s)
                    fault = None
                elif fault is not None and fault.drip_s:
                    drip_s, fault = fault.drip_s, None
                if fault is not None:
                    with st._lock:
                        st.faults_served += 1
                    retry_after = fault.retry_after
                    headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
                    body: dict[str, Any] = dict(_error_body(fault.status))
                    if fault.echo:
                        body["echo"] = await self._echo(request)
                    response = json_response(fault.status, body, headers)
                elif kind != "token" and not self._authorised(request):
                    response = json_response(401, {"error": "invalid_token"})
                else:
                    response = handler()
                if drip_s:
                    response = self._drip(response, drip_s)
            status = response.status_code
            return response
        finally:
            key = str(status)
            with st._lock:
                st.in_flight -= 1
                st.responses_by_status[key] = st.responses_by_status.get(key, 0) + 1

    def _authorised(self, request: Request) -> bool:
        token = _bearer(request)
        return token is not None and self.state.token_valid(token)

    async def _echo(self, request: Request) -> dict[str, Any]:
        """What a careless upstream repeats in an error: the request's credentials, and its own copy of the secret."""
        return {
            "authorization": request.headers.get("authorization"),
            "body": (await request.body()).decode("utf-8", "replace"),
            "configured_client_secret": self.state.client_secret,
        }

    def _drip(self, response: Response, drip_s: float) -> Response:
        """The same answer, its body sent in 20 pieces spread over `drip_s` seconds."""
        body = bytes(response.body)
        pieces = 20
        step = max(1, -(-len(body) // pieces))
        state = self.state

        async def chunks() -> Any:
            for start in range(0, len(body), step):
                if state.shutting_down:
                    return
                yield body[start : start + step]
                await asyncio.sleep(drip_s / pieces)

        return StreamingResponse(chunks(), status_code=response.status_code, media_type="application/json")

    async def _hang(self, request: Request, hang_s: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + hang_s
        while not self.state.shutting_down:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            await asyncio.sleep(min(0.05, remaining))
            if await request.is_disconnected():
                return

    # handlers: called with the request already authorised; they take the lock for consistency
    def token(self, body: bytes) -> Response:
        try:
            data = json.loads(body or b"null")
        except ValueError:
            return json_response(400, {"error": "bad_request"})
        if not isinstance(data, dict):
            return json_response(400, {"error": "bad_request"})
        client_id, client_secret = data.get("client_id"), data.get("client_secret")
        if not isinstance(client_id, str) or not isinstance(client_secret, str):
            return json_response(401, {"error": "invalid_client"})
        token = self.state.issue_token(client_id, client_secret)
        if token is None:
            return json_response(401, {"error": "invalid_client"})
        return json_response(
            200, {"access_token": token, "token_type": "Bearer", "expires_in": self.state.config.token_ttl_s}
        )

    def category(self, request: Request) -> Response:
        try:
            cat_id = int(request.path_params["category_id"])
        except ValueError:
            return json_response(404, {"error": "not_found"})
        st = self.state
        with st._lock:
            cat = st.categories.get(cat_id)
            if cat is None:
                return json_response(404, {"error": "not_found"})
            return json_response(200, cat)

    def courses(self, request: Request) -> Response:
        st = self.state

        def listing(cat_id: int) -> tuple[list[int], Callable[[int], Any]] | None:
            ids = st.category_courses.get(cat_id)
            return None if ids is None else (ids, lambda c: st.courses[c].info)

        return self._page_of(request, "category_id", listing)

    def enrolments(self, request: Request) -> Response:
        st = self.state

        def listing(course_id: int) -> tuple[list[str], Callable[[str], Any]] | None:
            course = st.courses.get(course_id)
            return None if course is None else (course.sorted_user_ids(), course.rows.__getitem__)

        return self._page_of(request, "course_id", listing)

    def _page_of(self, request: Request, id_param: str, listing: Callable[[int], Any]) -> Response:
        """One page of a list: 404 for an unknown (or non-integer) id, 400 for bad paging parameters."""
        try:
            owner_id = int(request.path_params[id_param])
        except ValueError:
            return json_response(404, {"error": "not_found"})
        try:
            page, per_page = self._page_args(request)
        except ValueError:
            return json_response(400, {"error": "bad_request"})
        with self.state._lock:
            found = listing(owner_id)
            if found is None:
                return json_response(404, {"error": "not_found"})
            keys, item = found
            start, end, total_pages = _paging(len(keys), page, per_page)
            total_pages = self.state.claimed_pages(request.url.path, total_pages)
            items = [item(k) for k in keys[start:end]]
            return json_response(
                200,
                {
                    "items": items,
                    "page": page,
                    "per_page": per_page,
                    "total_pages": total_pages,
                    "total_items": len(keys),
                },
            )

    def detail(self, request: Request) -> Response:
        params = request.path_params
        try:
            course_id = int(params["course_id"])
        except ValueError:
            return json_response(404, {"error": "not_found"})
        st = self.state
        with st._lock:
            course = st.courses.get(course_id)
            detail = course.details.get(_raw_last_segment(request)) if course is not None else None
            if detail is None:
                return json_response(404, {"error": "not_found"})
            return json_response(200, detail)

    @staticmethod
    def _page_args(request: Request) -> tuple[int, int]:
        page = max(1, _int_param(request, "page", 1))
        per_page = min(MAX_PER_PAGE, max(1, _int_param(request, "per_page", MAX_PER_PAGE)))
        return page, per_page


def add_contract_routes(app: FastAPI, state: SimulatorState) -> None:
    """The contract's endpoints under /api/v1, answering from `state`."""
    api = _Api(state)

    @app.post(f"{API_PREFIX}/auth/token")
    async def token(request: Request) -> Response:
        body = await request.body()
        return await api.run(request, "token", lambda: api.token(body))

    @app.get(API_PREFIX + "/categories/{category_id}")
    async def category(request: Request) -> Response:
        return await api.run(request, "category", lambda: api.category(request))

    @app.get(API_PREFIX + "/categories/{category_id}/courses")
    async def courses(request: Request) -> Response:
        return await api.run(request, "courses", lambda: api.courses(request))

    @app.get(API_PREFIX + "/courses/{course_id}/enrolments")
    async def enrolments(request: Request) -> Response:
        return await api.run(request, "enrolments", lambda: api.enrolments(request))

    @app.get(API_PREFIX + "/courses/{course_id}/enrolments/{user_id:path}")
    async def detail(request: Request) -> Response:
        return await api.run(request, "detail", lambda: api.detail(request))
