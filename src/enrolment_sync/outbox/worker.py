"""The two consumers and the loop that runs them.

Sheet consumer: claim a batch of sheet_outbox messages -> one row per enrolment -> write the batch (a few
API calls) -> mark done and queue one change digest per (run, category). Notification consumer: queue high
FAILED alerts -> claim notifications -> render (Korean) -> deliver to each channel not yet reached -> done,
or retry with backoff, or park as dead with a DEAD_LETTER alert and a DEAD_MESSAGE notification.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Literal

import structlog

from .. import db
from ..alert_policy import ALERT_NOTICE_KINDS, AlertState, lasted_ko, notice_skipped, parse_quiet_hours
from ..clock import Clock, SystemClock
from ..config import Settings
from ..errors import DatabaseError, LeaseLost
from ..queue import Queue, Retry
from ..redact import redact
from ..worker_id import new_worker_id
from . import messages
from .channels import AppriseChannels, Channels, redacted
from .policy import channel_id, channels_for, retry_decision, sheet_row, split_urls
from .sheets import DatabaseQuota, Interrupted, SheetsError, SheetTarget, WriteReport, make_target
from .store import NOTIFICATION_QUEUE, SHEET_QUEUE, Notification, OutboxStore, SheetMessage

log = structlog.get_logger(__name__)

Only = Literal["sheet", "notify"]
MAX_DIGEST_ALERT_LINES = messages.MAX_ALERT_LINES
PRUNE_INTERVAL_S = 60.0
PRUNE_BATCH = 1000
PRUNE_BATCHES = 10
MAX_ISOLATION_WRITES = 24  # per category and batch: enough to find a few rejected rows among 5,000


@dataclass
class Counters:
    sheet_done: int = 0
    sheet_retried: int = 0
    sheet_dead: int = 0
    sheet_batches: int = 0
    rows_updated: int = 0
    rows_appended: int = 0
    digests_queued: int = 0
    failed_alerts_queued: int = 0
    notifications_sent: int = 0
    notifications_retried: int = 0
    notifications_dead: int = 0
    notifications_deferred: int = 0
    notifications_skipped: int = 0
    notifications_held: int = 0
    lifecycle_queued: int = 0
    dead_letter_alerts: int = 0
    released: int = 0
    pruned: int = 0
    errors: list[str] = field(default_factory=list)


class DeadLetters:
    """Announcing dead messages: a sweep over the queue (see queue.announce_dead), so a consumer that dies
    between parking a message and alerting leaves nothing unannounced; the next sweep of any consumer does it."""

    def __init__(self, store: OutboxStore, settings: Settings, counters: Counters, queue: Queue) -> None:
        self.store = store
        self.settings = settings
        self.counters = counters
        self.queue = queue

    def sweep(self) -> None:
        created = self.store.announce_dead(
            self.queue,
            cooldown_minutes=self.settings.alert_cooldown_minutes,
            max_attempts=self.settings.outbox_max_attempts,
        )
        self.counters.dead_letter_alerts += created
        if created:
            log.error("dead messages announced", queue=self.queue.name, alerts_created=created)


class Housekeeping:
    """Deleting DONE messages older than OUTBOX_DONE_RETENTION_HOURS, from the consumer loop: at most once per
    PRUNE_INTERVAL_S per consumer, in transactions of PRUNE_BATCH rows, at most PRUNE_BATCHES of them a round."""

    def __init__(self, store: OutboxStore, queue: Queue, counters: Counters, *, retention_s: float) -> None:
        self.store = store
        self.queue = queue
        self.counters = counters
        self.retention_s = retention_s
        self.next_at = 0.0

    def maybe_prune(self) -> None:
        if time.monotonic() < self.next_at:
            return
        self.next_at = time.monotonic() + PRUNE_INTERVAL_S
        for _ in range(PRUNE_BATCHES):
            deleted = self.store.prune_done(self.queue, retention_s=self.retention_s, limit=PRUNE_BATCH)
            self.counters.pruned += deleted
            if deleted < PRUNE_BATCH:
                break


class Consumer:
    """What both consumers share: their queue's store, settings, batch size, stop, counters and sweep."""

    def __init__(
        self,
        queue: Queue,
        store: OutboxStore,
        settings: Settings,
        *,
        batch: int,
        stop: threading.Event,
        counters: Counters,
    ) -> None:
        self.store = store
        self.settings = settings
        self.batch = batch
        self.stop = stop
        self.counters = counters
        self.dead = DeadLetters(store, settings, counters, queue)
        retention_h = settings.outbox_done_retention_hours
        if queue is NOTIFICATION_QUEUE:  # a pruned FAILED_ALERT notice inside the lookback would be queued again
            retention_h = max(retention_h, settings.outbox_alert_lookback_hours)
        self.housekeeping = Housekeeping(store, queue, counters, retention_s=retention_h * 3600)

    def _retry(self, message_id: int, attempts: int) -> Retry:
        """After a failed attempt: its backoff, or dead on the last allowed attempt."""
        s = self.settings
        decision = retry_decision(
            attempts,
            max_attempts=s.outbox_max_attempts,
            base_s=s.outbox_backoff_base_seconds,
            max_s=s.outbox_backoff_max_seconds,
        )
        return Retry(message_id, decision.delay_s, decision.dead)


