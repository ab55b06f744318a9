"""Jinja2 pages with the console's filters (KST, durations, Korean labels) and its security headers."""

from __future__ import annotations

import json
from typing import Any

import jinja2
from markupsafe import Markup
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from . import present
from .auth import Viewer

# Pages only load what the package serves: no inline script, no framing, forms post only to us.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}

NOTICES = {
    "resolved": "알림을 해결 처리했습니다.",
    "already_resolved": "이미 해결된 알림입니다.",
    "acknowledged": "알림을 확인(ack) 처리했습니다.",
    "not_acknowledgeable": "이미 해결되었거나 확인된 알림입니다.",
    "no_alert": "그런 알림이 없습니다.",
    "silence_added": "무음을 추가했습니다.",
    "silence_removed": "무음을 해제했습니다.",
    "no_silence": "그런 무음이 없거나 이미 해제되었습니다.",
    "requeued": "보류 메시지를 다시 대기열에 넣었습니다.",
    "nothing_dead": "다시 넣을 보류 메시지가 없습니다.",
    "run_queued": "동기화 요청을 넣었습니다. 곧 새 실행이 목록에 나타납니다.",
    "run_queued_elsewhere": "동기화 요청을 넣었습니다. 이 프로세스(--api-only)는 요청을 실행하지 않으므로, "
    "요청을 실행하는 다른 serve 프로세스가 처리합니다.",
    "logged_out": "로그아웃했습니다.",
    "pause_schedule": "스케줄을 일시 중지했습니다.",
    "resume_schedule": "스케줄을 다시 시작했습니다.",
    "schedule_unchanged": "스케줄이 이미 그 상태입니다.",
    "no_schedule": "그런 스케줄이 없습니다.",
}


def _number(value: Any) -> str:
    return "-" if value is None else f"{int(value):,}"


def _ko(value: Any, table: str) -> str:
    labels = {
        "status": present.STATUS_KO,
        "trigger": present.TRIGGER_KO,
        "severity": present.SEVERITY_KO,
        "alert_type": present.ALERT_TYPE_KO,
        "enrolment": present.ENROLMENT_KO,
    }[table]
    return labels.get(str(value), "-" if value is None else str(value))


def _pretty_json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, indent=2, sort_keys=True, default=str)


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("enrolment_sync.web", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        kst=present.kst, dur=present.duration, num=_number, ko=_ko, pretty=_pretty_json, chart_json=chart_json
    )
    env.globals.update(
        RUN_STATUSES=present.RUN_STATUSES,
        TRIGGER_TYPES=present.TRIGGER_TYPES,
        ALERT_TYPES=present.ALERT_TYPES,
        SEVERITIES=present.SEVERITIES,
        NOTICES=NOTICES,
    )
    return env


def page(
    request: Request,
    template: str,
    *,
    viewer: Viewer | None,
    section: str = "",
    status_code: int = 200,
    refresh_s: float = 0,
    **context: Any,
) -> HTMLResponse:
    """One page, or on an htmx refresh the same page (htmx swaps the part it asked for)."""
    notice = NOTICES.get(request.query_params.get("notice", ""))
    html = _ENV.get_template(template).render(
        request=request,
        viewer=viewer,
        section=section,
        notice=notice,
        refresh_s=refresh_s,
        **context,
    )
    return HTMLResponse(html, status_code=status_code, headers=SECURITY_HEADERS)


def secure(response: Response) -> Response:
    response.headers.update(SECURITY_HEADERS)
    return response


def chart_json(data: dict[str, Any]) -> Markup:
    """Chart data for a `<script type="application/json">` block (never executed; safe inside HTML)."""
    return Markup(
        json.dumps(data, ensure_ascii=False).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    )


_ENV = _environment()
