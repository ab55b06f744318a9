"""What every benchmark needs: the simulator in its own process, a Postgres server, child processes with a
deadline, write counts proven from Postgres, and printing a table and one JSON line."""

from __future__ import annotations

import contextlib
import json
import math
import multiprocessing
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from enrolment_sync.testing.databases import embedded_server
from enrolment_sync.testing.servers import free_port

BENCH_DBNAME = "enrolment_sync_bench"
SIMULATOR_START_TIMEOUT_S = 60.0
CHANGE_STATUSES = ("ENROLLED", "IN_PROGRESS", "FAILED", "CANCELLED")  # never COMPLETED: details stay put


# -- the upstream simulator, in a process of its own ------------------------------------------------


@dataclass(frozen=True)
class SimulatorSpec:
    courses: int
    users: int
    latency_ms: float
    max_in_flight: int | None
    seed: int = 33
    category_id: int = 303
    client_id: str = "demo-client"
    client_secret: str = "demo-secret"


class SimulatorProcess:
    """`python -m enrolment_sync.testing.kvca` on a free loopback port, so it never shares our GIL."""

    def __init__(self, spec: SimulatorSpec, *, log_dir: Path) -> None:
        self.spec = spec
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_dir / f"simulator-{self.port}.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self._http = httpx.Client(base_url=self.base_url, timeout=30.0)

    def __enter__(self) -> SimulatorProcess:
        s = self.spec
        argv = [
            sys.executable,
            "-m",
            "enrolment_sync.testing.kvca",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--courses",
            str(s.courses),
            "--users",
            str(s.users),
            "--latency-ms",
            str(s.latency_ms),
            "--seed",
            str(s.seed),
            "--category-id",
            str(s.category_id),
            "--client-id",
            s.client_id,
            "--client-secret",
            s.client_secret,
        ]
        if s.max_in_flight is not None:
            argv += ["--max-in-flight", str(s.max_in_flight)]
        with self.log_path.open("wb") as log:
            self._proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + SIMULATOR_START_TIMEOUT_S
        while True:
            if self._proc.poll() is not None:
                raise RuntimeError(f"the simulator exited with {self._proc.returncode}; see {self.log_path}")
            with contextlib.suppress(httpx.TransportError):
                if self._http.get("/_control/stats").status_code == 200:
                    return self
            if time.monotonic() > deadline:
                self.__exit__(None, None, None)
                raise RuntimeError(f"the simulator did not answer within {SIMULATOR_START_TIMEOUT_S:g} s")
            time.sleep(0.05)

    def __exit__(self, *exc: object) -> None:
        self._http.close()
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)

    def cpu_s(self) -> float:
        """CPU seconds the simulator process has used so far (it must not be the bottleneck)."""
        import psutil

        if self._proc is None:
            return 0.0
        times = psutil.Process(self._proc.pid).cpu_times()
        return float(times.user + times.system)

    def stats(self) -> dict[str, Any]:
        response = self._http.get("/_control/stats")
        response.raise_for_status()
        return dict(response.json())

    def reset_stats(self) -> None:
        self._http.post("/_control/stats/reset").raise_for_status()

    def change_statuses(self, fraction: float, *, seed: int) -> int:
        """Give `fraction` of all enrolments another status (never COMPLETED); returns how many changed.

        Reads the current rows through the API first (before the measured phase), so that every change is
        a real status change; one such change is exactly one changed status row upstream.
        """
        s = self.spec
        token = self._http.post(
            "/api/v1/auth/token", json={"client_id": s.client_id, "client_secret": s.client_secret}
        ).json()["access_token"]
        headers = {"Authorization": f"Bearer {token}"}
        courses = self._pages(f"/api/v1/categories/{s.category_id}/courses", headers)
        current: list[tuple[int, str, str]] = []
        for course in courses:
            rows = self._pages(f"/api/v1/courses/{course['id']}/enrolments", headers)
            current += [(int(course["id"]), str(r["user_id"]), str(r["status"])) for r in rows]
        rng = random.Random(seed)
        chosen = rng.sample(current, max(1, math.ceil(len(current) * fraction)))
        for course_id, user_id, status in chosen:
            new_status = rng.choice([c for c in CHANGE_STATUSES if c != status])
            self._http.post(
                "/_control/enrolments/update",
                json={"course_id": course_id, "user_id": user_id, "status": new_status},
            ).raise_for_status()
        return len(chosen)

    def _pages(self, path: str, headers: dict[str, str]) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        page = 1
        while True:
            body = self._http.get(path, params={"page": page, "per_page": 100}, headers=headers).json()
            items += body["items"]
            if page >= int(body["total_pages"]):
                return items
            page += 1


# -- Postgres ------------------------------------------------------------------------------------


@contextlib.contextmanager
def postgres_server(work_dir: Path) -> Iterator[tuple[str, str]]:
    """(server URL, where it came from): TEST_DATABASE_URL, or an embedded server under `work_dir`."""
    url = os.environ.get("TEST_DATABASE_URL")
    if url:
        yield url, "TEST_DATABASE_URL"
        return
    with embedded_server(work_dir / "pg") as embedded_url:
        yield embedded_url, "embedded"


