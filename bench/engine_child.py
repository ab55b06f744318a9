"""One measured sync, run in a child process of its own: our `SyncJob`, timed, with its DB time counted.

The engine is not changed: the database calls are only wrapped with timers (the `db` module's query
functions, which every caller reaches through the module, and `Database.transaction`).
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .common import cpu_s, peak_rss_mb


@dataclass
class DbTimer:
    queries: int = 0
    query_s: float = 0.0  # awaiting execute/fetch
    open_s: float = 0.0  # taking a pooled connection and BEGIN
    commit_s: float = 0.0
    transaction_s: float = 0.0  # whole transaction blocks, Python work inside them included
    transactions: int = 0

    @property
    def db_s(self) -> float:
        """Time spent awaiting the database: connection+BEGIN, every statement, COMMIT (summed)."""
        return self.open_s + self.query_s + self.commit_s


def _instrument(timer: DbTimer) -> type[Any]:
    from enrolment_sync import db

    def timed(fn: Any) -> Any:
        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return await fn(*args, **kwargs)
            finally:
                timer.queries += 1
                timer.query_s += time.perf_counter() - start

        return wrapper

    db.fetch_all = timed(db.fetch_all)  # type: ignore[assignment]
    db.fetch_one = timed(db.fetch_one)  # type: ignore[assignment]
    db.execute = timed(db.execute)  # type: ignore[assignment]

    class TimedDatabase(db.Database):
        @asynccontextmanager
        async def transaction(self) -> AsyncIterator[Any]:
            block = super().transaction()
            start = time.perf_counter()
            conn = await block.__aenter__()
            opened = time.perf_counter()
            timer.open_s += opened - start
            timer.transactions += 1
            try:
                yield conn
            except BaseException as exc:
                if not await block.__aexit__(type(exc), exc, exc.__traceback__):
                    raise
            else:
                body_done = time.perf_counter()
                await block.__aexit__(None, None, None)
                timer.commit_s += time.perf_counter() - body_done
            finally:
                timer.transaction_s += time.perf_counter() - start

    return TimedDatabase


def _runner(loop: str) -> Any:
    """The event loop the worker itself uses (`runtime.run_coroutine`: uvloop where installed), or asyncio's."""
    if loop == "asyncio":
        return asyncio.run
    if loop == "uvloop":
        import uvloop

        return uvloop.run
    from enrolment_sync import runtime

    return getattr(runtime, "run_coroutine", asyncio.run)


def loop_name(loop: str) -> str:
    if loop != "auto":
        return loop
    from enrolment_sync import runtime

    if not hasattr(runtime, "run_coroutine"):
        return "asyncio"
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return "asyncio"
    return "uvloop"


def run_sync(params: dict[str, Any]) -> dict[str, Any]:
    """params: database_url, base_url, concurrency, category_id, max_users_per_course, profile (path or None)."""
    from enrolment_sync.api import answer_body
    from enrolment_sync.config import Settings
    from enrolment_sync.job import SyncJob
    from enrolment_sync.kvca.client import KvcaClient
    from enrolment_sync.kvca.factory import client_from_settings
    from enrolment_sync.runtime import configure_logging
    from enrolment_sync.sync import SyncRequest

    configure_logging("WARNING")
    timer = DbTimer()
    timed_database = _instrument(timer)
    from enrolment_sync import db

    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        database_url=params["database_url"],
        kvca_base_url=params["base_url"],
        kvca_client_id="demo-client",
        kvca_client_secret="demo-secret",
        kvca_max_concurrency=params["concurrency"],
        kvca_timeout_seconds=30,
        enrolment_sync_home=Path(tempfile.gettempdir()) / "enrolment-sync-bench-home",
        log_level="WARNING",
    )
    clients: list[KvcaClient] = []

    def client_factory(s: Settings) -> KvcaClient:
        clients.append(client_from_settings(s))
        return clients[-1]

    async def go() -> tuple[Any, float]:
        database = timed_database(db.parse_target(params["database_url"]))
        await database.open()
        try:
            job = SyncJob(database, settings, client_factory=client_factory)
            request = SyncRequest(
                category_id=params["category_id"],
                trigger_type="MANUAL",
                max_users_per_course=params["max_users_per_course"],
            )
            start = time.perf_counter()
            outcome = await job.execute(request)
            return outcome, time.perf_counter() - start
        finally:
            await database.close()

    profiler = None
    if params.get("profile"):
        from pyinstrument import Profiler

        profiler = Profiler(async_mode="enabled")
        profiler.start()
    cpu_before = cpu_s()
    outcome, wall = _runner(params.get("loop", "auto"))(go())
    cpu_used = cpu_s() - cpu_before
    if profiler is not None:
        profiler.stop()
        Path(params["profile"]).write_text(profiler.output_text(unicode=False, color=False, show_all=False))
    if not outcome.ok:
        raise RuntimeError(f"the sync failed: {answer_body(outcome)}")
    stats = clients[-1].stats
    s = outcome.summary
    return {
        "loop": loop_name(params.get("loop", "auto")),
        "wall_s": wall,
        "cpu_s": cpu_used,
        "peak_rss_mb": peak_rss_mb(),
        "client_requests": stats.requests,
        "client_retries": stats.retries,
        "client_rate_limited": stats.rate_limited,
        "records_upserted": s.source_records_upserted,
        "records_written_reported": s.records_written,
        "new_records": s.new_records,
        "changed_records": s.changed_records,
        "db_s": timer.db_s,
        "db_query_s": timer.query_s,
        "db_open_s": timer.open_s,
        "db_commit_s": timer.commit_s,
        "db_transaction_s": timer.transaction_s,
        "db_queries": timer.queries,
        "db_transactions": timer.transactions,
    }


