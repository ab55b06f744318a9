"""GET /metrics: Prometheus text format, every value read from the database at scrape time (docs/metrics.md).

Runs are counted by migration 0010's counter tables, which the run that finishes updates in its own
transaction, so every process (`serve`, a short `sync` command) is counted and every scrape of any worker
agrees. `snapshot` reads them (I/O); `families` turns a snapshot into metric families (pure); a collector
registered on a scrape-local registry hands those to prometheus-client's exposition.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from .. import __version__, db
from .auth import ConsoleDisabled, Gate, NotSignedIn

PREFIX = "enrolment_sync"
OUTBOX_STATUSES = ("PENDING", "PROCESSING", "DEAD")

Row = dict[str, Any]
router = APIRouter(include_in_schema=False)


@dataclass(frozen=True)
class Snapshot:
    runs: list[Row]
    duration_buckets: list[Row]
    last_success: list[Row]
    upstream: list[Row]
    open_alerts: list[Row]
    queues: list[Row]
    now: dt.datetime
    version: str = __version__


async def snapshot(conn: psycopg.AsyncConnection[Any]) -> Snapshot:
    """Everything a scrape shows, read in one repeatable-read transaction (the figures agree with each other)."""
    async with conn.transaction():
        await conn.execute("set transaction isolation level repeatable read, read only")
        now_row = await db.fetch_one(conn, "metrics_now")
        assert now_row is not None
        return Snapshot(
            runs=await db.fetch_all(conn, "metrics_runs"),
            duration_buckets=await db.fetch_all(conn, "metrics_duration_buckets"),
            last_success=await db.fetch_all(conn, "metrics_last_success"),
            upstream=await db.fetch_all(conn, "metrics_upstream_requests"),
            open_alerts=await db.fetch_all(conn, "console_open_alerts_by_severity"),
            queues=await db.fetch_all(conn, "console_queue_health"),
            now=now_row["now"],
        )


def _bound(le: float) -> str:
    return "+Inf" if le == float("inf") else repr(float(le))


def families(s: Snapshot) -> list[Metric]:
    """The metric families of one snapshot. Labels carry no learner or course ids."""
    runs = CounterMetricFamily(
        f"{PREFIX}_runs", "Finished sync runs.", labels=["trigger_type", "status", "error_group"]
    )
    changed = CounterMetricFamily(f"{PREFIX}_records_changed", "Records whose content changed, over finished runs.")
    changed_total = 0
    for r in s.runs:
        runs.add_metric([r["trigger_type"], r["status"], r["error_group"]], r["runs"])
        changed_total += r["changed_records"]
    changed.add_metric([], changed_total)

    duration = HistogramMetricFamily(
        f"{PREFIX}_run_duration_seconds", "Wall time of finished sync runs.", labels=["status"]
    )
    by_status: dict[str, list[Row]] = {}
    for r in s.duration_buckets:
        by_status.setdefault(r["status"], []).append(r)
    for status, rows in sorted(by_status.items()):
        buckets = [(_bound(r["le"]), r["runs"]) for r in sorted(rows, key=lambda r: r["le"])]
        duration.add_metric([status], buckets, sum_value=rows[0]["sum_seconds"])

    last_success = GaugeMetricFamily(
        f"{PREFIX}_last_success_timestamp_seconds",
        "Unix time of the category's last successful run.",
        labels=["category_id"],
    )
    for r in s.last_success:
        last_success.add_metric([str(r["category_id"])], r["last_success_s"])

    upstream = CounterMetricFamily(
        f"{PREFIX}_upstream_requests",
        "Requests to the upstream LMS by answer status code ('none': no answer, e.g. a timeout).",
        labels=["code"],
    )
    for r in s.upstream:
        upstream.add_metric([r["code"]], r["requests"])

    alerts = GaugeMetricFamily(f"{PREFIX}_alerts_open", "Unresolved alerts.", labels=["alert_type", "severity"])
    for r in s.open_alerts:
        alerts.add_metric([r["alert_type"], r["severity"]], r["cnt"])

    messages = GaugeMetricFamily(
        f"{PREFIX}_outbox_messages", "Queue messages not yet delivered, by state.", labels=["queue", "status"]
    )
    oldest = GaugeMetricFamily(
        f"{PREFIX}_outbox_oldest_open_age_seconds",
        "Age of the oldest pending or processing message (0 when none is open).",
        labels=["queue"],
    )
    for q in s.queues:
        counts = {"PENDING": q["pending"], "PROCESSING": q["processing"], "DEAD": q["dead"]}
        for status in OUTBOX_STATUSES:
            messages.add_metric([q["queue"], status], counts[status])
        opened = q["oldest_open_at"]
        oldest.add_metric([q["queue"]], max(0.0, (s.now - opened).total_seconds()) if opened else 0.0)

    build = GaugeMetricFamily(f"{PREFIX}_build_info", "The running version (always 1).", labels=["version"])
    build.add_metric([s.version], 1)
    return [runs, duration, last_success, changed, alerts, messages, oldest, upstream, build]


class SnapshotCollector(Collector):
    def __init__(self, metrics: Iterable[Metric]) -> None:
        self.metrics = list(metrics)

    def collect(self) -> Iterator[Metric]:
        yield from self.metrics


def exposition(s: Snapshot) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(families(s)))
    return generate_latest(registry)


@router.get("/metrics")
@router.get("/ops/metrics")  # the same, where a console session's cookie (path /ops) reaches it
async def metrics(request: Request) -> Response:
    """Prometheus metrics; the console's credentials (bearer token or session), refused without."""
    gate: Gate = request.app.state.ops_gate
    try:
        gate.viewer(request)
    except (NotSignedIn, ConsoleDisabled):
        return PlainTextResponse(
            "missing or wrong credentials: send the WORKER_API_TOKEN bearer token (docs/metrics.md)\n",
            status_code=401,
            headers={"WWW-Authenticate": "Bearer"},
        )
    database: db.Database = request.app.state.db
    async with database.connection() as conn:
        taken = await snapshot(conn)
    return Response(exposition(taken), media_type=CONTENT_TYPE_LATEST)