def as_url(conninfo: str) -> str:
    """A `postgresql://` URL for any conninfo (dlt wants a URL, `with_dbname` gives key=value)."""
    if "://" in conninfo:
        return conninfo
    parts = conninfo_to_dict(conninfo)
    user = quote(str(parts.get("user", "postgres")), safe="")
    password = parts.get("password")
    auth = f"{user}:{quote(str(password), safe='')}" if password else user
    host = parts.get("host", "127.0.0.1")
    port = parts.get("port", 5432)
    return f"postgresql://{auth}@{host}:{port}/{parts.get('dbname', 'postgres')}"


def current_xid(url: str) -> int:
    """A transaction id: every row version written after this point has a larger xmin."""
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("select txid_current()").fetchone()
    assert row is not None
    return int(row[0]) % 2**32  # xmin is the 32-bit id; a fresh bench database never wraps


def rows_written_since(url: str, tables: Sequence[tuple[str, str]], xid: int) -> int:
    """Row versions of `tables` ((schema, name)) created after `xid`: inserts and updates, nothing else."""
    total = 0
    with psycopg.connect(url, autocommit=True) as conn:
        for schema, table in tables:
            exists = conn.execute("select to_regclass(%s) is not null", (f"{schema}.{table}",)).fetchone()
            if not exists or not exists[0]:
                continue
            query = sql.SQL("select count(*) from {} where xmin::text::bigint > %s").format(
                sql.Identifier(schema, table)
            )
            row = conn.execute(query, (xid,)).fetchone()
            total += int(row[0]) if row else 0
    return total


def tuple_counters(url: str, schemas: Sequence[str]) -> dict[str, int]:
    """n_tup_ins + n_tup_upd (+ n_tup_del) summed over `schemas`, from pg_stat_user_tables."""
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "select coalesce(sum(n_tup_ins), 0), coalesce(sum(n_tup_upd), 0), coalesce(sum(n_tup_del), 0)"
            " from pg_stat_user_tables where schemaname = any(%s)",
            (list(schemas),),
        ).fetchone()
    assert row is not None
    return {"ins": int(row[0]), "upd": int(row[1]), "del": int(row[2])}


def settled_tuple_counters(url: str, schemas: Sequence[str], *, timeout_s: float = 3.0) -> dict[str, int]:
    """The counters once they stop moving: backends flush their statistics when they exit or go idle."""
    deadline = time.monotonic() + timeout_s
    last = tuple_counters(url, schemas)
    while time.monotonic() < deadline:
        time.sleep(0.25)
        now = tuple_counters(url, schemas)
        if now == last:
            return now
        last = now
    return last


def database_active_s(url: str) -> float:
    """Seconds the server's backends spent executing statements in this database (pg_stat_database)."""
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("select active_time from pg_stat_database where datname = current_database()").fetchone()
    return float(row[0] or 0) / 1000 if row else 0.0


def counter_delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {k: after[k] - before[k] for k in before}


def drop_schemas(url: str, schemas: Sequence[str]) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        for schema in schemas:
            conn.execute(sql.SQL("drop schema if exists {} cascade").format(sql.Identifier(schema)))


# -- child processes -------------------------------------------------------------------------------


def peak_rss_mb() -> float:
    """This process's peak resident set (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _child_entry(target: Callable[[dict[str, Any]], dict[str, Any]], params: dict[str, Any], conn: Any) -> None:
    try:
        result = target(params)
        conn.send(("ok", result))
    except BaseException:
        conn.send(("error", traceback.format_exc()))
    finally:
        conn.close()


def run_in_child(
    target: Callable[[dict[str, Any]], dict[str, Any]], params: dict[str, Any], *, timeout_s: float
) -> Any:
    """Run `target(params)` in a fresh (spawned) process, so its peak RSS and CPU are its own; kill it late."""
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child_entry, args=(target, params, child), daemon=True)
    proc.start()
    child.close()
    try:
        if not parent.poll(timeout_s):
            raise TimeoutError(f"{target.__name__} did not finish within {timeout_s:.0f} s")
        status, payload = parent.recv()
    finally:
        proc.join(timeout=10)
        if proc.is_alive():
            proc.kill()
            proc.join(timeout=10)
        parent.close()
    if status != "ok":
        raise RuntimeError(f"{target.__name__} failed in its child process:\n{payload}")
    return payload


@contextlib.contextmanager
def work_dir(keep: bool = False) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="enrolment-sync-bench-"))
    try:
        yield path
    finally:
        if not keep:
            shutil.rmtree(path, ignore_errors=True)


# -- figures ----------------------------------------------------------------------------------------


def code_version() -> str:
    """`git describe --always --dirty` of the tree measured (the figures belong to that code)."""
    try:
        out = subprocess.run(
            ["git", "describe", "--always", "--dirty"], capture_output=True, text=True, timeout=10, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip()


def bound_s(requests: int, concurrency: int, latency_ms: float) -> float:
    """The physical bound: every request takes the latency, at most `concurrency` at a time."""
    return math.ceil(requests / concurrency) * latency_ms / 1000


def fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}"
    return str(value)


def print_table(title: str, headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    cells = [[fmt(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    print(f"\n{title}")
    print("  ".join(h.rjust(w) if i else h.ljust(w) for i, (h, w) in enumerate(zip(headers, widths, strict=True))))
    print("  ".join("-" * w for w in widths))
    for row in cells:
        print("  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))))


def print_json_line(payload: dict[str, Any]) -> None:
    print(json.dumps(payload, ensure_ascii=False, separators=(",", ":"), sort_keys=True))
