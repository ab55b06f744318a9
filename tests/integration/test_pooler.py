"""Through a real transaction pooler (PgBouncer, pool_mode = transaction), as Supabase's port 6543 behaves.

Consecutive transactions land on different server connections, so nothing may rely on session state:
the lease is a row, alert keys use transaction-scoped advisory locks, and prepared statements are off
when the URL says `pgbouncer=true`. PgBouncer 1.18 (Debian 12) forwards no prepared statements at all.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

from enrolment_sync.demo import STEP1_BODY as STEP1
from enrolment_sync.testing.kvca import RunningSimulator, SimulatorConfig
from enrolment_sync.testing.servers import free_port
from tests.conftest import Worker, make_settings

PGBOUNCER = shutil.which("pgbouncer") or ("/usr/sbin/pgbouncer" if Path("/usr/sbin/pgbouncer").exists() else None)

pytestmark = pytest.mark.skipif(
    PGBOUNCER is None and not os.environ.get("CI"), reason="pgbouncer is not installed (CI installs it)"
)


@pytest.fixture
def pooled_url(database_url: str) -> Iterator[str]:
    assert PGBOUNCER is not None, "CI must install pgbouncer (see .ci/run)"
    params = conninfo_to_dict(database_url)
    server_host = str(params.get("host") or "127.0.0.1")
    if server_host.startswith("/"):
        pytest.skip("the embedded server listens on a socket only PgBouncer's user cannot reach; CI uses TCP")
    server_port = str(params.get("port") or "5432")
    dbname = str(params["dbname"])
    folder = Path(tempfile.mkdtemp(prefix="es-pgbouncer-"))
    folder.chmod(0o777)
    port = free_port()
    (folder / "users.txt").write_text('"postgres" ""\n')
    (folder / "pgbouncer.ini").write_text(
        "[databases]\n"
        f"* = host={server_host} port={server_port}\n"
        "[pgbouncer]\n"
        f"listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n"
        f"auth_type = trust\nauth_file = {folder / 'users.txt'}\n"
        "pool_mode = transaction\ndefault_pool_size = 4\nmax_client_conn = 200\n"
        f"logfile = {folder / 'pgbouncer.log'}\npidfile = {folder / 'pgbouncer.pid'}\n"
    )
    for f in folder.iterdir():
        f.chmod(0o666)
    command = [PGBOUNCER, str(folder / "pgbouncer.ini")]
    if os.geteuid() == 0:
        command[1:1] = ["-u", "nobody"]  # PgBouncer refuses to run as root
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"postgresql://postgres@127.0.0.1:{port}/{quote(dbname)}?pgbouncer=true"
    deadline = time.monotonic() + 20
    while True:
        try:
            with psycopg.connect(url.replace("?pgbouncer=true", ""), connect_timeout=2) as conn:
                conn.execute("select 1")
            break
        except psycopg.OperationalError:
            if proc.poll() is not None or time.monotonic() > deadline:
                err = proc.stderr.read().decode() if proc.stderr else ""
                log = (folder / "pgbouncer.log").read_text() if (folder / "pgbouncer.log").exists() else ""
                raise AssertionError(f"pgbouncer did not start: {err} {log}") from None
            time.sleep(0.05)
    try:
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        shutil.rmtree(folder, ignore_errors=True)


def test_step1_through_a_transaction_pooler(pooled_url: str, database_url: str) -> None:
    with RunningSimulator(SimulatorConfig(courses=2, users=89)) as sim:
        settings = make_settings(pooled_url, sim.base_url)
        with Worker(settings, pooled_url) as w:
            answers = [w.sync(STEP1) for _ in range(4)]  # every query runs more often than psycopg's prepare threshold
            course_id = sim.state.course_ids(303)[0]
            user_id = sim.state.enrolments(course_id)[0]["user_id"]
            sim.state.update_enrolment(course_id, user_id, status="CANCELLED")
            changed = w.sync(STEP1)
            sim.state.add_fault(status=503, count=-1)
            failed = [w.sync(STEP1) for _ in range(2)]
    assert [a.status_code for a in answers] == [200] * 4, answers[-1].text
    assert answers[0].json()["summary"]["new_records"] == 2 * 89 * 2
    assert changed.json()["summary"]["changed_records"] == 1
    assert [f.status_code for f in failed] == [502, 502]
    with psycopg.connect(database_url) as conn:
        assert conn.execute("select count(*) from run_log where status = 'SUCCESS'").fetchone() == (5,)
        assert conn.execute("select count(*) from alert where alert_type = 'FAILED'").fetchone() == (1,)
        assert conn.execute("select count(*) from job_lock").fetchone() == (0,)


def test_concurrent_requests_through_the_pooler(pooled_url: str, database_url: str) -> None:
    import concurrent.futures

    with RunningSimulator(SimulatorConfig(courses=1, users=89, latency_ms=20)) as sim:
        settings = make_settings(pooled_url, sim.base_url)
        with Worker(settings, pooled_url) as w, concurrent.futures.ThreadPoolExecutor(5) as pool:
            answers: list[Any] = list(pool.map(lambda _: w.sync(STEP1), range(5)))
    assert sorted(a.status_code for a in answers) == [200, 409, 409, 409, 409]
    with psycopg.connect(database_url) as conn:
        assert conn.execute("select count(*) from alert where alert_type = 'FAILED'").fetchone() == (1,)
