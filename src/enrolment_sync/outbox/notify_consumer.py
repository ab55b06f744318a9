"""Notification consumer: queue high FAILED alerts -> claim notifications -> render (Korean) -> deliver to each
channel not yet reached -> done, or retry with backoff, or park as dead with a DEAD_LETTER alert and a DEAD_MESSAGE
notification."""

from __future__ import annotations

import dataclasses
import threading
from dataclasses import dataclass

import structlog

from ..alert_policy import ALERT_NOTICE_KINDS, AlertState, lasted_ko, notice_skipped, parse_quiet_hours
from ..clock import Clock, SystemClock
from ..config import Settings
from ..errors import DatabaseError
from ..redact import redact
from . import messages
from .channels import Channels, redacted
from .consumer import Consumer, Counters
from .policy import channel_id, channels_for, split_urls
from .store import NOTIFICATION_QUEUE, Notification, OutboxStore

log = structlog.get_logger(__name__)

MAX_DIGEST_ALERT_LINES = messages.MAX_ALERT_LINES


@dataclass(frozen=True)
class Defer:
    delay_s: float


@dataclass(frozen=True)
class Skip:
    why: str  # resolved, silenced, inhibited, acknowledged: kept on the notification, never sent


class NotifyConsumer(Consumer):
    def __init__(
        self,
        store: OutboxStore,
        channels: Channels,
        settings: Settings,
        *,
        batch: int,
        stop: threading.Event,
        counters: Counters,
        sheet_location: str,
        clock: Clock | None = None,
    ) -> None:
        super().__init__(NOTIFICATION_QUEUE, store, settings, batch=batch, stop=stop, counters=counters)
        self.channels = channels
        self.sheet_location = sheet_location
        self.urls = split_urls(settings.notify_urls)
        self.urls_high = split_urls(settings.notify_urls_high)
        self.urls_escalate = split_urls(settings.notify_urls_escalate)
        self.quiet = parse_quiet_hours(settings.quiet_hours)
        self.clock = clock or SystemClock()
        self.defer_s = settings.outbox_poll_interval_seconds

    def step(self) -> int:
        """Deliver one batch; returns how many were handled (deferred digests do not count)."""
        max_attempts = self.settings.outbox_max_attempts
        lookback_s = self.settings.outbox_alert_lookback_hours * 3600
        queued = self.store.enqueue_failed_alerts(lookback_s=lookback_s)
        self.counters.failed_alerts_queued += queued
        escalate_s = self.settings.escalate_after_minutes * 60 if self.urls_escalate else None
        lifecycle = self.store.enqueue_lifecycle(lookback_s=lookback_s, escalate_after_s=escalate_s)
        self.counters.lifecycle_queued += sum(lifecycle.values())
        handled = 0
        expired = self.store.park_expired(NOTIFICATION_QUEUE, max_attempts=max_attempts)
        self.counters.notifications_dead += len(expired)
        handled += len(expired)
        self.dead.sweep()
        self.housekeeping.maybe_prune()
        claimed = self.store.claim_notifications(batch=self.batch, max_attempts=max_attempts)
        claimed, held = self._quiet_hours(claimed)
        if held:
            handled += self._held_digest(held)
        for number, note in enumerate(claimed):
            if self.stop.is_set():
                rest = [n.id for n in claimed[number:]]
                self.store.release(NOTIFICATION_QUEUE, rest)
                self.counters.released += len(rest)
                break
            # each delivery may block for a channel's timeout: renew the lease on the rest of the batch first,
            # and skip a message whose lease already ran out (another consumer may be delivering it)
            still = self.store.renew(NOTIFICATION_QUEUE, [n.id for n in claimed[number:]])
            if note.id not in still:
                log.warning("notification lease lost before delivery, skipped", id=note.id)
                continue
            handled += int(self._one(note))
        return handled

    def _render(self, note: Notification) -> messages.Message | Defer | Skip:
        if note.kind == "CHANGE_DIGEST":
            assert note.run_id is not None and note.category_id is not None
            facts = self.store.digest_facts(note.run_id, note.category_id, created_at=note.created_at)
            waiting = facts.get("run_status") == "RUNNING" or int(facts.get("open_count") or 0) > 0
            if waiting and float(facts.get("age_s") or 0) < self.settings.outbox_digest_max_wait_seconds:
                return Defer(self.defer_s)
            alerts = self.store.digest_alerts(note.run_id, note.category_id, limit=MAX_DIGEST_ALERT_LINES + 1)
            total = len(alerts)
            if total > MAX_DIGEST_ALERT_LINES:
                total = len(self.store.digest_alerts(note.run_id, note.category_id, limit=100_000))
            return messages.change_digest(
                run_id=note.run_id,
                category_id=note.category_id,
                facts=facts,
                alerts=alerts,
                alert_total=total,
                sheet_location=self.sheet_location,
            )
        if note.kind in ALERT_NOTICE_KINDS or note.kind == "ALERT_RECOVERY":
            return self._render_alert(note)
        if note.kind == "DEAD_MESSAGE":
            return messages.dead_letter(note.payload)
        raise ValueError(f"unknown notification kind {note.kind!r}")

    def _render_alert(self, note: Notification) -> messages.Message | Skip:
        """An alert's notice, its escalation or its 복구 notice, unless the lifecycle says not to send it."""
        alert = self.store.alert_state(note.alert_id) if note.alert_id is not None else None
        if alert is None:
            raise LookupError(f"alert {note.alert_id} no longer exists")
        if note.kind == "ALERT_RECOVERY":
            lasted = lasted_ko((alert["resolved_at"] - alert["created_at"]).total_seconds())
            return messages.recovery(alert, lasted=lasted)
        state = AlertState(
            alert_type=alert["alert_type"],
            resolved=alert["resolved"],
            acknowledged=alert["acknowledged"],
            silence_id=alert["active_silence_id"],
            inhibited_by=alert["inhibited_by"],
        )
        why = notice_skipped(note.kind, state)
        if why is not None:
            return Skip(why)
        if alert["alert_type"] == "FAILED":
            first = messages.failed_alert(alert)
        elif alert["alert_type"] == "STALE":
            first = messages.stale_alert(alert)
        else:
            first = messages.mass_change(alert)
        if note.kind == "ESCALATION":
            return messages.escalation(alert, first, after_minutes=self.settings.escalate_after_minutes)
        return first

    def _targets(self, note: Notification) -> list[str]:
        """Escalations go to NOTIFY_URLS_ESCALATE; a 복구 notice to the channels the alert reached; the rest by
        severity."""
        if note.kind == "ESCALATION":
            return list(self.urls_escalate)
        if note.kind == "ALERT_RECOVERY":
            reached = set(note.payload.get("channels") or [])
            every = dict.fromkeys(self.urls + self.urls_high + self.urls_escalate)
            return [url for url in every if channel_id(url) in reached]
        return channels_for(note.severity, urls=self.urls, urls_high=self.urls_high)

    def _prepare(self, note: Notification) -> messages.Message | Defer | None:
        """The message to send; Defer when given back for later (not work done); None when the note was settled
        here (it could not be rendered, or it is not to be sent)."""
        try:
            rendered = self._render(note)
        except DatabaseError:
            raise
        except Exception as exc:
            self._failed(note, list(note.delivered_to), f"cannot render: {type(exc).__name__}: {exc}")
            return None
        if isinstance(rendered, Defer):
            self.store.release(NOTIFICATION_QUEUE, [note.id], delay_s=rendered.delay_s)
            self.counters.notifications_deferred += 1
            return rendered
        if isinstance(rendered, Skip):
            self.store.notification_skipped(note.id, rendered.why)
            self.counters.notifications_skipped += 1
            log.info("notification not sent", id=note.id, kind=note.kind, alert_id=note.alert_id, why=rendered.why)
            return None
        return dataclasses.replace(rendered, title=redact(rendered.title), body=redact(rendered.body))

    def _send(
        self, notes: list[Notification], targets: list[str], message: messages.Message, delivered: list[str]
    ) -> list[str]:
        """Deliver the message of `notes` to each target not yet reached (appended to `delivered`); returns the
        channels that failed."""
        if not targets:
            log.info("notification (no channel configured)", title=message.title, body=message.body)
        failed: list[str] = []
        for url in targets:
            if channel_id(url) in delivered:
                continue
            for note in notes:
                self.store.notification_sending(note, redacted(url))
            if self.channels.send(url, message):
                delivered.append(channel_id(url))
            else:
                failed.append(redacted(url))
        return failed

    def _quiet_hours(self, claimed: list[Notification]) -> tuple[list[Notification], list[Notification]]:
        """Inside quiet hours, notes below high are held to the window's end (untried); after it, the held ones
        come back together. Returns (notes to send one by one, held notes to send as one digest)."""
        if self.quiet is None:
            return claimed, []
        now = self.clock.now()
        until = self.quiet.held_until(now)
        if until is None:
            return [n for n in claimed if not n.quiet_held], [n for n in claimed if n.quiet_held]
        hold = [n.id for n in claimed if n.severity != "high"]
        if hold:
            self.store.notification_hold(hold, delay_s=(until - now).total_seconds())
            self.counters.notifications_held += len(hold)
            log.info("notifications held by quiet hours", count=len(hold), until=until.isoformat())
        return [n for n in claimed if n.severity == "high"], []

    def _held_digest(self, held: list[Notification]) -> int:
        """What quiet hours held back, as one message to the channels any of them was meant for."""
        parts = [(note, m) for note in held if isinstance(m := self._prepare(note), messages.Message)]
        if not parts:
            return len(held)
        digest = messages.quiet_digest([m for _, m in parts], window=self.settings.quiet_hours)
        targets = list(dict.fromkeys(url for note, _ in parts for url in self._targets(note)))
        delivered = sorted(set.intersection(*(set(note.delivered_to) for note, _ in parts)))
        failed = self._send([note for note, _ in parts], targets, digest, delivered)
        for note, _ in parts:
            if failed:
                self._failed(note, delivered, f"delivery failed on {', '.join(failed)}")
            else:
                self.store.notification_done(note, delivered)
        if not failed:
            self.counters.notifications_sent += len(parts)
            log.info("quiet-hours digest delivered", notes=len(parts), channels=len(delivered))
        return len(held)

    def _one(self, note: Notification) -> bool:
        rendered = self._prepare(note)
        if not isinstance(rendered, messages.Message):
            return rendered is None
        delivered = list(note.delivered_to)
        failed = self._send([note], self._targets(note), rendered, delivered)
        if failed:
            self._failed(note, delivered, f"delivery failed on {', '.join(failed)}")
            return True
        self.store.notification_done(note, delivered)
        self.counters.notifications_sent += 1
        log.info("notification delivered", id=note.id, kind=note.kind, channels=len(delivered))
        return True

    def _failed(self, note: Notification, delivered: list[str], error: str) -> None:
        retry = self._retry(note.id, note.attempts)
        row = self.store.notification_retry(note, retry=retry, delivered_to=delivered, error=error)
        if row is None:
            return
        if retry.dead:
            self.counters.notifications_dead += 1
            self.dead.sweep()
        else:
            self.counters.notifications_retried += 1
            log.warning("notification failed, will retry", id=note.id, attempts=note.attempts, error=error)
