"""The same job done the way a data engineer would reach for first: a dlt pipeline over the KVCA API.

courses -> enrolments (transformer, every status row) -> details (transformer, `parallelized=True`: one
detail request per row, run on dlt's extract thread pool), each merged into Postgres by its primary key.
dlt is a benchmark-only extra (`pip install -e '.[bench]'`), never a runtime dependency.

Concurrency: dlt's extract pool (`EXTRACT__WORKERS`) and its limit on pending items
(`EXTRACT__MAX_PARALLEL_ITEMS`) are both set to the benchmark's concurrency; the simulator rejects
anything beyond it with 429 (which dlt's client retries after `Retry-After`).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from .common import cpu_s, peak_rss_mb

DATASET = "dlt_bench"
PIPELINE_NAME = "kvca_enrolments"


def _configure_env(state_dir: Path, concurrency: int) -> None:
    """dlt reads its configuration from the environment: keep its state in our temp dir, no telemetry."""
    os.environ["DLT_DATA_DIR"] = str(state_dir / "data")
    os.environ["DLT_PROJECT_DIR"] = str(state_dir / "project")
    os.environ["RUNTIME__DLTHUB_TELEMETRY"] = "false"
    os.environ["RUNTIME__LOG_LEVEL"] = "WARNING"
    os.environ["EXTRACT__WORKERS"] = str(concurrency)
    os.environ["EXTRACT__MAX_PARALLEL_ITEMS"] = str(concurrency)
    os.environ["EXTRACT__NEXT_ITEM_MODE"] = "fifo"


def _with_password(url: str) -> str:
    """dlt insists on a password; a server that trusts loopback ignores the placeholder we give it."""
    parts = urlsplit(url)
    if parts.password is not None or "password=" in parts.query:
        return url
    user = parts.username or "postgres"
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{user}:unused@{host}"))


def kvca_source(base_url: str, client_id: str, client_secret: str, category_id: int, per_page: int = 100) -> Any:
    import dlt
    from dlt.sources.helpers import requests
    from dlt.sources.helpers.rest_client import RESTClient
    from dlt.sources.helpers.rest_client.auth import BearerTokenAuth
    from dlt.sources.helpers.rest_client.paginators import PageNumberPaginator

    @dlt.source(name="kvca", max_table_nesting=0)
    def source() -> Any:
        answer = requests.post(
            f"{base_url}/api/v1/auth/token", json={"client_id": client_id, "client_secret": client_secret}
        )
        token = answer.json()["access_token"]
        client = RESTClient(
            base_url=f"{base_url}/api/v1",
            auth=BearerTokenAuth(token),
            paginator=PageNumberPaginator(base_page=1, page_param="page", total_path="total_pages"),
            data_selector="items",
        )

        @dlt.resource(name="courses", primary_key="id", write_disposition="merge")
        def courses() -> Any:
            yield from client.paginate(f"/categories/{category_id}/courses", params={"per_page": per_page})

        @dlt.transformer(
            name="enrolments", data_from=courses, primary_key=("course_id", "user_id"), write_disposition="merge"
        )
        def enrolments(course_page: list[dict[str, Any]]) -> Any:
            for course in course_page:
                for page in client.paginate(f"/courses/{course['id']}/enrolments", params={"per_page": per_page}):
                    yield from page  # one row at a time, so the details transformer sees single rows

        @dlt.transformer(
            name="details",
            data_from=enrolments,
            primary_key=("course_id", "user_id"),
            write_disposition="merge",
            parallelized=True,
        )
        def details(row: dict[str, Any]) -> Any:
            response = client.get(f"/courses/{row['course_id']}/enrolments/{row['user_id']}")
            if response.status_code == 404:
                return None  # the learner left between the two calls
            response.raise_for_status()
            return response.json()

        return courses, enrolments, details

    return source()


def run_dlt(params: dict[str, Any]) -> dict[str, Any]:
    """params: database_url (a URL), base_url, concurrency, category_id, state_dir."""
    _configure_env(Path(params["state_dir"]), params["concurrency"])
    import dlt

    pipeline = dlt.pipeline(
        pipeline_name=PIPELINE_NAME,
        pipelines_dir=str(Path(params["state_dir"]) / "pipelines"),
        destination=dlt.destinations.postgres(credentials=_with_password(params["database_url"])),
        dataset_name=DATASET,
        progress="log" if params.get("verbose") else None,
    )
    source = kvca_source(params["base_url"], "demo-client", "demo-secret", params["category_id"])
    cpu_before = cpu_s()
    start = time.perf_counter()
    info = pipeline.run(source)
    wall = time.perf_counter() - start
    cpu_used = cpu_s() - cpu_before
    info.raise_on_failed_jobs()
    steps: dict[str, float] = {}
    trace = pipeline.last_trace
    if trace is not None:
        for step in trace.steps:
            if step.started_at and step.finished_at:
                steps[f"{step.step}_s"] = (step.finished_at - step.started_at).total_seconds()
    counts = pipeline.last_trace.last_normalize_info.row_counts if pipeline.last_trace else {}
    return {
        "wall_s": wall,
        "cpu_s": cpu_used,
        "peak_rss_mb": peak_rss_mb(),
        "steps": steps,
        "row_counts": {k: v for k, v in counts.items() if not k.startswith("_dlt")},
        "settings": {
            "extract.workers": params["concurrency"],
            "extract.max_parallel_items": params["concurrency"],
            "load.workers": "default (20)",
            "normalize.workers": "default (1)",
            "loader_file_format": "default (insert_values)",
        },
    }