def replay_reads(params: dict[str, Any]) -> dict[str, Any]:
    """The database read an unchanged re-sync makes (`records_of_course` for every course, each in its own
    transaction), sequentially and with no upstream traffic: the DB work alone, free of event-loop queueing."""
    from enrolment_sync import db

    async def go() -> dict[str, Any]:
        database = db.Database(db.parse_target(params["database_url"]), max_size=1)
        await database.open()
        try:
            async with database.connection() as conn:
                cur = await conn.execute("select distinct category_id, course_id from source_record order by 1, 2")
                keys = await cur.fetchall()
            rows = 0
            start = time.perf_counter()
            for category_id, course_id in keys:
                async with database.transaction() as conn:
                    got = await db.fetch_all(
                        conn, "records_of_course", {"category_id": category_id, "course_id": course_id}
                    )
                    rows += len(got)
            return {"replay_db_s": time.perf_counter() - start, "replay_courses": len(keys), "replay_rows": rows}
        finally:
            await database.close()

    return _runner(params.get("loop", "auto"))(go())


def run_floor(params: dict[str, Any]) -> dict[str, Any]:
    """The same requests with nothing else: raw aiohttp on uvloop, one semaphore, no parsing, no database.

    What any Python client can reach against this simulator on this machine; the sync's gap to it is ours.
    """
    import aiohttp

    base, concurrency = params["base_url"], params["concurrency"]

    async def go() -> dict[str, Any]:
        slots = asyncio.Semaphore(concurrency)
        connector = aiohttp.TCPConnector(limit=concurrency)
        async with aiohttp.ClientSession(base, connector=connector) as session:

            async def get(path: str, **kw: Any) -> Any:
                async with slots, session.get(path, **kw) as r:
                    r.raise_for_status()
                    return await r.json()

            start = time.perf_counter()
            async with session.post(
                "/api/v1/auth/token", json={"client_id": "demo-client", "client_secret": "demo-secret"}
            ) as r:
                token = (await r.json())["access_token"]
            headers = {"Authorization": f"Bearer {token}"}
            await get(f"/api/v1/categories/{params['category_id']}", headers=headers)
            courses = (await get(f"/api/v1/categories/{params['category_id']}/courses", headers=headers))["items"]

            async def course(course_id: int) -> None:
                path = f"/api/v1/courses/{course_id}/enrolments"
                first = await get(path, params={"page": 1, "per_page": 100}, headers=headers)
                rest = await asyncio.gather(
                    *(
                        get(path, params={"page": p, "per_page": 100}, headers=headers)
                        for p in range(2, int(first["total_pages"]) + 1)
                    )
                )
                pages = [first, *rest]
                users = [row["user_id"] for page in pages for row in page["items"]]
                await asyncio.gather(*(get(f"{path}/{u}", headers=headers) for u in users))

            await asyncio.gather(*(course(int(c["id"])) for c in courses))
            return {"wall_s": time.perf_counter() - start}

    cpu_before = cpu_s()
    result = _runner("uvloop")(go())
    return {**result, "cpu_s": cpu_s() - cpu_before, "peak_rss_mb": peak_rss_mb(), "loop": "uvloop"}
