"""The console's pages and actions under /ops. Thin: read through ConsoleStore, act through Actions."""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Form, HTTPException, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response

from . import history_pages, present
from .actions import Actions, Outcome
from .auth import COOKIE_PATH, SESSION_COOKIE, Forbidden, Gate, ReadOnly, Viewer, own_origin, safe_next, same_origin
from .render import page, secure
from .store import AuditEntry, ConsoleStore

router = APIRouter(prefix="/ops", include_in_schema=False)


def _gate(request: Request) -> Gate:
    gate: Gate = request.app.state.ops_gate
    return gate


def current_viewer(request: Request) -> Viewer:
    return _gate(request).viewer(request)


def _store(request: Request) -> ConsoleStore:
    return ConsoleStore(request.app.state.db)


def _actions(request: Request) -> Actions:
    state = request.app.state
    if getattr(state, "ops_actions", None) is None:
        state.ops_actions = Actions(ConsoleStore(state.db), clock=state.ops_clock)
    actions: Actions = state.ops_actions
    return actions


def _remote(request: Request) -> str | None:
    return request.client.host if request.client else None


def _refresh_s(request: Request) -> float:
    refresh: float = request.app.state.ops_refresh_s
    return refresh


Who = Annotated[Viewer, Depends(current_viewer)]
CsrfToken = Annotated[str | None, Form()]


# Logging in and out


@router.get("/login")
async def login_form(request: Request, next: str | None = None) -> Response:
    """The login form."""
    gate = _gate(request)
    if not gate.enabled:
        return page(request, "disabled.html", viewer=None, status_code=503)
    return page(request, "login.html", viewer=None, next=safe_next(next), error=None, logins=gate.logins_enabled)


@router.post("/login")
async def login(
    request: Request,
    username: Annotated[str, Form()] = "",
    password: Annotated[str, Form()] = "",
    next: Annotated[str, Form()] = COOKIE_PATH,
) -> Response:
    """Check a login; on success set the signed, HttpOnly, SameSite session cookie."""
    gate = _gate(request)
    if not gate.logins_enabled:
        return page(request, "disabled.html", viewer=None, status_code=503)
    if not same_origin(
        own_origin(request), origin=request.headers.get("origin"), referer=request.headers.get("referer")
    ):
        raise Forbidden("다른 출처(origin)에서 온 로그인 요청입니다")
    viewer = gate.login(username, password)
    name = " ".join(username.split())[:64] or "(없음)"
    store = _store(request)
    async with store.database.transaction() as conn:
        outcome = "OK" if viewer else "DENIED"
        role = str(viewer.role) if viewer else "readonly"
        await store.record(conn, AuditEntry(name, role, "login", "console", outcome, {}, _remote(request)))
    if viewer is None:
        return page(
            request,
            "login.html",
            viewer=None,
            status_code=401,
            next=safe_next(next),
            error="사용자 이름 또는 비밀번호가 맞지 않습니다.",
            logins=True,
        )
    response = RedirectResponse(safe_next(next), status_code=303)
    response.set_cookie(
        SESSION_COOKIE,
        gate.session_cookie(viewer),
        max_age=gate.max_age_s,
        path=COOKIE_PATH,
        httponly=True,
        samesite="lax",
        secure=request.url.scheme == "https",
    )
    return secure(response)


@router.post("/logout")
async def logout(request: Request, who: Who, csrf_token: CsrfToken = None) -> Response:
    """End the session (the cookie is dropped)."""
    _gate(request).check_origin_and_token(request, who, csrf_token)
    response = RedirectResponse(f"{COOKIE_PATH}/login?notice=logged_out", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path=COOKIE_PATH)
    return secure(response)


# Pages


@router.get("")
async def overview(request: Request, who: Who) -> Response:
    """개요: one line per cohort, the lease, the queues, open high alerts."""
    data = await _store(request).overview()
    return page(request, "overview.html", viewer=who, section="overview", refresh_s=_refresh_s(request), **data)


@router.get("/runs")
async def runs(request: Request, who: Who) -> Response:
    """실행: run_log, filtered and paged."""
    where = present.RunFilter.parse(request.query_params)
    listed = await _store(request).runs(where)
    return page(
        request, "runs.html", viewer=who, section="runs", refresh_s=_refresh_s(request), where=where, runs=listed
    )


@router.get("/runs/{run_id}")
async def run_detail(request: Request, run_id: int, who: Who) -> Response:
    """One run: summary, report, error, alerts, neighbours, sheet rows, notifications, a chart of its cohort."""
    data = await _store(request).run_detail(run_id)
    if data is None:
        raise HTTPException(404, f"실행 {run_id} 이(가) 없습니다")
    refresh = _refresh_s(request) if data["run"]["status"] == "RUNNING" else 0
    return page(request, "run.html", viewer=who, section="runs", refresh_s=refresh, **data)


