"""The consumers of one process and the loop that runs them: the sheet consumer (`sheet_consumer.py`) first,
then the notification consumer (`notify_consumer.py`); what they share is in `consumer.py`."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Literal

import structlog

from .. import db
from ..clock import Clock
from ..config import Settings
from ..errors import DatabaseError
from ..worker_id import new_worker_id
from .channels import AppriseChannels, Channels
from .consumer import Consumer, Counters
from .notify_consumer import NotifyConsumer
from .policy import split_urls
from .sheet_consumer import SheetConsumer
from .sheets import DatabaseQuota, SheetTarget, make_target
from .store import OutboxStore

__all__ = ["Consumer", "Consumers", "Counters", "NotifyConsumer", "Only", "SheetConsumer", "build", "run_consumers"]

log = structlog.get_logger(__name__)

Only = Literal["sheet", "notify"]


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