class SheetConsumer(Consumer):
    def __init__(
        self,
        store: OutboxStore,
        target: SheetTarget,
        settings: Settings,
        *,
        batch: int,
        stop: threading.Event,
        counters: Counters,
    ) -> None:
        super().__init__(SHEET_QUEUE, store, settings, batch=batch, stop=stop, counters=counters)
        self.target = target

    def step(self) -> int:
        """Process one batch; returns how many messages it handled (0: nothing was ready)."""
        max_attempts = self.settings.outbox_max_attempts
        expired = self.store.park_expired(SHEET_QUEUE, max_attempts=max_attempts)
        self.counters.sheet_dead += len(expired)
        self.dead.sweep()
        self.housekeeping.maybe_prune()
        claimed = self.store.claim_sheet(batch=self.batch, max_attempts=max_attempts)
        if not claimed:
            return len(expired)
        ids = [m.id for m in claimed]
        synced_at = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        by_category: dict[int, list[SheetMessage]] = defaultdict(list)
        for m in claimed:  # one message per learner per batch (the claim keeps a learner's messages in order)
            by_category[m.category_id].append(m)
        outcome = Outcome()
        try:
            for category_id, messages_of in by_category.items():
                budget = Isolation(MAX_ISOLATION_WRITES)
                self._write(category_id, messages_of, synced_at=synced_at, ids=ids, outcome=outcome, budget=budget)
        except Interrupted as exc:
            given_back = [i for i in ids if i not in outcome.settled()]
            self._finish(outcome)
            self.store.release(SHEET_QUEUE, given_back)
            self.counters.released += len(given_back)
            log.info("sheet batch given back", messages=len(given_back), reason=str(exc))
            return len(ids)
        except LeaseLost as exc:
            # the messages taken over are another consumer's now; those still ours go back untried
            self.store.release(SHEET_QUEUE, ids)
            log.warning("sheet batch abandoned, ours given back", messages=len(ids), reason=str(exc))
            return len(ids)
        self._finish(outcome)
        return len(ids)

    def _write(
        self,
        category_id: int,
        part: list[SheetMessage],
        *,
        synced_at: str,
        ids: list[int],
        outcome: Outcome,
        budget: Isolation,
    ) -> None:
        """Write one category's messages; a rejected write is split in halves until the message that causes it
        is alone (or the isolation budget is spent), so only that one is retried and parked."""
        rows = {category_id: {m.source_id: sheet_row(m.source_id, m.payload, synced_at=synced_at) for m in part}}
        try:
            report = self.target.write(rows, guard=lambda: self._guard(ids))
        except (Interrupted, LeaseLost, DatabaseError):
            raise
        except SheetsError as exc:
            if not exc.rejected:  # the API or the quota, not these rows: all of them try again later
                outcome.failed(part, f"SheetsError: {exc}")
                return
            self._isolate(category_id, part, exc, synced_at=synced_at, ids=ids, outcome=outcome, budget=budget)
            return
        except Exception as exc:  # the workbook library refusing a value, a corrupt file: isolate it as well
            self._isolate(category_id, part, exc, synced_at=synced_at, ids=ids, outcome=outcome, budget=budget)
            return
        outcome.written(part, report)

    def _isolate(
        self,
        category_id: int,
        part: list[SheetMessage],
        exc: Exception,
        *,
        synced_at: str,
        ids: list[int],
        outcome: Outcome,
        budget: Isolation,
    ) -> None:
        if len(part) == 1 or not budget.take(2):
            outcome.failed(part, f"{type(exc).__name__}: {exc}")
            return
        half = len(part) // 2
        for piece in (part[:half], part[half:]):
            self._write(category_id, piece, synced_at=synced_at, ids=ids, outcome=outcome, budget=budget)

    def _finish(self, outcome: Outcome) -> None:
        """Written messages done (with their digests); failed ones retried or parked, each with its own error."""
        if outcome.done:
            done, digests = self.store.sheet_done(outcome.done)
            report = outcome.report
            self.counters.sheet_batches += 1
            self.counters.sheet_done += len(done)
            self.counters.rows_updated += report.updated
            self.counters.rows_appended += report.appended
            self.counters.digests_queued += digests
            if report.duplicate_keys:
                log.warning("sheet holds a key twice; every copy was updated", keys=report.duplicate_keys[:10])
            log.info(
                "sheet batch written",
                messages=len(outcome.done),
                done=len(done),
                updated=report.updated,
                appended=report.appended,
                digests_queued=digests,
            )
        if outcome.failures:
            self._failed(outcome.failures)

    def _guard(self, ids: list[int]) -> None:
        still = self.store.renew(SHEET_QUEUE, ids)
        if len(still) != len(ids):
            raise LeaseLost(f"{len(ids) - len(still)} of {len(ids)} messages were taken over after our lease expired")

    def _failed(self, failures: dict[str, list[SheetMessage]]) -> None:
        dead_count = 0
        for error, failed in failures.items():
            rows = self.store.retry(SHEET_QUEUE, [self._retry(m.id, m.attempts) for m in failed], error)
            dead = [r for r in rows if r["status"] == "DEAD"]
            dead_count += len(dead)
            self.counters.sheet_retried += len(rows) - len(dead)
            self.counters.sheet_dead += len(dead)
            log.warning("sheet messages failed", messages=len(failed), dead=len(dead), error=error[:300])
        if dead_count:
            self.dead.sweep()


