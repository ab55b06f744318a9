"""The one queue implementation (queue.py) on a third table that follows the contract, with no SQL of its own."""

from __future__ import annotations

import threading
from typing import Any

import psycopg
from psycopg.rows import dict_row

from enrolment_sync import db
from enrolment_sync.outbox.store import QUEUES, OutboxStore
from enrolment_sync.queue import Queue, QueueSpec, Retry

# what the next issue's sync_request table could look like: the contract columns and its own
PROBE_TABLE = """
create table probe_request (
    id              bigint generated always as identity primary key,
    category_id     bigint      not null,
    requested_by    text        not null,
    status          text        not null default 'PENDING'
                        check (status in ('PENDING', 'PROCESSING', 'DONE', 'DEAD')),
    attempts        integer     not null default 0,
    next_attempt_at timestamptz not null default now(),
    locked_by       text,
    locked_until    timestamptz,
    last_error      text,
    created_at      timestamptz not null default now(),
    updated_at      timestamptz not null default now(),
    processed_at    timestamptz,
    dead_alerted    boolean     not null default false
);
create index probe_request_claim_idx on probe_request (next_attempt_at, id) where status in ('PENDING', 'PROCESSING');
"""
PROBE = Queue(QueueSpec("probe_request", columns=("category_id", "requested_by"), dead_group="category_id"))
PROBE_IN_ORDER = Queue(
    QueueSpec("probe_request", columns=("category_id",), dead_group="category_id", one_open_per="category_id")
)


def _rows(store: OutboxStore, statement: Any) -> list[dict[str, Any]]:
    return store._run("test", statement)[0]


def test_both_outbox_tables_follow_the_queue_contract_and_a_table_that_does_not_is_named(
    pg: psycopg.Connection[Any],
) -> None:
    for queue in QUEUES:
        assert pg.execute(*queue.contract()).fetchall() == [], queue.name
    pg.execute("create table probe_broken (id bigint, status text, attempts bigint)")
    missing = {r["name"] for r in pg.execute(*Queue(QueueSpec("probe_broken", (), "id")).contract()).fetchall()}
    assert "attempts" in missing and "dead_alerted" in missing and "id" not in missing


