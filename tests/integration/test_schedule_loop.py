"""The scheduler's tick against a real database: slots fire once across loops, catch-up, the watchdog."""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
from collections.abc import Awaitable, Callable
from typing import Any

import psycopg

from enrolment_sync import db
from enrolment_sync.scheduler import store
from enrolment_sync.scheduler.loop import SchedulerLoop
from tests.conftest import make_settings


async def _eventually(check: Callable[[], Awaitable[Any]], *, timeout_s: float, what: str) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not (value := await check()):
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        await asyncio.sleep(0.02)
    return value


def _add(database_url: str, **rule: Any) -> int:
    async def go() -> int:
        database = db.Database(db.parse_target(database_url), min_size=1, max_size=1)
        await database.open()
        try:
            async with database.transaction() as conn:
                return await store.add_schedule(conn, category_id=303, **rule)
        finally:
            await database.close()

    return asyncio.run(go())


def _backdate(pg: psycopg.Connection[Any], schedule_id: int, minutes: float) -> None:
    pg.execute(
        "update sync_schedule set created_at = now() - make_interval(secs => %s * 60), enabled_since = now()"
        " - make_interval(secs => %s * 60) where id = %s",
        (minutes, minutes, schedule_id),
    )


def test_two_loops_fire_each_slot_once_and_queued_repeats_coalesce(
    database_url: str, pg: psycopg.Connection[Any]
) -> None:
    settings = make_settings(database_url, "http://127.0.0.1:9", scheduler_tick_seconds=0.2)
    schedule_id = _add(database_url, every_s=1)

    async def go() -> None:
        pools = [db.Database(db.parse_target(database_url), min_size=1, max_size=2) for _ in range(2)]
        for pool in pools:
            await pool.open()
        stop = asyncio.Event()
        loops = [SchedulerLoop(pool, settings, worker_id=f"loop-{i}") for i, pool in enumerate(pools)]
        tasks = [asyncio.create_task(loop.run(stop)) for loop in loops]

        async def three_slots() -> bool:
            async with pools[0].connection() as conn:
                row = await (await conn.execute("select count(*) from sync_slot")).fetchone()
            return bool(row and row[0] >= 3)

        try:
            await _eventually(three_slots, timeout_s=60, what="three slots")
        finally:
            stop.set()
            await asyncio.gather(*tasks)
            for pool in pools:
                await pool.close()

    asyncio.run(go())
    slots = pg.execute("select slot_at, request_id from sync_slot order by slot_at").fetchall()
    gaps = {b["slot_at"] - a["slot_at"] for a, b in itertools.pairwise(slots)}
    assert gaps == {dt.timedelta(seconds=1)}, "consecutive slots, none skipped, none twice"
    requests = pg.execute("select id, trigger_type, coalesced, schedule_id from sync_request").fetchall()
    # nothing ran them, so each later slot is counted on the one request still queued
    assert requests == [
        {"id": slots[0]["request_id"], "trigger_type": "SCHEDULER", "coalesced": len(slots) - 1, "schedule_id": 1}
    ]
    assert {s["request_id"] for s in slots} == {requests[0]["id"]}
    schedule = pg.execute("select last_slot_at from sync_schedule where id = %s", (schedule_id,)).fetchone()
    assert schedule["last_slot_at"] == slots[-1]["slot_at"]
    beats = pg.execute("select worker_id, stopped_at is not null as stopped, state from scheduler_heartbeat").fetchall()
    assert sorted(b["worker_id"] for b in beats) == ["loop-0", "loop-1"]
    assert all(b["stopped"] and b["state"]["stopped"] for b in beats), "each loop wrote its final state"
    assert sum(b["state"]["slots_fired"] for b in beats) == len(slots)


def test_catch_up_fires_only_the_latest_missed_slot(database_url: str, pg: psycopg.Connection[Any]) -> None:
    settings = make_settings(database_url, "http://127.0.0.1:9")
    schedule_id = _add(database_url, every_s=60)
    _backdate(pg, schedule_id, minutes=10.5)  # ten slots passed while no process ran

    async def go() -> None:
        database = db.Database(db.parse_target(database_url), min_size=1, max_size=1)
        await database.open()
        try:
            loop = SchedulerLoop(database, settings, worker_id="restarted")
            await loop.tick()
            await loop.tick()
        finally:
            await database.close()

    asyncio.run(go())
    slots = pg.execute("select slot_at, s.created_at from sync_slot join sync_schedule s on s.id = schedule_id")
    rows = slots.fetchall()
    assert len(rows) == 1 and rows[0]["slot_at"] == rows[0]["created_at"] + dt.timedelta(minutes=10)
    assert pg.execute("select count(*) as n from sync_request").fetchone()["n"] == 1


def test_a_slot_without_success_within_the_grace_raises_one_stale_alert(
    database_url: str, pg: psycopg.Connection[Any]
) -> None:
    settings = make_settings(database_url, "http://127.0.0.1:9", schedule_grace_minutes=2)
    schedule_id = _add(database_url, cron="*/5 * * * *")
    _backdate(pg, schedule_id, minutes=60)

    async def go() -> list[int]:
        database = db.Database(db.parse_target(database_url), min_size=1, max_size=1)
        await database.open()
        try:
            loop = SchedulerLoop(database, settings, worker_id="watchdog")
            for _ in range(3):
                await loop.tick()
            return [loop.state.stale_alerts]
        finally:
            await database.close()

    assert asyncio.run(go()) == [1]
    alerts = pg.execute(
        "select alert_type, severity, source_type, source_id, occurrences, detail, message from alert"
    ).fetchall()
    assert len(alerts) == 1
    alert = alerts[0]
    stale_slot = pg.execute("select stale_slot_at from sync_schedule").fetchone()["stale_slot_at"]
    assert (alert["alert_type"], alert["severity"], alert["source_type"], alert["occurrences"]) == (
        "STALE",
        "high",
        "sync_schedule",
        1,
    )
    assert alert["source_id"] == f"enrolment_sync:schedule:{schedule_id}"
    assert alert["detail"]["slot_at"] == stale_slot.isoformat() and alert["detail"]["category_id"] == 303
    assert f"schedule {schedule_id}" in alert["message"] and "KST" in alert["message"]
    now = pg.execute("select now() as now").fetchone()["now"]
    assert now - dt.timedelta(minutes=7) <= stale_slot <= now - dt.timedelta(minutes=2), "the latest slot past grace"
