"""Whole `serve` processes on one database: every slot runs exactly once, and catch-up after a restart."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import httpx
import psycopg
import pytest
from psycopg.rows import dict_row

from enrolment_sync.testing.servers import free_port
from tests.waiting import wait_for

CLI = [sys.executable, "-m", "enrolment_sync.cli"]


class Serve:
    """`enrolment-sync serve` in its own process (scheduler loop and request runner included)."""

    def __init__(self, database_url: str, kvca_base_url: str, **settings: str) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("KVCA_", "DATABASE_URL", "WORKER_API"))}
        env.update(DATABASE_URL=database_url, KVCA_BASE_URL=kvca_base_url, LOG_LEVEL="WARNING", **settings)
        self.env = env
        self._start()

    def _start(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen([*CLI, "serve", "--port", str(self.port)], env=self.env, stdout=subprocess.DEVNULL)

    def wait_healthy(self) -> Serve:
        for _ in range(3):  # another process on this machine may take the free port first: serve then exits
            if self._became_healthy():
                return self
            self._start()
        raise AssertionError("serve could not listen on a free port three times")

    def _became_healthy(self) -> bool:
        def answered() -> str | None:
            if self.proc.poll() is not None:
                return "exited"
            try:
                answer = httpx.get(f"{self.url}/healthz", timeout=1)
            except httpx.HTTPError:
                return None
            scheduler = answer.json().get("scheduler", {}) if answer.status_code == 200 else {}
            return "ours" if scheduler.get("alive") else None

        return wait_for(answered, timeout_s=30, what="serve to answer /healthz with a live scheduler") == "ours"

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()  # SIGTERM: uvicorn's shutdown stops the loops
        return self.proc.wait(timeout=30)


@pytest.fixture
def pg(database_url: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(database_url, autocommit=True, row_factory=dict_row) as conn:
        yield conn


def _done_slots(pg: psycopg.Connection[Any]) -> int:
    row = pg.execute(
        "select count(*) as n from sync_slot s join sync_request q on q.id = s.request_id where q.status = 'DONE'"
    ).fetchone()
    return int(row["n"])


def test_two_serve_processes_run_every_slot_exactly_once(
    database_url: str, simulator: Any, pg: psycopg.Connection[Any]
) -> None:
    fast = {"SCHEDULER_TICK_SECONDS": "0.2", "REQUEST_POLL_INTERVAL_SECONDS": "0.2"}
    workers = [Serve(database_url, simulator.base_url, **fast) for _ in range(2)]
    try:
        for w in workers:
            w.wait_healthy()
        pg.execute("insert into sync_schedule (category_id, every_seconds) values (303, 1)")
        wait_for(lambda: _done_slots(pg) >= 4, timeout_s=60, what="four slots to have run")
    finally:
        codes = [w.stop() for w in workers]
    assert set(codes) <= {0, -15}, "a graceful stop (uvicorn re-raises the SIGTERM it handled)"
    slots = pg.execute(
        "select s.slot_at, s.request_id, s.fired_by, q.status, q.coalesced from sync_slot s"
        " join sync_request q on q.id = s.request_id order by s.slot_at"
    ).fetchall()
    runs = pg.execute("select id, trigger_type, status, error_group, request_id, worker_id from run_log").fetchall()
    done = [s for s in slots if s["status"] == "DONE"]
    assert len({s["request_id"] for s in slots}) == len(slots), "each slot queued its own request"
    by_request: dict[int, list[dict[str, Any]]] = {}
    for run in runs:
        by_request.setdefault(run["request_id"], []).append(run)
    for slot in done:
        ran = by_request.get(slot["request_id"], [])
        assert [(r["trigger_type"], r["status"]) for r in ran] == [("SCHEDULER", "SUCCESS")], slot
    assert all(r["error_group"] is None for r in runs), "no lock conflict: a pulled request waits for the lease"
    assert len({r["worker_id"].rsplit(":", 1)[0] for r in runs}) >= 1
    beats = pg.execute("select worker_id, stopped_at, state from scheduler_heartbeat").fetchall()
    assert len(beats) == 2 and all(b["stopped_at"] is not None and b["state"]["stopped"] for b in beats)
    assert sum(b["state"]["slots_fired"] for b in beats) == len(slots), "every slot fired by exactly one process"


def test_catch_up_after_a_restart_runs_only_the_latest_missed_slot(
    database_url: str, simulator: Any, pg: psycopg.Connection[Any]
) -> None:
    pg.execute(
        "insert into sync_schedule (category_id, every_seconds, created_at, enabled_since)"
        " values (303, 60, now() - interval '10 minutes 30 seconds', now() - interval '10 minutes 30 seconds')"
    )
    first = Serve(database_url, simulator.base_url).wait_healthy()
    try:
        wait_for(lambda: _done_slots(pg) == 1, timeout_s=30, what="the caught-up slot to run")
    finally:
        first.stop()
    # every process stays down over five more slots
    pg.execute(
        "update sync_schedule set created_at = created_at - interval '5 minutes',"
        " enabled_since = enabled_since - interval '5 minutes', last_slot_at = last_slot_at - interval '5 minutes'"
    )
    pg.execute("update sync_slot set slot_at = slot_at - interval '5 minutes'")
    second = Serve(database_url, simulator.base_url).wait_healthy()
    try:
        wait_for(lambda: _done_slots(pg) == 2, timeout_s=30, what="the second caught-up slot to run")
        ticks = pg.execute("select sum((state->>'ticks')::int) as n from scheduler_heartbeat").fetchone()["n"]
        wait_for(
            lambda: (
                pg.execute("select sum((state->>'ticks')::int) as n from scheduler_heartbeat").fetchone()["n"]
                >= ticks + 3
            ),
            timeout_s=60,
            what="three more ticks",
        )
    finally:
        second.stop()
    slots = pg.execute("select slot_at, created_at from sync_slot, sync_schedule order by slot_at").fetchall()
    offsets = [(s["slot_at"] - s["created_at"]).total_seconds() for s in slots]
    assert offsets == [5 * 60 + 10 * 60 - 5 * 60, 15 * 60], "the latest missed slot each time, never the others"
    runs = pg.execute("select trigger_type, status from run_log order by id").fetchall()
    assert runs == [{"trigger_type": "SCHEDULER", "status": "SUCCESS"}] * 2