@router.get("/alerts")
async def alerts(request: Request, who: Who) -> Response:
    """알림: open (or all) alerts, 3-4, 4-3 and 4-2."""
    filters = present.AlertFilter.parse(request.query_params)
    data = await _store(request).alerts(filters)
    return page(request, "alerts.html", viewer=who, section="alerts", filters=filters, **data)


@router.get("/alerts/{alert_id}")
async def alert_detail(request: Request, alert_id: int, who: Who) -> Response:
    """One alert: its text, detail, occurrences, resolution and the console actions on it."""
    data = await _store(request).alert_detail(alert_id)
    if data is None:
        raise HTTPException(404, f"알림 {alert_id} 이(가) 없습니다")
    return page(request, "alert.html", viewer=who, section="alerts", **data)


@router.get("/learners")
async def learners(request: Request, who: Who) -> Response:
    """수강생: a cohort's records (3-6), searched by learner or course; one learner's records and changes."""
    q = request.query_params
    store = _store(request)
    cohorts = [c["category_id"] for c in (await store.overview())["cohorts"]]
    category_id = present.positive_int(q.get("category_id")) or (cohorts[0] if cohorts else None)
    search = (q.get("q") or "").strip()[:100]
    user_id = (q.get("user_id") or "").strip()[:100] or None
    records = await store.records(category_id, search) if category_id else []
    learner = await store.learner(category_id, user_id) if category_id and user_id else None
    if learner is not None and category_id and user_id:
        learner["timeline"] = await history_pages.learner_timeline(request, category_id, user_id)
    context: dict[str, Any] = {"cohorts": cohorts, "category_id": category_id, "q": search, "user_id": user_id}
    return page(request, "learners.html", viewer=who, section="learners", records=records, learner=learner, **context)


@router.get("/queues")
async def queues(request: Request, who: Who) -> Response:
    """큐: backlog and oldest open message per queue, dead messages with their errors."""
    q = request.query_params
    data = await _store(request).queues(
        before_sheet=present.positive_int(q.get("sheet_before")),
        before_notification=present.positive_int(q.get("notification_before")),
    )
    return page(request, "queues.html", viewer=who, section="queues", refresh_s=_refresh_s(request), **data)


@router.get("/schedules")
async def schedules(request: Request, who: Who) -> Response:
    """스케줄: every schedule, its next slot, the last slots' outcomes."""
    data = await _store(request).schedules()
    return page(request, "schedules.html", viewer=who, section="schedules", refresh_s=_refresh_s(request), **data)


@router.get("/silences")
async def silences(request: Request, who: Who) -> Response:
    """무음: active, future and recently ended silences; add one or remove one."""
    return await _silences_page(request, who)


async def _silences_page(
    request: Request, who: Viewer, *, error: str | None = None, form: dict[str, str] | None = None
) -> Response:
    now = request.app.state.ops_clock.now()
    data = await _store(request).silences(now)
    return page(
        request,
        "silences.html",
        viewer=who,
        section="silences",
        status_code=422 if error else 200,
        error=error,
        form=form or {},
        now=now,
        silence_types=present.SILENCE_ALERT_TYPES,
        **data,
    )


@router.get("/audit")
async def audit(request: Request, who: Who) -> Response:
    """감사 기록: every console action, newest first."""
    listed = await _store(request).audit(present.positive_int(request.query_params.get("before_id")))
    return page(request, "audit.html", viewer=who, section="audit", entries=listed)


# Actions: each checks origin, CSRF token and role first; a read-only login's attempt is recorded.


async def _allowed(request: Request, who: Viewer, csrf_token: str | None, action: str, target: str) -> None:
    try:
        _gate(request).check_action(request, who, csrf_token)
    except ReadOnly as exc:
        await _actions(request).deny(who, action, target, exc.reason, _remote(request))
        raise


def _answer(who: Viewer, result: Outcome, back: str) -> Response:
    if who.by_token:
        body = {"ok": result.ok, "outcome": result.outcome, "notice": result.notice, "detail": result.detail}
        return JSONResponse(body, status_code=200 if result.ok else 409)
    separator = "&" if "?" in back else "?"
    return secure(RedirectResponse(f"{back}{separator}{urlencode({'notice': result.notice})}", status_code=303))


