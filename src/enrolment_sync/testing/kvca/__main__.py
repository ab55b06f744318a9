"""`python -m enrolment_sync.testing.kvca --courses 3 --users 200 --port 18081`: the simulator in its own process.

One option per `SimulatorConfig` field (the benchmarks start it this way, so it never shares their GIL).
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable
from typing import Any

from .app import DEFAULT_PORT, serve
from .data import SimulatorConfig


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, SimulatorConfig]:
    parser = argparse.ArgumentParser(
        prog="python -m enrolment_sync.testing.kvca", description="Run the KVCA upstream simulator."
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    defaults = SimulatorConfig()
    for f in dataclasses.fields(SimulatorConfig):
        value = getattr(defaults, f.name)
        kind: Callable[[str], Any] = type(value) if value is not None else int
        parser.add_argument(f"--{f.name.replace('_', '-')}", type=kind, default=value)
    ns = parser.parse_args(argv)
    cfg = SimulatorConfig(**{f.name: getattr(ns, f.name) for f in dataclasses.fields(SimulatorConfig)})
    return ns, cfg


def main(argv: list[str] | None = None) -> None:
    ns, cfg = parse_args(argv)
    serve(cfg, host=ns.host, port=ns.port)


if __name__ == "__main__":
    main()
