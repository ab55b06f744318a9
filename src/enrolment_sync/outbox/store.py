"""The outbox's one door to Postgres: the two outbox queues (queue.py) and the outbox's own named queries.

Synchronous psycopg on one autocommit connection per consumer process; every unit of work is one short
transaction, so it works through Supabase's transaction pooler. The consumers never see SQL.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
import structlog
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from .. import db
from ..errors import DatabaseError
from ..queue import Queue, QueueSpec, Retry, Statement, announce_dead
from ..runtime import run_coroutine

log = structlog.get_logger(__name__)

SHEET_QUEUE = Queue(
    QueueSpec(
        "sheet_outbox",
        columns=("run_id", "category_id", "source_id", "payload"),
        dead_group="category_id",
        dead_label="category {}",
        dead_group_is_category=True,
        one_open_per="source_id",  # one writer per learner's row, and a learner's messages land in order
    )
)
NOTIFICATION_QUEUE = Queue(
    QueueSpec(
        "notification_outbox",
        columns=(
            "kind",
            "dedupe_key",
            "severity",
            "run_id",
            "category_id",
            "alert_id",
            "payload",
            "delivered_to",
            "created_at",
            "sent_unconfirmed",
            "quiet_held",
        ),
        dead_group="kind",
        dead_columns=("kind", "delivered_to", "sent_unconfirmed"),
        silent_dead_groups=frozenset({"DEAD_MESSAGE"}),  # no cascade of notices through a broken channel
    )
)
QUEUES = (SHEET_QUEUE, NOTIFICATION_QUEUE)


@dataclass(frozen=True)
class SheetMessage:
    id: int
    run_id: int | None
    category_id: int
    source_id: str
    payload: dict[str, Any]
    attempts: int


@dataclass(frozen=True)
class Notification:
    id: int
    kind: str
    dedupe_key: str
    severity: str
    run_id: int | None
    category_id: int | None
    alert_id: int | None
    payload: dict[str, Any]
    attempts: int
    delivered_to: list[str]
    created_at: dt.datetime
    sent_unconfirmed: dict[str, int]  # channel (redacted URL) -> POSTs whose outcome no consumer recorded
    quiet_held: bool = False  # held back by quiet hours: goes out in the digest after the window


class OutboxStore:
    """The outbox queues and named queries, on one (re)connecting autocommit connection."""

    def __init__(self, target: db.ConnectionTarget, *, consumer_id: str, lease_s: float) -> None:
        self.target = target
        self.consumer_id = consumer_id
        self.lease_s = lease_s
        self._conn: psycopg.Connection[dict[str, Any]] | None = None

    # -- plumbing ---------------------------------------------------------------------------

    def conn(self) -> psycopg.Connection[dict[str, Any]]:
        if self._conn is None or self._conn.closed or self._conn.broken:
            try:
                self._conn = psycopg.connect(self.target.conninfo, **self.target.connect_kwargs(), row_factory=dict_row)
            except psycopg.Error as exc:
                raise DatabaseError(f"cannot connect to the database: {exc}") from exc
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _all(self, name: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        return self._run(name, Statement(db.query(name), params or {}))[0]

    def _run(self, what: str, *statements: Statement) -> list[list[dict[str, Any]]]:
        """Statements in one transaction; the rows of each (none for a statement that returns none)."""
        try:
            conn = self.conn()
            with conn.transaction():
                results = []
                for statement in statements:
                    cur = conn.execute(*statement)
                    results.append(cur.fetchall() if cur.description is not None else [])
                return results
        except psycopg.Error as exc:
            raise DatabaseError(f"{what}: {exc}") from exc

    # -- both queues ------------------------------------------------------------------------

    def claim(self, queue: Queue, *, batch: int, max_attempts: int) -> list[dict[str, Any]]:
        statement = queue.claim(consumer=self.consumer_id, lease_s=self.lease_s, batch=batch, max_attempts=max_attempts)
        rows = self._run(f"claim {queue.name}", statement)[0]
        rows.sort(key=lambda r: r["id"])
        return rows

    def renew(self, queue: Queue, ids: Sequence[int]) -> set[int]:
        statement = queue.renew(ids, consumer=self.consumer_id, lease_s=self.lease_s)
        return {r["id"] for r in self._run(f"renew {queue.name}", statement)[0]}

    def retry(self, queue: Queue, retries: Iterable[Retry], error: str) -> list[dict[str, Any]]:
        return self._run(f"retry {queue.name}", queue.retry(retries, consumer=self.consumer_id, error=error))[0]

    def release(self, queue: Queue, ids: Sequence[int], *, delay_s: float = 0) -> None:
        self._run(f"release {queue.name}", queue.release(ids, consumer=self.consumer_id, delay_s=delay_s))

    def park_expired(self, queue: Queue, *, max_attempts: int) -> list[dict[str, Any]]:
        return self._run(f"park expired {queue.name}", queue.park_expired(max_attempts=max_attempts))[0]

    def prune_done(self, queue: Queue, *, retention_s: float, limit: int) -> int:
        """One bounded batch of housekeeping; how many DONE messages were deleted."""
        return len(self._run(f"prune {queue.name}", queue.prune_done(retention_s=retention_s, limit=limit))[0])

    def announce_dead(self, queue: Queue, *, cooldown_minutes: float, max_attempts: int) -> int:
        """The dead-letter sweep (queue.announce_dead); a cheap look first, so an idle sweep costs one statement.
        Returns how many alerts were created."""
        if not self._run(f"look for dead messages of {queue.name}", queue.dead_unalerted(limit=1))[0]:
            return 0

        async def sweep() -> int:
            async with await psycopg.AsyncConnection.connect(
                self.target.conninfo, **self.target.connect_kwargs()
            ) as conn:
                return await announce_dead(conn, queue, cooldown_minutes=cooldown_minutes, max_attempts=max_attempts)

        try:
            return run_coroutine(sweep())
        except psycopg.Error as exc:
            raise DatabaseError(f"announce dead messages of {queue.name}: {exc}") from exc

    # -- sheet_outbox -----------------------------------------------------------------------

    def claim_sheet(self, *, batch: int, max_attempts: int) -> list[SheetMessage]:
        return [SheetMessage(**r) for r in self.claim(SHEET_QUEUE, batch=batch, max_attempts=max_attempts)]

    def sheet_done(self, claimed: Sequence[SheetMessage]) -> tuple[list[int], int]:
        """Mark written messages done and queue their (run, category) digests, in one transaction."""
        ids = [m.id for m in claimed]
        try:
            conn = self.conn()
            with conn.transaction():
                done = {r["id"] for r in conn.execute(*SHEET_QUEUE.done(ids, consumer=self.consumer_id))}
                keys = sorted({(m.run_id, m.category_id) for m in claimed if m.id in done and m.run_id is not None})
                queued = conn.execute(
                    db.query("outbox_digest_enqueue"),
                    {"keys": Jsonb([{"run_id": run, "category_id": cat} for run, cat in keys])},
                ).fetchall()
        except psycopg.Error as exc:
            raise DatabaseError(f"done sheet_outbox: {exc}") from exc
        return sorted(done), len(queued)

    # -- notification_outbox ----------------------------------------------------------------

    def enqueue_failed_alerts(self, *, lookback_s: float) -> int:
        return len(self._all("outbox_failed_alerts_enqueue", {"lookback_s": lookback_s}))

    def claim_notifications(self, *, batch: int, max_attempts: int) -> list[Notification]:
        return [Notification(**r) for r in self.claim(NOTIFICATION_QUEUE, batch=batch, max_attempts=max_attempts)]

    def _delivered(self, note: Notification, delivered_to: list[str]) -> Statement:
        params = {
            "id": note.id,
            "consumer": self.consumer_id,
            "delivered_to": delivered_to,
            "sent_unconfirmed": Jsonb(note.sent_unconfirmed),  # this attempt's POSTs all got their answer
        }
        return Statement(db.query("outbox_notification_delivered"), params)

    def notification_sending(self, note: Notification, channel: str) -> None:
        """A POST to `channel` is about to start: until the attempt ends it counts as sent, not confirmed."""
        unconfirmed = {**note.sent_unconfirmed, channel: note.sent_unconfirmed.get(channel, 0) + 1}
        params = {"id": note.id, "consumer": self.consumer_id, "sent_unconfirmed": Jsonb(unconfirmed)}
        self._all("outbox_notification_sending", params)

    def notification_done(self, note: Notification, delivered_to: list[str]) -> bool:
        """A notification reached every channel it was meant for."""
        done = NOTIFICATION_QUEUE.done([note.id], consumer=self.consumer_id)
        return bool(self._run("done notification_outbox", self._delivered(note, delivered_to), done)[1])

    def notification_retry(
        self, note: Notification, *, retry: Retry, delivered_to: list[str], error: str
    ) -> dict[str, Any] | None:
        """A failed delivery: keep the channels it reached, retry the rest after the backoff, or park it dead."""
        again = NOTIFICATION_QUEUE.retry([retry], consumer=self.consumer_id, error=error)
        rows = self._run("retry notification_outbox", self._delivered(note, delivered_to), again)[1]
        return rows[0] if rows else None

    # -- the alert lifecycle (docs/alerts.md) ----------------------------------------------------

    def enqueue_lifecycle(self, *, lookback_s: float, escalate_after_s: float | None) -> dict[str, int]:
        """Queue 대량 변경 alerts, 복구 notices, and escalations when escalation channels are configured."""
        statements = [
            Statement(db.query("outbox_mass_change_enqueue"), {"lookback_s": lookback_s}),
            Statement(db.query("outbox_recovery_enqueue"), {"lookback_s": lookback_s}),
        ]
        if escalate_after_s is not None:
            params = {"lookback_s": lookback_s, "after_s": escalate_after_s}
            statements.append(Statement(db.query("outbox_escalation_enqueue"), params))
        rows = self._run("queue alert lifecycle notices", *statements)
        return dict(zip(("mass_change", "recovery", "escalation"), (len(r) for r in rows), strict=False))

    def alert_state(self, alert_id: int) -> dict[str, Any] | None:
        """An alert with what decides whether its notice goes out now (outbox_alert_state)."""
        rows = self._all("outbox_alert_state", {"alert_id": alert_id})
        return rows[0] if rows else None

    def notification_skipped(self, message_id: int, why: str) -> bool:
        """A notice not sent, and why: done, never retried."""
        skipped = Statement(
            db.query("outbox_notification_skipped"), {"id": message_id, "consumer": self.consumer_id, "why": why}
        )
        done = NOTIFICATION_QUEUE.done([message_id], consumer=self.consumer_id)
        return bool(self._run("skip notification_outbox", skipped, done)[1])

    def notification_hold(self, ids: Sequence[int], *, delay_s: float) -> None:
        """Held back by quiet hours until their end: marked, and given back untried."""
        hold = Statement(db.query("outbox_notification_hold"), {"ids": list(ids), "consumer": self.consumer_id})
        again = NOTIFICATION_QUEUE.release(ids, consumer=self.consumer_id, delay_s=delay_s)
        self._run("hold notification_outbox", hold, again)

    def digest_facts(self, run_id: int, category_id: int, *, created_at: dt.datetime) -> dict[str, Any]:
        """What a digest says, and its age (`age_s`) by the database's clock."""
        params = {"run_id": run_id, "category_id": category_id, "created_at": created_at}
        rows = self._all("outbox_digest_facts", params)
        return rows[0] if rows else {}

    def digest_alerts(self, run_id: int, category_id: int, *, limit: int) -> list[dict[str, Any]]:
        return self._all("outbox_digest_alerts", {"run_id": run_id, "category_id": category_id, "limit": limit})

    def alert(self, alert_id: int) -> dict[str, Any] | None:
        rows = self._all("outbox_alert_get", {"alert_id": alert_id})
        return rows[0] if rows else None

    # -- quota and operations ---------------------------------------------------------------

    def quota_take(self, name: str, *, capacity: float, rate_per_s: float) -> tuple[bool, float]:
        row = self._all("outbox_quota_take", {"name": name, "capacity": capacity, "rate": rate_per_s})[0]
        return bool(row["granted"]), float(row["tokens"])

    def quota_drain(self, name: str) -> None:
        self._all("outbox_quota_drain", {"name": name})

    def status(self) -> list[dict[str, Any]]:
        return [row for rows in self._run("outbox status", *(q.status() for q in QUEUES)) for row in rows]

    def dead(self, *, limit: int) -> list[dict[str, Any]]:
        return self._all("outbox_dead_list", {"limit": limit})
