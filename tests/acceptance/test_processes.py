"""Whole processes: the demo a newcomer runs, and a worker killed with SIGKILL mid-run."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from enrolment_sync.demo import STEP1_BODY as STEP1
from enrolment_sync.testing.kvca import RunningSimulator, SimulatorConfig
from enrolment_sync.testing.servers import free_port
from tests.waiting import wait_for

CLI = [sys.executable, "-m", "enrolment_sync.cli"]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KVCA_", "DATABASE_URL", "WORKER_API"))}
    env.update(extra)
    return env


class Served:
    def __init__(self, env: dict[str, str]) -> None:
        for _ in range(3):  # another process on this machine may take the free port first: serve then exits
            self.port = free_port()
            self.url = f"http://127.0.0.1:{self.port}"
            self.proc = subprocess.Popen(
                [*CLI, "serve", "--port", str(self.port)],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            if wait_for(self._answered, timeout_s=60, what="the worker to answer /healthz") == "healthy":
                return
        raise AssertionError(f"the worker exited three times, last with {self.proc.returncode}")

    def _answered(self) -> str | None:
        if self.proc.poll() is not None:
            return "exited"
        try:
            return "healthy" if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200 else None
        except httpx.HTTPError:
            return None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=30)


@pytest.fixture
def slow_simulator() -> Iterator[Any]:
    with RunningSimulator(SimulatorConfig(courses=3, users=89, latency_ms=80)) as sim:
        yield sim


def test_sigkill_mid_run_then_lease_expiry(database_url: str, slow_simulator: Any) -> None:
    ttl_s = 8  # renewed every ttl/3: the kill leaves over 5 s of live lease for the request that must be refused
    env = _env(
        DATABASE_URL=database_url,
        KVCA_BASE_URL=slow_simulator.base_url,
        KVCA_MAX_CONCURRENCY="2",
        JOB_LOCK_TTL_SECONDS=str(ttl_s),
        LOG_LEVEL="WARNING",
    )
    first = Served(env)
    second: Served | None = None
    try:
        # Started before the run: on a loaded machine a worker takes seconds to start, and the run must still be
        # going when the first worker is killed.
        second = Served(env)
        threading.Thread(
            target=lambda: _swallow(lambda: httpx.post(f"{first.url}/jobs/enrolment-sync", json=STEP1, timeout=60)),
            daemon=True,
        ).start()
        with psycopg.connect(database_url, autocommit=True) as pg:

            def mid_run() -> bool:
                row = pg.execute(
                    "select count(*) from source_record r join run_log l on l.status = 'RUNNING'"
                ).fetchone()
                return bool(row and row[0] > 0)

            wait_for(mid_run, timeout_s=60, what="the first course to be stored while the run is RUNNING")
            first.proc.send_signal(signal.SIGKILL)
            first.proc.wait(timeout=30)
            try:
                blocked = httpx.post(f"{second.url}/jobs/enrolment-sync", json=STEP1, timeout=60)
                assert blocked.status_code == 409, blocked.text
                assert "job_lock active" in blocked.json()["error"]
                dead_run = pg.execute("select id from run_log where status = 'RUNNING'").fetchone()
                assert dead_run is not None
                stored_before = pg.execute("select count(*) from source_record").fetchone()[0]

                def succeeded() -> httpx.Response | None:
                    answer = httpx.post(f"{second.url}/jobs/enrolment-sync", json=STEP1, timeout=60)
                    return answer if answer.status_code == 200 else None

                ok = wait_for(succeeded, timeout_s=ttl_s * 10, what="a run to succeed after the lease expired")
            finally:
                second.stop()
            dead = pg.execute(
                "select status, error_group, error_message, finished_at from run_log where id = %s", (dead_run[0],)
            ).fetchone()
            assert dead[0] == "FAILED" and dead[1] == "UNKNOWN" and "abandoned" in dead[2] and dead[3] is not None
            alert = pg.execute(
                "select severity, detail->>'error_group' from alert"
                " where alert_type = 'FAILED' and detail->>'run_id' = %s",
                (str(dead_run[0]),),
            ).fetchone()
            assert alert == ("medium", "UNKNOWN"), "the dead run has its FAILED alert (4-4 joins them)"
            total = pg.execute("select count(*), count(distinct (source_type, source_id)) from source_record")
            count, distinct = total.fetchone()
            assert count == distinct == 3 * 89 * 2
            assert ok.json()["summary"]["new_records"] == count - stored_before
            assert pg.execute("select count(*) from run_log where status = 'RUNNING'").fetchone()[0] == 0
            assert pg.execute("select count(*) from job_lock").fetchone()[0] == 0
    finally:
        first.stop()
        if second is not None:
            second.stop()


def _swallow(call: Callable[[], Any]) -> None:
    with contextlib.suppress(httpx.HTTPError):  # the worker is killed under this request
        call()


@pytest.mark.slow
def test_demo_on_a_fresh_home() -> None:
    home = Path(tempfile.mkdtemp(prefix="enrolment-sync-demo-"))
    home.chmod(0o755)
    try:
        result = subprocess.run(
            [*CLI, "demo"],
            env=_env(ENROLMENT_SYNC_HOME=str(home), COLUMNS="200"),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        out = result.stdout
        assert out.count('"source_records_upserted": 178') == 2
        assert '"new_records": 178' in out and '"changed_records": 1' in out and '"created_alerts": 1' in out
        assert "3-1." in out and "SUCCESS" in out
        assert out.count("delivered to the webhook channel") == 2  # one digest per run
        assert "89 appended, 1 updated" in out and (home / "demo" / "sheets" / "category_303.xlsx").exists()
        assert re.search(r"operations console: http://127\.0\.0\.1:\d+/ops +\(HTTP 200\)", out)
        assert re.search(r"password \S{16} \(admin, this demo only\)", out)
        assert "5) unattended" in out and "automatic RETRY" in out
        assert "HTTP_5XX" in out and out.count("RETRY") >= 2  # the slot's failed run, then its RETRY
    finally:
        shutil.rmtree(home, ignore_errors=True)
