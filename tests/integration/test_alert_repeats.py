"""Repeats absorbed by the cooldown: the message tells the latest one, detail.repeats keeps a bounded list."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import psycopg

from enrolment_sync import db
from enrolment_sync.alerts import AlertSpec
from enrolment_sync.failures import Severity
from enrolment_sync.store import alerts

START = dt.datetime(2026, 3, 2, 0, 0, tzinfo=dt.UTC)


def _spec(n: int, severity: Severity) -> AlertSpec:
    return AlertSpec(
        "enrolment_status", "303:9001:u1", severity, f"수강 상태 변경 [{severity}] u1 · 변경 {n}", {"n": n}
    )


def test_repeats_are_kept_newest_last_up_to_the_bound(database_url: str, pg: psycopg.Connection[Any]) -> None:
    total = alerts.REPEATS_KEPT + 5
    severities = [Severity.LOW, Severity.HIGH] + [Severity.MEDIUM] * (total - 2)

    async def raise_all() -> None:
        database = db.Database(db.parse_target(database_url), max_size=1)
        await database.open()
        try:
            for n, severity in enumerate(severities):
                async with database.transaction() as conn:
                    await alerts.raise_alerts(
                        conn,
                        "CHANGED",
                        [_spec(n, severity)],
                        run_id=None,
                        now=START + dt.timedelta(minutes=n),
                        cooldown_minutes=60,
                    )
        finally:
            await database.close()

    asyncio.run(raise_all())
    [alert] = pg.execute("select * from alert").fetchall()
    assert alert["occurrences"] == total
    assert alert["severity"] == "high"  # the worst seen
    assert alert["detail"]["n"] == 0  # the first occurrence's own detail stays
    repeats = alert["detail"]["repeats"]
    assert [r["detail"]["n"] for r in repeats] == list(range(total - alerts.REPEATS_KEPT, total))
    assert repeats[-1]["severity"] == "medium" and repeats[-1]["message"].endswith(f"변경 {total - 1}")
    assert alert["detail"]["latest"] == repeats[-1]["detail"]  # the last repeat, where it always was
    # the latest change, how often, and that the alert as a whole is worse than this repeat
    assert alert["message"] == f"수강 상태 변경 [medium] u1 · 변경 {total - 1} (반복 {total}회째, 최고 심각도 high)"
