"""Korean message templates of the notifications (pure: facts in, title and body out)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

TITLE_PREFIX = "[enrolment-sync]"
MAX_ALERT_LINES = 20
SEVERITY_KO = {"high": "높음", "medium": "보통", "low": "낮음"}
QUEUE_KO = {"sheet_outbox": "시트 반영", "notification_outbox": "알림 발송"}


@dataclass(frozen=True)
class Message:
    title: str
    body: str
    notify_type: str = "info"  # Apprise: info | success | warning | failure


def change_digest(
    *,
    run_id: int,
    category_id: int,
    facts: Mapping[str, Any],
    alerts: Sequence[Mapping[str, Any]],
    alert_total: int,
    sheet_location: str,
) -> Message:
    """One digest per run and category: counts by change type, then the CHANGED alerts' lines."""
    new, changed = int(facts.get("new_count") or 0), int(facts.get("changed_count") or 0)
    lines = [
        f"기수(category) {category_id} · 실행 #{run_id} 변경 요약",
        f"- 신규 수강: {new}명",
        f"- 변경: {changed}명",
        f"- 시트 반영 완료: {int(facts.get('written_count') or 0)}행 ({sheet_location})",
    ]
    if facts.get("open_count"):
        lines.append(f"- 시트 반영 대기 중: {facts['open_count']}행")
    if facts.get("dead_count"):
        lines.append(f"- 시트 반영 실패(dead): {facts['dead_count']}행 — 운영 확인 필요")
    if any(a.get("source_type") == "mass_change" for a in alerts):
        lines.append(
            "- 대량 변경: 학습자별 변경 알림 대신 대량 변경 알림 하나로 묶었습니다 (기록과 시트는 모두 반영됨)"
        )
    if alerts:
        lines.append("")
        lines.append(f"수강 상태 변경 알림 {alert_total}건:")
        lines += [f"• {a['message']}" for a in alerts[:MAX_ALERT_LINES]]
        if alert_total > len(alerts[:MAX_ALERT_LINES]):
            lines.append(f"… 외 {alert_total - len(alerts[:MAX_ALERT_LINES])}건")
    has_high = any(a.get("severity") == "high" for a in alerts)
    title = f"{TITLE_PREFIX} {category_id} 기수 수강 변경 요약: 신규 {new} · 변경 {changed}"
    return Message(title, "\n".join(lines), "warning" if has_high else "info")


def failed_alert(alert: Mapping[str, Any]) -> Message:
    """One message per high-severity FAILED alert (Step 2)."""
    detail = alert.get("detail") or {}
    group = detail.get("error_group", "?")
    lines = [
        f"동기화 실패 · 등급 {SEVERITY_KO.get(str(alert.get('severity')), alert.get('severity'))}",
        f"- 실패 유형: {group}",
        f"- 실행(run_id): {detail.get('run_id', alert.get('run_id'))}",
        f"- HTTP 상태: {detail.get('http_status_code') or '-'}",
        f"- 알림 id: {alert.get('id')} (source_id {alert.get('source_id')})",
        f"- 오류 원문: {str(detail.get('error_message') or alert.get('message'))[:500]}",
        "",
        "조치: run_log 최근 실패(4-1)와 실패 알림(4-2)을 확인한 뒤 trigger_type = RETRY 로 재실행하세요.",
    ]
    return Message(f"{TITLE_PREFIX} 동기화 실패 [{group}]", "\n".join(lines), "failure")


def stale_alert(alert: Mapping[str, Any]) -> Message:
    """One message per STALE alert: a category with no successful run for STALE_AFTER_HOURS."""
    detail = alert.get("detail") or {}
    lines = [
        f"동기화 지연 · 기수(category) {detail.get('category_id', '?')}",
        f"- 마지막 성공: {detail.get('last_success_at') or '없음'}",
        f"- 기준: {detail.get('stale_after_hours', '?')}시간",
        f"- 알림 id: {alert.get('id')} (source_id {alert.get('source_id')})",
        "",
        "조치: 스케줄러 동작과 run_log 최근 실행(3-1)을 확인하세요.",
    ]
    return Message(
        f"{TITLE_PREFIX} 동기화 지연 [category {detail.get('category_id', '?')}]", "\n".join(lines), "warning"
    )