def test_a_third_queue_claims_leases_retries_parks_and_announces_without_sql_of_its_own(
    pg: psycopg.Connection[Any], database_url: str
) -> None:
    pg.execute(PROBE_TABLE)
    assert pg.execute(*PROBE.contract()).fetchall() == []
    pg.execute(
        "insert into probe_request (category_id, requested_by)"
        " select 300 + n % 3, 'schedule' from generate_series(1, 9) n"
    )
    target = db.parse_target(database_url)
    a = OutboxStore(target, consumer_id="a", lease_s=60)
    b = OutboxStore(target, consumer_id="b", lease_s=60)
    try:
        # two consumers claiming at once get disjoint messages (FOR UPDATE SKIP LOCKED)
        claimed: dict[str, list[dict[str, Any]]] = {}
        threads = [
            threading.Thread(
                target=lambda s=s: claimed.__setitem__(s.consumer_id, s.claim(PROBE, batch=5, max_attempts=2))
            )
            for s in (a, b)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        ids_a = [m["id"] for m in claimed["a"]]
        ids_b = [m["id"] for m in claimed["b"]]
        assert not set(ids_a) & set(ids_b) and len(ids_a) + len(ids_b) == 9
        assert set(claimed["a"][0]) == {"id", "attempts", "category_id", "requested_by"}
        leases = pg.execute(
            "select bool_and(locked_until = next_attempt_at and locked_until > now() + interval '50 s') as ok "
            "from probe_request where status = 'PROCESSING'"
        ).fetchone()
        assert leases == {"ok": True}  # the lease is held in the row, on the database's clock

        # renew answers only what is still ours; done, retry and release act only on our own leases
        assert a.renew(PROBE, ids_a + ids_b) == set(ids_a)
        assert _rows(a, PROBE.done(ids_b, consumer="a")) == []
        assert {r["id"] for r in _rows(a, PROBE.done(ids_a[:1], consumer="a"))} == set(ids_a[:1])
        b.release(PROBE, ids_b[:1], delay_s=0)
        retried = b.retry(PROBE, [Retry(i, 30.0, False) for i in ids_b[1:]], "upstream 503")
        assert {r["status"] for r in retried} == {"PENDING"}
        later = pg.execute(
            "select bool_and(next_attempt_at > now() + interval '20 s' and last_error = 'upstream 503') as ok "
            "from probe_request where id = any(%s)",
            (ids_b[1:],),
        ).fetchone()
        assert later == {"ok": True}
        released = pg.execute("select status, attempts from probe_request where id = %s", (ids_b[0],)).fetchone()
        assert released == {"status": "PENDING", "attempts": 0}  # given back untried: the attempt is not counted

        # a consumer that died: its lease ends on the database's clock, the next claim takes the message over
        pg.execute("update probe_request set next_attempt_at = now() - interval '1 s' where id = any(%s)", (ids_a[1:],))
        taken = {m["id"]: m["attempts"] for m in b.claim(PROBE, batch=20, max_attempts=2)}
        assert set(ids_a[1:]) <= set(taken) and {taken[i] for i in ids_a[1:]} == {2}
        assert a.renew(PROBE, ids_a[1:]) == set()

        # on the last attempt its lease runs out again: the sweep parks it dead and the dead-letter sweep announces
        pg.execute("update probe_request set next_attempt_at = now() - interval '1 s' where id = any(%s)", (ids_a[1:],))
        parked = a.park_expired(PROBE, max_attempts=2)
        assert {r["id"] for r in parked} == set(ids_a[1:])
        assert all(r["last_error"].startswith("lease expired on attempt 2 (consumer b") for r in parked)
        groups = len({m["category_id"] for m in claimed["a"][1:]})
        assert a.announce_dead(PROBE, cooldown_minutes=60, max_attempts=2) == groups
        assert a.announce_dead(PROBE, cooldown_minutes=60, max_attempts=2) == 0  # announced once
        alerts = pg.execute(
            "select source_type, source_id, severity, detail from alert where alert_type = 'DEAD_LETTER'"
        ).fetchall()
        assert len(alerts) == groups and {r["source_type"] for r in alerts} == {"probe_request"}
        assert {r["severity"] for r in alerts} == {"high"}
        assert sum(r["detail"]["count"] for r in alerts) == len(ids_a) - 1
        notes = pg.execute("select kind, alert_id from notification_outbox").fetchall()
        assert len(notes) == groups and {n["kind"] for n in notes} == {"DEAD_MESSAGE"}
        assert pg.execute(
            "select count(*) as n from probe_request where status = 'DEAD' and not dead_alerted"
        ).fetchone() == {"n": 0}
        status = _rows(a, PROBE.status())[0]
        assert status["queue"] == "probe_request" and status["dead"] == len(ids_a) - 1
    finally:
        a.close()
        b.close()


def test_the_key_order_option_holds_a_message_back_while_an_older_one_of_its_key_is_open(database_url: str) -> None:
    with psycopg.connect(database_url, autocommit=True, row_factory=dict_row) as conn:
        conn.execute(PROBE_TABLE)
        conn.execute("insert into probe_request (category_id, requested_by) values (1, 'x'), (1, 'y'), (2, 'z')")
    store = OutboxStore(db.parse_target(database_url), consumer_id="c", lease_s=60)
    try:
        first = store.claim(PROBE_IN_ORDER, batch=10, max_attempts=5)
        assert [(m["id"], m["category_id"]) for m in first] == [(1, 1), (3, 2)]
        assert store.claim(PROBE_IN_ORDER, batch=10, max_attempts=5) == []  # 2 waits for 1, though it is ready
        store.retry(PROBE_IN_ORDER, [Retry(1, 0.0, False)], "failed")
        assert [m["id"] for m in store.claim(PROBE_IN_ORDER, batch=10, max_attempts=5)] == [1]  # still first
    finally:
        store.close()
