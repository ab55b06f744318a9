"""The worker's HTTP API: routes are thin, the work is in job.SyncJob; here a job's outcome becomes an answer."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from typing import Any, Literal

import structlog
from fastapi import Depends, FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from . import db, web
from .clock import Clock
from .config import Settings
from .errors import EnrolmentSyncError
from .failures import HTTP_STATUS_BY_GROUP
from .job import JobOutcome, SyncJob
from .kvca.factory import ClientFactory, client_from_settings
from .redact import redact, redact_json, register_settings
from .scheduler.routes import queue_request, request_routes, scheduler_health
from .scheduler.service import Unattended
from .sync import SyncRequest, SyncSummary
from .web.auth import COOKIE_PATH as CONSOLE_PATH

log = structlog.get_logger(__name__)
MAX_BODY_BYTES = 64 * 1024

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class SyncJobBody(BaseModel):
    """Step 1's request body."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"category_id": 303, "trigger_type": "SCHEDULER", "max_categories": 1, "max_users_per_course": 500}
            ]
        },
    )

    category_id: int = Field(gt=0, le=db.BIGINT_MAX, strict=True, description="The category (기수) to sync. Required.")
    trigger_type: Literal["MANUAL", "SCHEDULER", "RETRY"] = "MANUAL"
    max_categories: int = Field(default=1, ge=1, le=100, strict=True)
    max_users_per_course: int = Field(default=500, ge=1, le=100_000, strict=True)


def answer_status(outcome: JobOutcome) -> int:
    return 200 if outcome.failure is None else HTTP_STATUS_BY_GROUP[outcome.failure.group]


def answer_body(outcome: JobOutcome) -> dict[str, Any]:
    """Step 1's answer: ok, run_id and the eight counters; a failure adds its group, status and text."""
    if outcome.ok:
        return {
            "ok": True,
            "run_id": outcome.run_id,
            "summary": outcome.summary.public(),
            "report": _report(outcome.summary),
        }
    assert outcome.failure is not None
    return {
        "ok": False,
        "run_id": outcome.run_id,
        "error_group": str(outcome.failure.group),
        "http_status_code": outcome.failure.http_status_code,
        "error": redact(outcome.failure.message),
        "summary": outcome.summary.public(),
    }


def _report(s: SyncSummary) -> dict[str, Any]:
    return {
        "records_written": s.records_written,
        "suppressed_alerts": s.suppressed_alerts,
        "details_skipped": s.details_skipped_count,
        "capped_courses": s.capped_courses,
        "vanished_records": s.vanished_count,
        "rejected_rows": s.rejected_rows,
        "empty_course_lists": s.empty_course_lists,
        "upstream_requests": s.upstream_requests,
    }


class BodySizeLimit:
    """413 for bodies over the limit, whether Content-Length says so or the stream proves it."""

    def __init__(self, app: ASGIApp, *, max_bytes: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length" and value.isdigit() and int(value) > self.max_bytes:
                await self._too_large(send)
                return
        # Read the (small) body first, so an oversized stream is refused before any handler sees it.
        chunks: list[bytes] = []
        seen = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunk = message.get("body", b"")
            seen += len(chunk)
            if seen > self.max_bytes:
                await self._too_large(send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _too_large(self, send: Send) -> None:
        body = b'{"ok":false,"error":"request body is larger than ' + str(self.max_bytes).encode() + b' bytes"}'
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})


