"""One queue implementation for every table that follows the queue contract (docs/outbox.md, "Queue contract").

`Queue` turns the statements of sql/queue.sql into ready-to-run `Statement`s for one table (claim with
FOR UPDATE SKIP LOCKED and a lease held in the row, renew, done, retry with backoff, release, park expired,
the dead-letter sweep's select and mark); its callers run them on their own connection, sync or async, and
add what only their queue does in the same transaction. `dead_letters` decides what a dead-letter sweep
raises (pure); `announce_dead` is that sweep (I/O): one DEAD_LETTER alert per group through store.alerts,
one DEAD_MESSAGE notification, and the messages marked announced, in one transaction.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import psycopg
from psycopg import sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from . import db
from .alerts import AlertSpec
from .failures import Severity
from .redact import redact
from .store import alerts

DEAD_IDS_LISTED = 50  # how many dead message ids an alert lists before it only counts
MAX_ERROR_CHARS = 2000


@dataclass(frozen=True)
class QueueSpec:
    """A queue: its table (which follows the contract) and what only this queue does."""

    table: str
    columns: tuple[str, ...]  # what a claim returns besides id and attempts
    dead_group: str  # one DEAD_LETTER alert per queue and value of this column
    dead_label: str = "{}"  # how a group is named for people ("category {}")
    dead_group_is_category: bool = False  # the group is a category_id: the notification carries it
    silent_dead_groups: frozenset[str] = frozenset()  # alert, but no notification (never a notice of a notice)
    one_open_per: str | None = None  # a message waits while an older open message with this value exists
    dead_columns: tuple[str, ...] = ()  # what a dead-letter notice reports per message besides id and last_error


class Statement(NamedTuple):
    query: str | sql.Composed
    params: dict[str, Any]


@dataclass(frozen=True)
class Retry:
    id: int
    delay_s: float
    dead: bool


class Queue:
    """The statements of sql/queue.sql composed once for one queue table."""

    def __init__(self, spec: QueueSpec) -> None:
        self.spec = spec
        key_order: sql.Composable = sql.SQL("")
        if spec.one_open_per is not None:
            key_order = self._compose("queue_claim_key_order", key=sql.Identifier(spec.one_open_per))
        columns = sql.SQL(", ").join(sql.Identifier("m", c) for c in ("id", "attempts", *spec.columns))
        self._claim = self._compose("queue_claim", key_order=key_order, columns=columns)
        self._renew = self._compose("queue_renew")
        self._done = self._compose("queue_done")
        self._retry = self._compose("queue_retry")
        self._release = self._compose("queue_release")
        self._park_expired = self._compose("queue_park_expired")
        extra = sql.SQL("").join(sql.SQL(", ") + sql.Identifier(c) for c in spec.dead_columns)
        self._dead_unalerted = self._compose("queue_dead_unalerted", group=sql.Identifier(spec.dead_group), extra=extra)
        self._dead_alerted = self._compose("queue_dead_alerted")
        self._status = self._compose("queue_status")
        self._prune_done = self._compose("queue_prune_done")

    def _compose(self, name: str, **parts: sql.Composable) -> sql.Composed:
        return sql.SQL(db.query(name)).format(table=sql.Identifier(self.spec.table), **parts)

    @property
    def name(self) -> str:
        return self.spec.table

    def claim(self, *, consumer: str, lease_s: float, batch: int, max_attempts: int) -> Statement:
        params = {"consumer": consumer, "lease_s": lease_s, "batch": batch, "max_attempts": max_attempts}
        return Statement(self._claim, params)

    def renew(self, ids: Sequence[int], *, consumer: str, lease_s: float) -> Statement:
        return Statement(self._renew, {"ids": list(ids), "consumer": consumer, "lease_s": lease_s})

    def done(self, ids: Sequence[int], *, consumer: str) -> Statement:
        return Statement(self._done, {"ids": list(ids), "consumer": consumer})

    def retry(self, retries: Iterable[Retry], *, consumer: str, error: str) -> Statement:
        rows = [{"id": r.id, "delay_s": r.delay_s, "dead": r.dead} for r in retries]
        error = redact(error)[:MAX_ERROR_CHARS]
        return Statement(self._retry, {"rows": Jsonb(rows), "consumer": consumer, "error": error})

    def release(self, ids: Sequence[int], *, consumer: str, delay_s: float = 0) -> Statement:
        return Statement(self._release, {"ids": list(ids), "consumer": consumer, "delay_s": delay_s})

    def park_expired(self, *, max_attempts: int) -> Statement:
        return Statement(self._park_expired, {"max_attempts": max_attempts})

    def prune_done(self, *, retention_s: float, limit: int) -> Statement:
        return Statement(self._prune_done, {"retention_s": retention_s, "limit": limit})

    def dead_unalerted(self, *, limit: int) -> Statement:
        return Statement(self._dead_unalerted, {"limit": limit})

    def dead_alerted(self, ids: Sequence[int]) -> Statement:
        return Statement(self._dead_alerted, {"ids": list(ids)})

    def status(self) -> Statement:
        return Statement(self._status, {"queue": self.spec.table})

    def contract(self) -> Statement:
        """The contract columns the table lacks (no row: it follows the contract)."""
        return Statement(db.query("queue_contract"), {"table": self.spec.table})


@dataclass(frozen=True)
class DeadLetter:
    """One group of dead messages: its alert, and the DEAD_MESSAGE notification (None: alert only)."""

    ids: list[int]
    alert: AlertSpec
    notification: dict[str, Any] | None = field(default=None)


def dead_letters(spec: QueueSpec, dead: Sequence[dict[str, Any]], *, max_attempts: int) -> list[DeadLetter]:
    """Group dead messages (rows of queue_dead_unalerted) by their group value: one alert and notice each."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in dead:
        groups.setdefault(str(row["what"]), []).append(row)
    queue = spec.table
    letters = []
    for what, rows in groups.items():
        label = spec.dead_label.format(what)
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
        if spec.dead_columns:
            detail["messages"] = [
                {"id": int(r["id"]), **{c: r[c] for c in spec.dead_columns}} for r in rows[:DEAD_IDS_LISTED]
            ]
        alert = AlertSpec(
            source_type=queue,
            source_id=f"{queue}:{label}",
            severity=Severity.HIGH,
            message=f"메시지 보류(dead letter) {queue} {label}: {len(ids)}건, 마지막 오류: {last_error[:200]}",
            detail=detail,
        )
        notification = None
        if what not in spec.silent_dead_groups:
            notification = {
                "kind": "DEAD_MESSAGE",
                "dedupe_key": f"dead-letter:{queue}:{ids[0]}:{len(ids)}",
                "severity": "high",
                "run_id": None,
                "category_id": int(what) if spec.dead_group_is_category else None,
                "payload": detail,
            }
        letters.append(DeadLetter(ids, alert, notification))
    return letters


