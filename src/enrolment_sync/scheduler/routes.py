"""HTTP for sync requests: `POST /jobs/enrolment-sync?wait=false` queues one (202), `GET /jobs/requests/{id}`
follows it, and what /healthz says of the scheduler."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from .. import db
from . import store


def request_routes(require_token: Callable[[Request], Awaitable[None]]) -> APIRouter:
    router = APIRouter()

    @router.get("/jobs/requests/{request_id}", name="request_status", dependencies=[Depends(require_token)])
    async def request_status(request_id: int, request: Request) -> JSONResponse:
        """A sync request's state (QUEUED, RUNNING, SUCCESS, FAILED); once finished, the run's answer."""
        database: db.Database = request.app.state.db
        async with database.transaction() as conn:
            found = await store.get_request(conn, request_id)
        if found is None:
            return JSONResponse({"ok": False, "error": f"no sync request with id {request_id}"}, status_code=404)
        return JSONResponse(found)

    return router


async def queue_request(request: Request, body: dict[str, Any]) -> JSONResponse:
    """Queue (or coalesce) a request for the runner; 202 with where to follow it."""
    database: db.Database = request.app.state.db
    async with database.transaction() as conn:
        request_id = await store.create_request(conn, **body, requested_by="api")
    unattended = getattr(request.app.state, "unattended", None)
    if unattended is not None:
        unattended.wake_runner()
    status_url = str(request.url_for("request_status", request_id=request_id))
    return JSONResponse(
        {"ok": True, "request_id": request_id, "state": "QUEUED", "status_url": status_url}, status_code=202
    )


async def scheduler_health(state: Any) -> dict[str, Any]:
    """This process's loop when it runs one; otherwise the latest heartbeat of any process."""
    unattended = getattr(state, "unattended", None)
    if unattended is not None:
        return dict(unattended.health(asyncio.get_running_loop().time()))
    database: db.Database = state.db
    async with database.connection() as conn:
        row = await db.fetch_one(conn, "heartbeat_latest")
    return {
        "running": False,
        "latest_heartbeat_worker": row["worker_id"] if row else None,
        "latest_heartbeat_age_s": round(row["age_s"], 3) if row else None,
    }
