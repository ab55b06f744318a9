"""What both outbox consumers share: their counters, the dead-letter sweep, housekeeping and the base class."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import structlog

from ..config import Settings
from ..queue import Queue, Retry
from .policy import retry_decision
from .store import NOTIFICATION_QUEUE, OutboxStore

log = structlog.get_logger(__name__)

PRUNE_INTERVAL_S = 60.0
PRUNE_BATCH = 1000
PRUNE_BATCHES = 10


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