async def announce_dead(
    conn: psycopg.AsyncConnection[Any],
    queue: Queue,
    *,
    cooldown_minutes: float,
    max_attempts: int,
    limit: int = 1000,
) -> int:
    """The dead-letter sweep, in one transaction: dead messages not announced yet get, per group, a DEAD_LETTER
    alert (the cooldown counts repeats on the open one) and a DEAD_MESSAGE notification, then are marked
    announced. Returns how many alerts were created."""
    created = 0
    async with conn.transaction():
        cur = conn.cursor(row_factory=dict_row)
        dead = await (await cur.execute(*queue.dead_unalerted(limit=limit))).fetchall()
        if not dead:
            return 0
        clock = await db.fetch_one(conn, "queue_now")
        assert clock is not None
        now = clock["now"]
        for letter in dead_letters(queue.spec, dead, max_attempts=max_attempts):
            raised = await alerts.raise_alerts(
                conn,
                "DEAD_LETTER",
                [letter.alert],
                run_id=None,
                now=now,
                cooldown_minutes=cooldown_minutes,
                serialise=True,
            )
            created += len(raised.created)
            _, alert_id = (raised.created + raised.suppressed)[0]
            if letter.notification is not None:
                note = letter.notification
                payload = Jsonb({**note["payload"], "alert_id": alert_id})
                await db.execute(
                    conn, "notification_enqueue", {**note, "alert_id": alert_id, "payload": payload, "now": now}
                )
            await conn.execute(*queue.dead_alerted(letter.ids))
    return created