def dead_letter(payload: Mapping[str, Any]) -> Message:
    """One message per dead-letter alert: which queue, how many messages, the last error, and for notifications
    what is known of their delivery (sent to a channel whose answer no consumer recorded is not "held back")."""
    queue = str(payload.get("queue", "?"))
    ids = payload.get("message_ids") or []
    sent = _unconfirmed(payload.get("messages") or [])
    reached = sorted({str(c) for m in payload.get("messages") or [] for c in m.get("delivered_to") or []})
    count = payload.get("count", len(ids))
    unconfirmed_only = bool(sent) and all((m.get("sent_unconfirmed") or {}) for m in payload.get("messages") or [])
    if unconfirmed_only:
        head = (
            f"{QUEUE_KO.get(queue, queue)} 메시지를 채널로 전송했지만, 처리 프로세스가 결과를 기록하기 전에 멈춰 "
            f"{payload.get('max_attempts')}회 시도 후 완료를 확인하지 못했습니다 (전달되었을 수 있음, 확인 안 됨)."
        )
        title = f"{TITLE_PREFIX} 전달 확인 안 됨(dead letter): {QUEUE_KO.get(queue, queue)}"
    else:
        head = (
            f"{QUEUE_KO.get(queue, queue)} 메시지가 {payload.get('max_attempts')}회 시도 후 보류(dead) 처리되었습니다."
        )
        title = f"{TITLE_PREFIX} 메시지 보류(dead letter): {QUEUE_KO.get(queue, queue)}"
    lines = [
        head,
        f"- 큐: {queue} ({payload.get('what', '')})",
        f"- 메시지 수: {count}건 (id: {', '.join(str(i) for i in ids[:10])}" + (" …" if len(ids) > 10 else "") + ")",
    ]
    if sent:
        lines.append("- 전송했으나 확인 안 됨: " + ", ".join(f"{channel} ({n}회)" for channel, n in sent.items()))
    if reached:
        lines.append("- 전달 확인됨(채널 id): " + ", ".join(reached))
    lines += [
        f"- 마지막 오류: {str(payload.get('last_error') or '-')[:500]}",
        f"- 알림 id: {payload.get('alert_id')}",
        "",
        "조치: 원인을 해결한 뒤 해당 행의 status 를 'PENDING', attempts 를 0 으로 되돌리면 다시 처리됩니다 "
        "(docs/outbox.md 참고)."
        + (" 전송했으나 확인 안 된 채널에는 이미 도착했을 수 있으니 먼저 채널을 확인하세요." if sent else ""),
    ]
    return Message(title, "\n".join(lines), "failure")


def _unconfirmed(messages: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    """Channel -> POSTs sent without a recorded answer, over the dead messages listed."""
    total: dict[str, int] = {}
    for m in messages:
        for channel, n in (m.get("sent_unconfirmed") or {}).items():
            total[str(channel)] = total.get(str(channel), 0) + int(n)
    return total


def mass_change(alert: Mapping[str, Any]) -> Message:
    """A 대량 변경 alert: a cohort's status rows changed in bulk; the counts by old and new status."""
    detail = alert.get("detail") or {}
    lines = [
        f"대량 변경 · 기수(category) {detail.get('category_id', '?')} · 실행 #{detail.get('run_id', '?')}",
        f"- 상태 행 {detail.get('status_rows', '?')}개 중 {detail.get('changed', '?')}개 변경"
        f" (기준 {float(detail.get('share') or 0):.0%} 초과)",
        *[f"- {t['from']} → {t['to']}: {t['count']}명" for t in detail.get("transitions") or []],
        f"- 알림 id: {alert.get('id')}",
        "",
        "기록과 시트는 그대로 반영되었고, 학습자별 변경 알림은 이 알림 하나로 묶였습니다.",
        "조치: KVCA 쪽 일괄 변경인지 확인하세요. 오류라면 upstream 수정 후 다시 동기화하면 됩니다.",
    ]
    return Message(f"{TITLE_PREFIX} 대량 변경 [category {detail.get('category_id', '?')}]", "\n".join(lines), "warning")


def escalation(alert: Mapping[str, Any], first: Message, *, after_minutes: float) -> Message:
    """A high alert nobody acknowledged or resolved in time, sent again to the escalation channels."""
    head = (
        f"에스컬레이션: 알림 {alert.get('id')} 이(가) {after_minutes:g}분 넘게 확인(ack)도 해결도 되지 않았습니다.\n"
        f"확인: enrolment-sync alerts ack {alert.get('id')} --note '...'\n\n"
    )
    return Message(f"{TITLE_PREFIX} [에스컬레이션] {first.title.removeprefix(TITLE_PREFIX).strip()}", head + first.body)


def recovery(alert: Mapping[str, Any], *, lasted: str) -> Message:
    """복구: an alert that was sent is resolved; how long it lasted and who resolved it."""
    what = str(alert.get("message") or "")[:200]
    lines = [
        f"복구: 알림 {alert.get('id')} ({alert.get('alert_type')}) 이(가) 해결되었습니다. 지속 시간 {lasted}.",
        f"- 해결: {alert.get('resolved_by') or '-'}",
        f"- 원래 알림: {what}",
    ]
    return Message(
        f"{TITLE_PREFIX} 복구 [{alert.get('alert_type')}] {alert.get('source_id')}", "\n".join(lines), "success"
    )


def quiet_digest(held: Sequence[Message], *, window: str) -> Message:
    """What quiet hours held back, sent as one message when the window ends."""
    lines = [f"조용한 시간({window} KST) 동안 보류된 알림 {len(held)}건입니다.", ""]
    for number, message in enumerate(held, start=1):
        lines += [f"[{number}] {message.title.removeprefix(TITLE_PREFIX).strip()}", message.body, ""]
    worst = "warning" if any(m.notify_type in ("warning", "failure") for m in held) else "info"
    return Message(f"{TITLE_PREFIX} 조용한 시간 알림 모음 {len(held)}건", "\n".join(lines).rstrip(), worst)
