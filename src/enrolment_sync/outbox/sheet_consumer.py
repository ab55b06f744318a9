"""Sheet consumer: claim a batch of sheet_outbox messages -> one row per enrolment -> write the batch (a few
API calls) -> mark done and queue one change digest per (run, category)."""

from __future__ import annotations

import datetime as dt
import threading
from collections import defaultdict
from dataclasses import dataclass, field

import structlog

from ..config import Settings
from ..errors import DatabaseError, LeaseLost
from .consumer import Consumer, Counters
from .policy import sheet_row
from .sheets import Interrupted, SheetsError, SheetTarget, WriteReport
from .store import SHEET_QUEUE, OutboxStore, SheetMessage

log = structlog.get_logger(__name__)

MAX_ISOLATION_WRITES = 24  # per category and batch: enough to find a few rejected rows among 5,000


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
