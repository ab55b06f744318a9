"""The operations console at /ops (docs/console.md): Korean pages over the worker's tables, and a few actions."""

from __future__ import annotations

from urllib.parse import urlencode

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

from ..clock import Clock, SystemClock
from ..config import Settings
from . import history_pages
from .auth import COOKIE_PATH, ConsoleDisabled, Forbidden, Gate, NotSignedIn
from .metrics import router as metrics_router
from .render import page, secure
from .routes import router

__all__ = ["install"]


def _wants_json(request: Request) -> bool:
    return "authorization" in request.headers or "application/json" in request.headers.get("accept", "")


def install(app: FastAPI, settings: Settings, *, clock: Clock | None = None) -> None:
    """Mount the console on the app: its routes, its static files (vendored htmx and Chart.js), its refusals."""
    app.state.ops_gate = Gate(settings)
    app.state.ops_clock = clock or SystemClock()
    app.state.ops_refresh_s = settings.ops_refresh_seconds
    app.state.ops_actions = None
    app.include_router(router)
    app.include_router(metrics_router)
    app.include_router(history_pages.router)
    app.mount(f"{COOKIE_PATH}/static", StaticFiles(packages=[("enrolment_sync.web", "static")]), name="ops-static")

    @app.exception_handler(NotSignedIn)
    async def _not_signed_in(request: Request, _exc: NotSignedIn) -> Response:
        if _wants_json(request):
            body = {"ok": False, "error": "missing or wrong credentials"}
            return JSONResponse(body, status_code=401, headers={"WWW-Authenticate": "Bearer"})
        if request.method == "GET" and "hx-request" not in request.headers:
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            return secure(RedirectResponse(f"{COOKIE_PATH}/login?{urlencode({'next': target})}", status_code=303))
        response = page(request, "login.html", viewer=None, status_code=401, next=COOKIE_PATH, error=None, logins=True)
        response.headers["HX-Redirect"] = f"{COOKIE_PATH}/login"
        return response

    @app.exception_handler(Forbidden)
    async def _forbidden(request: Request, exc: Forbidden) -> Response:
        if _wants_json(request):
            return JSONResponse({"ok": False, "error": exc.reason}, status_code=403)
        return page(request, "error.html", viewer=None, status_code=403, title="거부됨", message=exc.reason)

    @app.exception_handler(ConsoleDisabled)
    async def _disabled(request: Request, _exc: ConsoleDisabled) -> Response:
        if _wants_json(request):
            return JSONResponse({"ok": False, "error": "the console is disabled: no console credential is set"}, 503)
        return page(request, "disabled.html", viewer=None, status_code=503)