def create_app(
    settings: Settings,
    *,
    database_url: str,
    clock: Clock | None = None,
    client_factory: ClientFactory = client_from_settings,
    worker_id: str | None = None,
    unattended: bool = False,
) -> FastAPI:
    """Build the app. The database pool opens in the lifespan; abandoned runs are closed at start.

    `unattended`: also run the scheduler loop and the request runner (what `serve` does unless --api-only).
    """
    register_settings(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        database = db.Database(db.parse_target(database_url), max_size=max(4, settings.kvca_max_concurrency))
        await database.open()
        job = SyncJob(database, settings, clock=clock, client_factory=client_factory, worker_id=worker_id)
        await job.close_abandoned()
        app.state.db = database
        app.state.job = job
        loops = (
            Unattended(database, settings, job, answer=lambda o: (answer_status(o), answer_body(o)))
            if unattended
            else None
        )
        app.state.unattended = loops
        if loops is not None:
            loops.start()
        try:
            yield
        finally:
            if loops is not None:
                await loops.stop()
            await database.close()

    app = FastAPI(
        title="enrolment-sync worker",
        description="Mirrors one cohort's enrolments from the KVCA LMS into Postgres (Step 1 of the seeds).",
        version="0.1.0",
        lifespan=lifespan,
    )
    token = settings.worker_api_token.get_secret_value() if settings.worker_api_token else None

    async def require_token(request: Request) -> None:
        if token is None:
            return
        supplied = request.headers.get("authorization", "")
        scheme, _, value = supplied.partition(" ")
        if scheme.lower() != "bearer" or not secrets.compare_digest(value.encode(), token.encode()):
            raise _Unauthorized

    @app.exception_handler(_Unauthorized)
    async def _unauthorized(_request: Request, _exc: _Unauthorized) -> JSONResponse:
        return JSONResponse(
            {"ok": False, "error": "missing or wrong bearer token"},
            status_code=401,
            headers={"WWW-Authenticate": "Bearer"},
        )

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = []
        for err in exc.errors():
            loc = [str(p) for p in err["loc"] if p != "body"]
            field = ".".join(loc) or "body"
            problems.append({"field": field, "message": err["msg"]})
        text = "; ".join(f"{p['field']}: {p['message']}" for p in problems)
        answer = {"ok": False, "error": f"invalid request: {text}", "problems": problems}
        return JSONResponse(redact_json(answer), status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if request.url.path.startswith(CONSOLE_PATH):
            return await http_exception_handler(request, exc)  # the console's own pages keep FastAPI's answer
        return JSONResponse({"ok": False, "error": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        """Whatever escaped a route still answers the documented JSON shape: never a text/plain 500, never the
        exception's text unless it is one of ours (a driver's text may carry internals or secrets)."""
        log.error("request failed", path=request.url.path, error_type=type(exc).__name__, exc_info=exc)
        if isinstance(exc, EnrolmentSyncError):
            error = str(exc)
        else:
            error = f"internal error ({type(exc).__name__}); the worker's log has the details"
        return JSONResponse({"ok": False, "error": error}, status_code=500)

    @app.post("/jobs/enrolment-sync", dependencies=[Depends(require_token)])
    async def enrolment_sync(body: SyncJobBody, request: Request, wait: bool = True) -> JSONResponse:
        """Sync one category's enrolments now (Step 1). 409 while another run holds the lease.

        `?wait=false` queues the request instead: 202 with its id and a status URL (GET /jobs/requests/{id}).
        """
        if not wait:
            return await queue_request(request, body.model_dump())
        job: SyncJob = request.app.state.job
        outcome = await job.execute(SyncRequest(**body.model_dump()))
        return JSONResponse(answer_body(outcome), status_code=answer_status(outcome))

    @app.get("/healthz")
    async def healthz(request: Request) -> JSONResponse:
        """Liveness and readiness: the database answers and the schema is migrated."""
        database: db.Database = request.app.state.db
        try:
            migrations = await database.migrations_applied()
        except Exception as exc:
            log.warning("health check failed", error=str(exc))
            return JSONResponse({"ok": False, "database": "unreachable"}, status_code=503)
        scheduler = await scheduler_health(request.app.state)
        healthy = scheduler.get("alive", True)
        answer = {"ok": healthy, "database": "ok", "migrations": migrations, "scheduler": scheduler}
        return JSONResponse(answer, status_code=200 if healthy else 503)

    app.include_router(request_routes(require_token))

    web.install(app, settings, clock=clock)
    app.add_middleware(BodySizeLimit)
    return app


class _Unauthorized(Exception):
    pass
