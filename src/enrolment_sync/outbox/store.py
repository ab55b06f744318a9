"""The outbox's one door to Postgres: pairs each named query of sql/outbox.sql with its arguments.

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

log = structlog.get_logger(__name__)
DEAD_IDS_LISTED = 50  # how many dead message ids an alert lists before it only counts


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


@dataclass(frozen=True)
class Retry:
    id: int
    delay_s: float
    dead: bool


class OutboxStore:
    """Named queries of the outbox, on one (re)connecting autocommit connection."""

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
        try:
            conn = self.conn()
            with conn.transaction():
                return conn.execute(db.query(name), params or {}).fetchall()
        except psycopg.Error as exc:
            raise DatabaseError(f"{name}: {exc}") from exc

    def _mine(self, **params: Any) -> dict[str, Any]:
        return {"consumer": self.consumer_id, "lease_s": self.lease_s, **params}

    # -- sheet_outbox -----------------------------------------------------------------------

    def claim_sheet(self, *, batch: int, max_attempts: int) -> list[SheetMessage]:
        rows = self._all("outbox_sheet_claim", self._mine(batch=batch, max_attempts=max_attempts))
        rows.sort(key=lambda r: r["id"])
        return [SheetMessage(**r) for r in rows]

    def park_expired_sheet(self, *, max_attempts: int) -> list[dict[str, Any]]:
        return self._all("outbox_sheet_park_expired", {"max_attempts": max_attempts})

    def renew_sheet(self, ids: Sequence[int]) -> set[int]:
        return {r["id"] for r in self._all("outbox_sheet_renew", self._mine(ids=list(ids)))}

    def renew_notifications(self, ids: Sequence[int]) -> set[int]:
        return {r["id"] for r in self._all("outbox_notification_renew", self._mine(ids=list(ids)))}

    def sheet_done(self, ids: Sequence[int]) -> tuple[list[int], int]:
        """Mark written messages done and queue their (run, category) digests, in one transaction."""
        try:
            conn = self.conn()
            with conn.transaction():
                done = conn.execute(db.query("outbox_sheet_done"), self._mine(ids=list(ids))).fetchall()
                keys = sorted({(r["run_id"], r["category_id"]) for r in done if r["run_id"] is not None})
                queued = conn.execute(
                    db.query("outbox_digest_enqueue"),
                    {"keys": Jsonb([{"run_id": run, "category_id": cat} for run, cat in keys])},
                ).fetchall()
        except psycopg.Error as exc:
            raise DatabaseError(f"outbox_sheet_done: {exc}") from exc
        return [r["id"] for r in done], len(queued)

    def sheet_retry(self, retries: Iterable[Retry], error: str) -> list[dict[str, Any]]:
        rows = [{"id": r.id, "delay_s": r.delay_s, "dead": r.dead} for r in retries]
        return self._all("outbox_sheet_retry", self._mine(rows=Jsonb(rows), error=error[:2000]))

    def sheet_release(self, ids: Sequence[int]) -> None:
        self._all_no_rows("outbox_sheet_release", self._mine(ids=list(ids)))

    # -- notification_outbox ----------------------------------------------------------------

    def enqueue_failed_alerts(self, *, lookback_s: float) -> int:
        return len(self._all("outbox_failed_alerts_enqueue", {"lookback_s": lookback_s}))

    def claim_notifications(self, *, batch: int, max_attempts: int) -> list[Notification]:
        rows = self._all("outbox_notification_claim", self._mine(batch=batch, max_attempts=max_attempts))
        rows.sort(key=lambda r: r["id"])
        return [Notification(**r) for r in rows]

    def park_expired_notifications(self, *, max_attempts: int) -> list[dict[str, Any]]:
        return self._all("outbox_notification_park_expired", {"max_attempts": max_attempts})

    def notification_done(self, message_id: int, delivered_to: list[str]) -> bool:
        return bool(self._all("outbox_notification_done", self._mine(id=message_id, delivered_to=delivered_to)))

    def notification_retry(
        self, message_id: int, *, retry: Retry, delivered_to: list[str], error: str
    ) -> dict[str, Any] | None:
        rows = self._all(
            "outbox_notification_retry",
            self._mine(
                id=message_id, dead=retry.dead, delay_s=retry.delay_s, delivered_to=delivered_to, error=error[:2000]
            ),
        )
        return rows[0] if rows else None

    def notification_defer(self, ids: Sequence[int], *, delay_s: float) -> None:
        self._all_no_rows("outbox_notification_defer", self._mine(ids=list(ids), delay_s=delay_s))

    def digest_facts(self, run_id: int, category_id: int) -> dict[str, Any]:
        rows = self._all("outbox_digest_facts", {"run_id": run_id, "category_id": category_id})
        return rows[0] if rows else {}

    def digest_alerts(self, run_id: int, category_id: int, *, limit: int) -> list[dict[str, Any]]:
        return self._all("outbox_digest_alerts", {"run_id": run_id, "category_id": category_id, "limit": limit})

    def alert(self, alert_id: int) -> dict[str, Any] | None:
        rows = self._all("outbox_alert_get", {"alert_id": alert_id})
        return rows[0] if rows else None

    def announce_dead(self, queue: str, *, cooldown_s: float, max_attempts: int, limit: int = 1000) -> int:
        """Announce dead messages not announced yet, in one transaction: per queue and category (sheet) or kind
        (notification), a DEAD_LETTER alert (the cooldown counts repeats on the open one) and one notification,
        then mark them announced. Returns how many alerts were created."""
        prefix = "outbox_sheet" if queue == "sheet_outbox" else "outbox_notification"
        now = dt.datetime.now(dt.UTC)
        created = 0
        try:
            conn = self.conn()
            with conn.transaction():
                dead = conn.execute(db.query(f"{prefix}_dead_unalerted"), {"limit": limit}).fetchall()
                groups: dict[str, list[dict[str, Any]]] = {}
                for row in dead:
                    groups.setdefault(str(row["what"]), []).append(row)
                for what, rows in groups.items():
                    label = f"category {what}" if queue == "sheet_outbox" else what
                    ids = [int(r["id"]) for r in rows]
                    last_error = str(rows[-1]["last_error"] or "")
                    detail = {
                        "queue": queue,
                        "what": label,
                        "message_ids": ids[:DEAD_IDS_LISTED],
                        "count": len(ids),
                        "max_attempts": max_attempts,
                        "last_error": last_error[:1000],
                    }
                    spec = {
                        "source_type": queue,
                        "source_id": f"{queue}:{label}",
                        "severity": "high",
                        "message": (
                            f"메시지 보류(dead letter) {queue} {label}: {len(ids)}건, 마지막 오류: {last_error[:200]}"
                        ),
                        "detail": detail,
                    }
                    conn.execute(db.query("alerts_key_lock"), {"key": f"DEAD_LETTER:{queue}:{spec['source_id']}"})
                    raised = conn.execute(
                        db.query("alerts_raise"),
                        {
                            "alerts": Jsonb([spec]),
                            "alert_type": "DEAD_LETTER",
                            "run_id": None,
                            "now": now,
                            "cooldown_s": cooldown_s,
                        },
                    ).fetchone()
                    assert raised is not None
                    created += int(bool(raised["created"]))
                    if not (queue == "notification_outbox" and what == "DEAD_MESSAGE"):  # never a notice of a notice
                        conn.execute(
                            db.query("notification_enqueue"),
                            {
                                "kind": "DEAD_MESSAGE",
                                "dedupe_key": f"dead-letter:{queue}:{ids[0]}:{len(ids)}",
                                "severity": "high",
                                "run_id": None,
                                "category_id": int(what) if queue == "sheet_outbox" else None,
                                "alert_id": raised["id"],
                                "payload": Jsonb({**detail, "alert_id": raised["id"]}),
                                "now": now,
                            },
                        )
                    conn.execute(db.query(f"{prefix}_dead_alerted"), {"ids": ids})
        except psycopg.Error as exc:
            raise DatabaseError(f"announce dead messages of {queue}: {exc}") from exc
        return created

    # -- quota and operations ---------------------------------------------------------------

    def quota_take(self, name: str, *, capacity: float, rate_per_s: float) -> tuple[bool, float]:
        row = self._all("outbox_quota_take", {"name": name, "capacity": capacity, "rate": rate_per_s})[0]
        return bool(row["granted"]), float(row["tokens"])

    def quota_drain(self, name: str) -> None:
        self._all_no_rows("outbox_quota_drain", {"name": name})

    def status(self) -> list[dict[str, Any]]:
        return self._all("outbox_status")

    def dead(self, *, limit: int) -> list[dict[str, Any]]:
        return self._all("outbox_dead_list", {"limit": limit})

    def _all_no_rows(self, name: str, params: dict[str, Any]) -> None:
        try:
            conn = self.conn()
            with conn.transaction():
                conn.execute(db.query(name), params)
        except psycopg.Error as exc:
            raise DatabaseError(f"{name}: {exc}") from exc