class Isolation:
    """How many extra writes isolating a rejected row may cost per category and batch."""

    def __init__(self, writes: int) -> None:
        self.left = writes

    def take(self, writes: int) -> bool:
        if self.left < writes:
            return False
        self.left -= writes
        return True


@dataclass
class Outcome:
    """What became of a batch's messages: written (with the write reports) or failed (by error)."""

    done: list[SheetMessage] = field(default_factory=list)
    failures: dict[str, list[SheetMessage]] = field(default_factory=dict)
    report: WriteReport = field(default_factory=WriteReport)

    def written(self, part: list[SheetMessage], report: WriteReport) -> None:
        self.done += part
        self.report.updated += report.updated
        self.report.appended += report.appended
        self.report.headers += report.headers
        self.report.duplicate_keys += report.duplicate_keys

    def failed(self, part: list[SheetMessage], error: str) -> None:
        self.failures.setdefault(error, []).extend(part)

    def settled(self) -> set[int]:
        return {m.id for m in self.done} | {m.id for ms in self.failures.values() for m in ms}


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


@dataclass
class Consumers:
    store: OutboxStore
    sheet: SheetConsumer | None
    notify: NotifyConsumer | None
    counters: Counters
    target: SheetTarget | None

    def close(self) -> None:
        self.store.close()


def build(
    settings: Settings,
    database_url: str,
    *,
    only: Only | None = None,
    batch: int | None = None,
    stop: threading.Event,
    consumer_id: str | None = None,
    target: SheetTarget | None = None,
    channels: Channels | None = None,
    clock: Clock | None = None,
) -> Consumers:
    """Wire the consumers of one process (tests pass a target or channels of their own)."""
    store = OutboxStore(
        db.parse_target(database_url),
        consumer_id=consumer_id or new_worker_id(),
        lease_s=settings.outbox_lease_seconds,
    )
    counters = Counters()
    sheet = notify = None
    if only in (None, "sheet") and target is None:
        quota = DatabaseQuota(
            lambda name, cap, rate: store.quota_take(name, capacity=cap, rate_per_s=rate),
            store.quota_drain,
            per_minute={"read": settings.sheets_reads_per_minute, "write": settings.sheets_writes_per_minute},
            stop=stop,
        )
        target = make_target(settings, quota=quota, stop=stop)
    if only in (None, "sheet"):
        assert target is not None
        sheet = SheetConsumer(
            store, target, settings, batch=batch or settings.outbox_sheet_batch_size, stop=stop, counters=counters
        )
    if only in (None, "notify"):
        if channels is None:
            channels = AppriseChannels(
                split_urls(settings.notify_urls)
                + split_urls(settings.notify_urls_high)
                + split_urls(settings.notify_urls_escalate)
            )
        location = target.location if target is not None else "Google Sheet / local workbook"
        notify = NotifyConsumer(
            store,
            channels,
            settings,
            batch=batch or settings.outbox_notify_batch_size,
            stop=stop,
            counters=counters,
            sheet_location=location,
            clock=clock,
        )
    return Consumers(store, sheet, notify, counters, target)


def run_consumers(consumers: Consumers, settings: Settings, *, once: bool, stop: threading.Event) -> Counters:
    """Poll until stopped (or, with `once`, until nothing is ready). Sheet first, so digests see their rows.

    With `once`, a digest still waiting for its run is looked at again on the next pass rather than after
    the poll interval, so the last pass sends it when its rows are written (deferrals are not work, so
    this ends).
    """
    if once and consumers.notify is not None:
        consumers.notify.defer_s = 0
    while not stop.is_set():
        handled = 0
        try:
            if consumers.sheet is not None:
                handled += consumers.sheet.step()
            if consumers.notify is not None and not stop.is_set():
                handled += consumers.notify.step()
        except DatabaseError as exc:
            consumers.counters.errors.append(str(exc))
            log.warning("database unavailable, will retry", error=str(exc))
            consumers.store.close()
            if once:
                raise
            stop.wait(settings.outbox_poll_interval_seconds)
            continue
        if handled == 0:
            if once:
                break
            stop.wait(settings.outbox_poll_interval_seconds)
    return consumers.counters
