"""The simulator's `/_control` routes (JSON, no auth, no latency): change data, inject faults, read stats.

`POST /_control/enrolments/{update,update-detail,add,remove,remove-detail-only}`, `POST
/_control/courses/unlist`, `POST /_control/faults` / `DELETE /_control/faults` / `GET /_control/faults`
(pending faults), `POST /_control/latency`, `POST /_control/rate-limit` (`{"max_in_flight": int|null}`), `POST
/_control/paging` (`{"path_contains": str, "total_pages": int}`: list answers lie about their page count),
`POST /_control/tokens/expire`, `POST /_control/credentials`, `GET /_control/stats`, `GET /_control/requests`
(the log of /api/v1 calls), `POST /_control/stats/reset`, `POST /_control/reset`. Errors: 404 `not_found`
(unknown course/learner), 409 `conflict` (add of an enrolled learner), 400 `bad_request`. `/_control/reset`
also restores latency, rate limit and credentials from the config; issued tokens stay valid.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import Response

from .data import DETAIL_FIELDS, ROW_UPDATE_FIELDS
from .endpoints import json_response
from .state import BadRequest, Conflict, NotFound, SimulatorError, SimulatorState


async def _body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if not raw:
        return {}
    data = json.loads(raw)
    if not isinstance(data, dict):
        raise BadRequest("body must be a JSON object")
    return data


def _control_error(exc: Exception) -> Response:
    if isinstance(exc, NotFound):
        return json_response(404, {"error": "not_found", "detail": str(exc)})
    if isinstance(exc, Conflict):
        return json_response(409, {"error": "conflict", "detail": str(exc)})
    return json_response(400, {"error": "bad_request", "detail": str(exc)})


def _course_user(data: dict[str, Any]) -> tuple[int, str]:
    try:
        course_id = int(data["course_id"])
        user_id = data["user_id"]
    except (KeyError, TypeError, ValueError) as exc:
        raise BadRequest("course_id (int) and user_id (str) are required") from exc
    if not isinstance(user_id, str):
        raise BadRequest("user_id must be a string")
    return course_id, user_id


def _optional_int(value: Any, name: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise BadRequest(f"{name} must be an integer")
    return int(value)


def add_control_routes(app: FastAPI, state: SimulatorState) -> None:
    """The /_control routes, acting on `state`."""

    async def control(request: Request, op: Callable[[dict[str, Any]], Any]) -> Response:
        try:
            data = await _body(request)
            result = op(data)
        except json.JSONDecodeError as exc:
            return json_response(400, {"error": "bad_request", "detail": str(exc)})
        except (SimulatorError, TypeError, ValueError) as exc:
            return _control_error(exc)
        return json_response(200, result if result is not None else {"ok": True})

    def _update(data: dict[str, Any]) -> Any:
        course_id, user_id = _course_user(data)
        fields = {k: data[k] for k in ROW_UPDATE_FIELDS if k in data}
        return state.update_enrolment(course_id, user_id, **fields)

    def _update_detail(data: dict[str, Any]) -> Any:
        course_id, user_id = _course_user(data)
        fields = {k: data[k] for k in DETAIL_FIELDS if k in data}
        return state.update_detail(course_id, user_id, **fields)

    def _remove(data: dict[str, Any]) -> Any:
        state.remove_enrolment(*_course_user(data))
        return None

    def _unlist_course(data: dict[str, Any]) -> Any:
        state.unlist_course(int(data["course_id"]))
        return None

    def _remove_detail(data: dict[str, Any]) -> Any:
        state.remove_detail_only(*_course_user(data))
        return None

    def _add(data: dict[str, Any]) -> Any:
        course_id, user_id = _course_user(data)
        return state.add_enrolment(course_id, user_id, data.get("status") or "ENROLLED")

    def _fault(data: dict[str, Any]) -> Any:
        status = _optional_int(data.get("status", 503), "status")
        count = _optional_int(data.get("count", 1), "count")
        hang_s = data.get("hang_s", 30.0)
        if not isinstance(hang_s, int | float) or isinstance(hang_s, bool):
            raise BadRequest("hang_s must be a number")
        path_contains = data.get("path_contains")
        if path_contains is not None and not isinstance(path_contains, str):
            raise BadRequest("path_contains must be a string or null")
        drip_s = data.get("drip_s", 0.0)
        if not isinstance(drip_s, int | float) or isinstance(drip_s, bool):
            raise BadRequest("drip_s must be a number")
        fault = state.add_fault(
            drip_s=float(drip_s),
            echo=bool(data.get("echo", False)),
            status=503 if status is None else status,
            count=1 if count is None else count,
            path_contains=path_contains,
            retry_after=_optional_int(data.get("retry_after"), "retry_after"),
            timeout=bool(data.get("timeout", False)),
            hang_s=float(hang_s),
        )
        return {"ok": True, "fault": fault.as_dict(), "pending": len(state.faults())}

    def _latency(data: dict[str, Any]) -> Any:
        value = data.get("latency_ms")
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise BadRequest("latency_ms must be a number")
        state.set_latency(value)
        return {"ok": True, "latency_ms": state.latency_ms}

    def _credentials(data: dict[str, Any]) -> Any:
        cid, secret = data.get("client_id"), data.get("client_secret")
        if not isinstance(cid, str) or not isinstance(secret, str):
            raise BadRequest("client_id and client_secret (str) are required")
        state.set_credentials(cid, secret)
        return None

    def _rate_limit(data: dict[str, Any]) -> Any:
        state.set_max_in_flight(_optional_int(data.get("max_in_flight"), "max_in_flight"))
        return {"ok": True, "max_in_flight": state.max_in_flight_limit}

    def _paging_claim(data: dict[str, Any]) -> Any:
        contains, pages = data.get("path_contains"), _optional_int(data.get("total_pages"), "total_pages")
        if not isinstance(contains, str) or pages is None:
            raise BadRequest("path_contains (str) and total_pages (int) are required")
        state.claim_total_pages(contains, pages)
        return None

    def _expire(_: dict[str, Any]) -> Any:
        state.expire_tokens()
        return None

    def _reset(_: dict[str, Any]) -> Any:
        state.reset()
        return None

    def _reset_stats(_: dict[str, Any]) -> Any:
        state.reset_stats()
        return None

    routes: dict[str, Callable[[dict[str, Any]], Any]] = {
        "/_control/enrolments/update": _update,
        "/_control/enrolments/update-detail": _update_detail,
        "/_control/enrolments/remove": _remove,
        "/_control/courses/unlist": _unlist_course,
        "/_control/enrolments/add": _add,
        "/_control/enrolments/remove-detail-only": _remove_detail,
        "/_control/faults": _fault,
        "/_control/latency": _latency,
        "/_control/rate-limit": _rate_limit,
        "/_control/paging": _paging_claim,
        "/_control/credentials": _credentials,
        "/_control/tokens/expire": _expire,
        "/_control/stats/reset": _reset_stats,
        "/_control/reset": _reset,
    }

    def _register(path: str, op: Callable[[dict[str, Any]], Any]) -> None:
        async def endpoint(request: Request) -> Response:
            return await control(request, op)

        app.add_api_route(path, endpoint, methods=["POST"], include_in_schema=False)

    for path, op in routes.items():
        _register(path, op)

    @app.delete("/_control/faults", include_in_schema=False)
    async def clear_faults() -> Response:
        state.clear_faults()
        return json_response(200, {"ok": True})

    @app.get("/_control/faults", include_in_schema=False)
    async def list_faults() -> Response:
        return json_response(200, {"faults": [f.as_dict() for f in state.faults()]})

    @app.get("/_control/requests", include_in_schema=False)
    async def requests() -> Response:
        return json_response(200, {"requests": state.requests()})

    @app.get("/_control/stats", include_in_schema=False)
    async def stats() -> Response:
        return json_response(200, state.stats())