@router.post("/alerts/{alert_id}/resolve")
async def resolve_alert(request: Request, alert_id: int, who: Who, csrf_token: CsrfToken = None) -> Response:
    """Resolve one alert (resolved_by = console:<name>)."""
    await _allowed(request, who, csrf_token, "resolve_alert", f"alert:{alert_id}")
    result = await _actions(request).resolve_alert(who, alert_id, _remote(request))
    return _answer(who, result, f"{COOKIE_PATH}/alerts/{alert_id}")


@router.post("/alerts/{alert_id}/acknowledge")
async def acknowledge_alert(
    request: Request,
    alert_id: int,
    who: Who,
    csrf_token: CsrfToken = None,
    note: Annotated[str, Form()] = "",
) -> Response:
    """Acknowledge one open alert (acknowledged_by = console:<name>, with an optional note)."""
    await _allowed(request, who, csrf_token, "acknowledge_alert", f"alert:{alert_id}")
    text = " ".join(note.split())[:500] or None
    result = await _actions(request).acknowledge_alert(who, alert_id, text, _remote(request))
    return _answer(who, result, f"{COOKIE_PATH}/alerts/{alert_id}")


@router.post("/silences")
async def add_silence(request: Request, who: Who, csrf_token: CsrfToken = None) -> Response:
    """Add a silence from the form (times in KST); a bad field answers the form again, naming it."""
    await _allowed(request, who, csrf_token, "add_silence", "silences")
    form = {k: str(v)[:500] for k, v in (await request.form()).items() if k in present.SILENCE_FIELDS}
    try:
        spec = present.silence_from_form(form, now=request.app.state.ops_clock.now())
    except present.SilenceFormError as exc:
        if who.by_token:
            return JSONResponse({"ok": False, "field": exc.field, "error": str(exc)}, status_code=422)
        return await _silences_page(request, who, error=str(exc), form=form)
    result = await _actions(request).add_silence(who, spec, _remote(request))
    return _answer(who, result, f"{COOKIE_PATH}/silences")


@router.post("/silences/{silence_id}/remove")
async def remove_silence(request: Request, silence_id: int, who: Who, csrf_token: CsrfToken = None) -> Response:
    """End a silence now (kept, marked removed by console:<name>)."""
    await _allowed(request, who, csrf_token, "remove_silence", "silences")
    result = await _actions(request).remove_silence(who, silence_id, _remote(request))
    return _answer(who, result, f"{COOKIE_PATH}/silences")


@router.post("/queues/{queue}/requeue")
async def requeue(
    request: Request,
    queue: str,
    who: Who,
    csrf_token: CsrfToken = None,
    message_id: Annotated[int | None, Form()] = None,
) -> Response:
    """Re-queue one dead message, or the oldest dead messages of the queue."""
    table = present.QUEUES.get(queue)
    if table is None:
        raise HTTPException(404, f"큐 {queue!r} 이(가) 없습니다 (sheet 또는 notification)")
    await _allowed(request, who, csrf_token, "requeue_dead", "queues")
    result = await _actions(request).requeue(who, table, [message_id] if message_id else None, _remote(request))
    return _answer(who, result, f"{COOKIE_PATH}/queues")


@router.post("/schedules/{schedule_id}/{change}")
async def set_schedule(
    request: Request, schedule_id: int, change: str, who: Who, csrf_token: CsrfToken = None
) -> Response:
    """Pause or resume a schedule."""
    if change not in ("pause", "resume"):
        raise HTTPException(404, "pause 또는 resume 만 있습니다")
    await _allowed(request, who, csrf_token, f"{change}_schedule", "schedules")
    result = await _actions(request).set_schedule(who, schedule_id, enable=change == "resume", remote=_remote(request))
    return _answer(who, result, f"{COOKIE_PATH}/schedules")


@router.post("/cohorts/{category_id}/run")
async def run_now(
    request: Request,
    category_id: int,
    who: Who,
    csrf_token: CsrfToken = None,
    trigger_type: Annotated[str, Form()] = "MANUAL",
) -> Response:
    """Sync a cohort now (trigger MANUAL, or RETRY after a failure)."""
    if category_id <= 0 or trigger_type not in ("MANUAL", "RETRY"):
        raise HTTPException(422, "category_id 는 양의 정수, trigger_type 은 MANUAL 또는 RETRY 여야 합니다")
    await _allowed(request, who, csrf_token, "run_now", f"category:{category_id}")
    unattended = getattr(request.app.state, "unattended", None)
    wake = unattended.wake_runner if unattended is not None else None
    result = await _actions(request).run_now(who, category_id, trigger_type, _remote(request), wake=wake)  # type: ignore[arg-type]
    return _answer(who, result, f"{COOKIE_PATH}/runs?{urlencode({'category_id': category_id})}")
