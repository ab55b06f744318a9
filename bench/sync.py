"""`python -m bench sync [seed|large|naive ...] [--dlt]`: the sync against its physical bound (and dlt).

For each preset: the simulator (C courses x U learners, latency L, at most `concurrency` requests in flight,
beyond which it answers 429) runs in its own process; a fresh database is created and migrated; then three
phases run, each in a fresh child process so that its peak RSS and CPU are its own:

  full        first sync into the empty database
  unchanged   the same sync again, nothing changed upstream: must write 0 rows
  changed     after 1% of the enrolments got another status (never COMPLETED): writes exactly those rows

Requests are counted by the simulator; the bound is ceil(requests / concurrency) x L; rows written are
counted from Postgres (row versions with a newer xmin, and pg_stat_user_tables for every table).
With `--dlt` the same phases run through a dlt pipeline against a fresh simulator with the same data.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from .common import (
    BENCH_DBNAME,
    SimulatorProcess,
    SimulatorSpec,
    as_url,
    bound_s,
    code_version,
    counter_delta,
    current_xid,
    database_active_s,
    drop_schemas,
    postgres_server,
    print_json_line,
    print_table,
    rows_written_since,
    run_in_child,
    settled_tuple_counters,
    tuple_counters,
    work_dir,
)

PHASES = ("full", "unchanged", "changed")
CHANGE_FRACTION = 0.01
CHANGE_SEED = 2026
OUR_SCHEMAS = ("public",)
OUR_RECORD_TABLES = (("public", "source_record"),)
OUR_HISTORY_TABLES = (("public", "status_history"),)  # one row per new / changed / missing / back status record


@dataclass(frozen=True)
class Preset:
    name: str
    courses: int
    users: int
    latency_ms: float
    concurrency: int
    phases: tuple[str, ...] = PHASES

    @property
    def enrolments(self) -> int:
        return self.courses * self.users


PRESETS = {
    "seed": Preset("seed", courses=1, users=89, latency_ms=5.0, concurrency=8),
    "large": Preset("large", courses=40, users=500, latency_ms=10.0, concurrency=32),
    # the large job one request at a time, for contrast (about 200 s, so the full sync only by default)
    "naive": Preset("naive", courses=40, users=500, latency_ms=10.0, concurrency=1, phases=("full",)),
}

TARGET_BOUND_RATIO = 1.25
TARGET_RSS_MB = 250.0
TARGET_UNCHANGED_DB_S = 0.5


def _timeout_s(preset: Preset) -> float:
    """Generous but finite: a phase that takes 3x its bound plus two minutes has hung."""
    requests = preset.enrolments + preset.courses * 6 + 10
    return 3 * bound_s(requests, preset.concurrency, preset.latency_ms) + 120


def _phase_record(
    engine: str,
    preset: Preset,
    phase: str,
    sim: SimulatorProcess,
    result: dict[str, Any],
    *,
    rows_written: int,
    tuples: dict[str, int],
    expected_rows: int | None,
) -> dict[str, Any]:
    stats = sim.stats()
    requests = int(stats["requests_total"])
    bound = bound_s(requests, preset.concurrency, preset.latency_ms)
    return {
        "engine": engine,
        "preset": preset.name,
        "phase": phase,
        "courses": preset.courses,
        "users": preset.users,
        "latency_ms": preset.latency_ms,
        "concurrency": preset.concurrency,
        "requests": requests,
        "requests_by_kind": stats["requests_by_kind"],
        "peak_in_flight": stats["max_in_flight"],
        "rate_limited_429": stats["rate_limited"],
        "bound_s": bound,
        "wall_over_bound": result["wall_s"] / bound if bound else None,
        "rows_written": rows_written,
        "expected_rows_written": expected_rows,
        "tuples_written_all_tables": tuples["ins"] + tuples["upd"],
        "tuples_deleted_all_tables": tuples["del"],
        **result,
    }


def _measure(
    engine: str,
    preset: Preset,
    phase: str,
    sim: SimulatorProcess,
    url: str,
    schemas: tuple[str, ...],
    record_tables: tuple[tuple[str, str], ...],
    target: Any,
    params: dict[str, Any],
    expected_rows: int | None,
) -> dict[str, Any]:
    sim.reset_stats()
    sim_cpu_before = sim.cpu_s()
    xid = current_xid(url)
    before = tuple_counters(url, schemas)
    active_before = database_active_s(url)
    result = run_in_child(target, params, timeout_s=_timeout_s(preset))
    tuples = counter_delta(before, settled_tuple_counters(url, schemas))
    result["db_server_active_s"] = database_active_s(url) - active_before
    written = rows_written_since(url, record_tables, xid)
    result["history_rows_written"] = rows_written_since(url, OUR_HISTORY_TABLES, xid) if engine == "ours" else None
    result["simulator_cpu_s"] = sim.cpu_s() - sim_cpu_before
    record = _phase_record(
        engine, preset, phase, sim, result, rows_written=written, tuples=tuples, expected_rows=expected_rows
    )
    print(
        f"  {engine:<4} {phase:<9} wall {record['wall_s']:.2f} s, bound {record['bound_s']:.2f} s, "
        f"{record['requests']} requests, {written} rows written",
        file=sys.stderr,
    )
    return record


def _expected(preset: Preset, phase: str, changed: int) -> int:
    return {"full": 2 * preset.enrolments, "unchanged": 0, "changed": changed}[phase]


def _expected_history(preset: Preset, phase: str, changed: int) -> int:
    """One history row per status record written: each enrolment when new, each status change after."""
    return {"full": preset.enrolments, "unchanged": 0, "changed": changed}[phase]


def _spec(preset: Preset) -> SimulatorSpec:
    return SimulatorSpec(
        courses=preset.courses, users=preset.users, latency_ms=preset.latency_ms, max_in_flight=preset.concurrency
    )


def run_ours(
    preset: Preset, server_url: str, scratch: Path, profile_dir: Path | None, loop: str, floor: bool
) -> list[dict[str, Any]]:
    from enrolment_sync import db
    from enrolment_sync.testing.databases import recreate_database

    from .engine_child import replay_reads, run_floor, run_sync

    url = recreate_database(server_url, BENCH_DBNAME)
    db.migrate(db.parse_target(url))
    records = []
    with SimulatorProcess(_spec(preset), log_dir=scratch) as sim:
        if floor:
            params = {"base_url": sim.base_url, "concurrency": preset.concurrency, "category_id": 303}
            records.append(
                _measure("raw", preset, "floor", sim, url, OUR_SCHEMAS, OUR_RECORD_TABLES, run_floor, params, 0)
            )
        changed = 0
        for phase in preset.phases:
            if phase == "changed":
                changed = sim.change_statuses(CHANGE_FRACTION, seed=CHANGE_SEED)
            params = {
                "database_url": url,
                "base_url": sim.base_url,
                "concurrency": preset.concurrency,
                "category_id": 303,
                "max_users_per_course": max(500, preset.users),
                "loop": loop,
                "profile": str(profile_dir / f"ours-{preset.name}-{phase}.txt") if profile_dir else None,
            }
            records.append(
                _measure(
                    "ours",
                    preset,
                    phase,
                    sim,
                    url,
                    OUR_SCHEMAS,
                    OUR_RECORD_TABLES,
                    run_sync,
                    params,
                    _expected(preset, phase, changed),
                )
            )
            records[-1]["expected_history_rows"] = _expected_history(preset, phase, changed)
            if phase == "unchanged":
                records[-1].update(run_in_child(replay_reads, params, timeout_s=120))
    return records


def run_dlt(preset: Preset, server_url: str, scratch: Path) -> list[dict[str, Any]]:
    from enrolment_sync.testing.databases import with_dbname

    from .dlt_pipeline import DATASET, run_dlt

    url = as_url(with_dbname(server_url, BENCH_DBNAME))
    schemas = (DATASET, f"{DATASET}_staging")
    drop_schemas(url, schemas)
    state_dir = scratch / f"dlt-{preset.name}"
    records = []
    with SimulatorProcess(_spec(preset), log_dir=scratch) as sim:
        changed = 0
        for phase in preset.phases:
            if phase == "changed":
                changed = sim.change_statuses(CHANGE_FRACTION, seed=CHANGE_SEED)
            params = {
                "database_url": url,
                "base_url": sim.base_url,
                "concurrency": preset.concurrency,
                "category_id": 303,
                "state_dir": str(state_dir),
            }
            records.append(
                _measure(
                    "dlt",
                    preset,
                    phase,
                    sim,
                    url,
                    schemas,
                    ((DATASET, "enrolments"), (DATASET, "details")),
                    run_dlt,
                    params,
                    _expected(preset, phase, changed),
                )
            )
    return records


def _print_preset(preset: Preset, ours: list[dict[str, Any]], dlt: list[dict[str, Any]]) -> None:
    headers = [
        "engine/phase",
        "requests",
        "wall s",
        "bound s",
        "wall/bound",
        "rows written",
        "expected",
        "history rows",
        "tuples (all)",
        "db s",
        "cpu s",
        "sim cpu s",
        "peak RSS MB",
        "429s",
    ]
    rows = [
        [
            f"{r['engine']} {r['phase']}",
            r["requests"],
            r["wall_s"],
            r["bound_s"],
            r["wall_over_bound"],
            r["rows_written"],
            r["expected_rows_written"],
            r.get("history_rows_written"),
            r["tuples_written_all_tables"],
            r.get("db_s"),
            r["cpu_s"],
            r["simulator_cpu_s"],
            r["peak_rss_mb"],
            r["rate_limited_429"],
        ]
        for r in [*ours, *dlt]
    ]
    p = preset
    print_table(
        f"preset {p.name}: {p.courses} courses x {p.users} learners = {p.enrolments} enrolments "
        f"({2 * p.enrolments} records), latency {p.latency_ms:g} ms, concurrency {p.concurrency}",
        headers,
        rows,
    )
    if any("db_query_s" in r for r in ours):
        detail = [
            [
                r["phase"],
                r["db_s"],
                r["db_query_s"],
                r["db_open_s"],
                r["db_commit_s"],
                r["db_transaction_s"],
                r["db_queries"],
                r["db_server_active_s"],
                r.get("replay_db_s"),
                r["new_records"],
                r["changed_records"],
            ]
            for r in ours
            if "db_query_s" in r
        ]
        print_table(
            "  our database work: in-run times are summed over concurrent courses and include event-loop waits;"
            " server = pg_stat_database.active_time; isolated = the re-sync's reads replayed alone",
            [
                "phase",
                "db s",
                "queries s",
                "open s",
                "commit s",
                "txn s",
                "queries",
                "server s",
                "isolated s",
                "new",
                "changed",
            ],
            detail,
        )
    if ours and dlt:
        by_phase = {r["phase"]: r for r in dlt}
        side = [
            [
                r["phase"],
                r["wall_s"],
                by_phase[r["phase"]]["wall_s"],
                r["wall_s"] / by_phase[r["phase"]]["wall_s"],
                r["rows_written"],
                by_phase[r["phase"]]["rows_written"],
                r["peak_rss_mb"],
                by_phase[r["phase"]]["peak_rss_mb"],
            ]
            for r in ours
            if r["phase"] in by_phase
        ]
        print_table(
            "  ours vs dlt",
            ["phase", "ours s", "dlt s", "ours/dlt", "ours rows", "dlt rows", "ours RSS", "dlt RSS"],
            side,
        )
        steps = [[r["phase"], *(r["steps"].get(k) for k in ("extract_s", "normalize_s", "load_s"))] for r in dlt]
        print_table("  dlt steps", ["phase", "extract s", "normalize s", "load s"], steps)


def _targets(preset: Preset, ours: list[dict[str, Any]], dlt: list[dict[str, Any]]) -> dict[str, Any]:
    by_phase = {r["phase"]: r for r in ours}
    out: dict[str, Any] = {}
    full = by_phase.get("full")
    if full is not None:
        out["wall_within_1.25x_bound"] = full["wall_over_bound"] <= TARGET_BOUND_RATIO
        out["peak_rss_under_250mb"] = full["peak_rss_mb"] < TARGET_RSS_MB
        dlt_full = next((r for r in dlt if r["phase"] == "full"), None)
        if dlt_full is not None:
            out["faster_than_dlt"] = full["wall_s"] < dlt_full["wall_s"]
    unchanged = by_phase.get("unchanged")
    if unchanged is not None:
        out["unchanged_writes_0_rows"] = unchanged["rows_written"] == 0
        out["unchanged_writes_0_history_rows"] = unchanged["history_rows_written"] == 0
        out["unchanged_db_under_0.5s_in_run"] = unchanged["db_s"] < TARGET_UNCHANGED_DB_S
        if "replay_db_s" in unchanged:
            out["unchanged_db_under_0.5s_isolated"] = unchanged["replay_db_s"] < TARGET_UNCHANGED_DB_S
    changed = by_phase.get("changed")
    if changed is not None:
        out["changed_writes_exactly_the_changes"] = changed["rows_written"] == changed["expected_rows_written"]
    measured = [r for r in ours if r["engine"] == "ours"]
    if measured:
        out["history_rows_as_expected"] = all(r["history_rows_written"] == r["expected_history_rows"] for r in measured)
    return out


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench sync",
        description="The sync against its physical bound ceil(requests / concurrency) x latency, and against dlt.",
    )
    parser.add_argument("presets", nargs="*", default=["seed"], choices=sorted(PRESETS), help="default: seed")
    parser.add_argument("--dlt", action="store_true", help="also run the same phases through a dlt pipeline")
    parser.add_argument("--dlt-only", action="store_true", help="only the dlt pipeline")
    parser.add_argument("--phases", help=f"comma-separated subset of {','.join(PHASES)} (default: the preset's)")
    parser.add_argument("--courses", type=int, help="override the preset's courses")
    parser.add_argument("--users", type=int, help="override the preset's learners per course")
    parser.add_argument("--latency-ms", type=float, help="override the preset's latency")
    parser.add_argument("--concurrency", type=int, help="override the preset's KVCA_MAX_CONCURRENCY")
    parser.add_argument(
        "--loop",
        choices=("auto", "uvloop", "asyncio"),
        default="auto",
        help="our sync's event loop; auto = what the worker uses (runtime.run_coroutine: uvloop where installed)",
    )
    parser.add_argument(
        "--floor",
        action="store_true",
        help="first time the same requests made by a bare aiohttp client (no parsing, no database)",
    )
    parser.add_argument("--profile-dir", type=Path, help="write a pyinstrument profile of each of our phases here")
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory (simulator logs, dlt state)")
    return parser


def _preset(name: str, args: argparse.Namespace) -> Preset:
    p = PRESETS[name]
    overrides = {
        k: v
        for k, v in {
            "courses": args.courses,
            "users": args.users,
            "latency_ms": args.latency_ms,
            "concurrency": args.concurrency,
        }.items()
        if v is not None
    }
    if args.phases:
        phases = tuple(x.strip() for x in args.phases.split(",") if x.strip())
        unknown = set(phases) - set(PHASES)
        if unknown:
            raise SystemExit(f"unknown phases {sorted(unknown)}; choose from {', '.join(PHASES)}")
        overrides["phases"] = phases
    return replace(p, **overrides)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    presets = [_preset(name, args) for name in args.presets]
    if args.profile_dir:
        args.profile_dir.mkdir(parents=True, exist_ok=True)
    results: list[dict[str, Any]] = []
    started = time.time()
    with work_dir(keep=args.keep) as scratch, postgres_server(scratch) as (server_url, pg_source):
        print(f"bench sync: Postgres from {pg_source}, scratch {scratch}", file=sys.stderr)
        for preset in presets:
            print(f"preset {preset.name} ...", file=sys.stderr)
            ours = (
                [] if args.dlt_only else run_ours(preset, server_url, scratch, args.profile_dir, args.loop, args.floor)
            )
            dlt = run_dlt(preset, server_url, scratch) if (args.dlt or args.dlt_only) else []
            _print_preset(preset, ours, dlt)
            targets = _targets(preset, ours, dlt)
            if targets:
                print("  targets: " + ", ".join(f"{k}={'met' if v else 'NOT met'}" for k, v in targets.items()))
            results.append(
                {"preset": preset.name, "config": preset.__dict__, "ours": ours, "dlt": dlt, "targets": targets}
            )
    print_json_line(
        {"bench": "sync", "code": code_version(), "started_at": started, "postgres": pg_source, "presets": results}
    )
    return 0
