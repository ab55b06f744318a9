"""`migrate`: everything under its advisory lock, a checksum per applied migration, misnamed files refused."""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from enrolment_sync import db
from enrolment_sync.errors import ConfigError, EnrolmentSyncError
from enrolment_sync.testing.databases import drop_database, recreate_database
from tests.waiting import wait_for


@pytest.fixture
def empty_url(pg_server_url: str) -> Iterator[str]:
    name = f"es_migrate_{os.getpid()}"
    yield recreate_database(pg_server_url, name)
    drop_database(pg_server_url, name)


def test_schema_migration_is_created_under_the_lock(empty_url: str) -> None:
    errors: list[BaseException] = []
    with psycopg.connect(empty_url, autocommit=True) as holder:
        holder.execute("begin")
        holder.execute("select pg_advisory_xact_lock(%s)", (db.MIGRATION_LOCK_KEY,))

        def run() -> None:
            try:
                db.migrate(db.parse_target(empty_url))
            except BaseException as exc:  # reported below, on the test's thread
                errors.append(exc)

        migrator = threading.Thread(target=run)
        migrator.start()
        wait_for(
            lambda: holder.execute(
                "select 1 from pg_locks where locktype = 'advisory' and not granted and objid = %s",
                (db.MIGRATION_LOCK_KEY & 0xFFFFFFFF,),
            ).fetchone(),
            what="the migrator waiting on the advisory lock",
        )
        # the other migrator holds the lock: nothing of ours may exist yet, not even the bookkeeping table
        assert holder.execute("select to_regclass('schema_migration')").fetchone() == (None,)
        holder.execute("commit")
        migrator.join(timeout=60)
    assert not errors
    with psycopg.connect(empty_url) as conn:
        rows = conn.execute("select name, checksum from schema_migration order by name").fetchall()
    assert rows == [(name, db.migration_checksum(sql)) for name, sql in db.migration_files()]


def test_concurrent_migrators_both_succeed(empty_url: str) -> None:
    results: list[object] = []

    def run() -> None:
        try:
            results.append(db.migrate(db.parse_target(empty_url)))
        except BaseException as exc:
            results.append(exc)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert all(isinstance(r, list) for r in results), results
    assert sorted(n for r in results for n in r) == [name for name, _ in db.migration_files()]  # type: ignore[union-attr]


def test_an_edited_migration_is_refused_naming_the_file(database_url: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("update schema_migration set checksum = repeat('0', 64) where name = '0005_status_history'")
    with pytest.raises(ConfigError, match=r"0005_status_history\.sql was changed after it was applied"):
        db.migrate(db.parse_target(database_url))


def test_existing_databases_get_their_checksums_on_the_first_run(database_url: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("alter table schema_migration drop column checksum")  # as migrated before checksums
    assert db.migrate(db.parse_target(database_url)) == []
    with psycopg.connect(database_url) as conn:
        rows = dict(conn.execute("select name, checksum from schema_migration").fetchall())
    assert rows == {name: db.migration_checksum(sql) for name, sql in db.migration_files()}


def test_checksums_ignore_windows_line_endings() -> None:
    assert db.migration_checksum("create table a ();\r\nselect 1;\r\n") == db.migration_checksum(
        "create table a ();\nselect 1;\n"
    )


def _copy_of_migrations(tmp_path: Path) -> Path:
    folder = tmp_path / "migrations"
    shutil.copytree(Path(db.__file__).parent / "sql" / "migrations", folder)
    return folder


@pytest.mark.parametrize("bad", ["6_pages.sql", "0010-pages.sql", "0010_Pages.sql", "notes.txt", "0010_pages.SQL"])
def test_a_misnamed_file_is_refused_naming_it(empty_url: str, tmp_path: Path, bad: str) -> None:
    folder = _copy_of_migrations(tmp_path)
    (folder / bad).write_text("create table never_applied ();", "utf-8")
    with pytest.raises(ConfigError, match=f"'{bad}' is not a migration file name"):
        db.migrate(db.parse_target(empty_url), folder=folder)
    with psycopg.connect(empty_url) as conn:
        assert conn.execute("select to_regclass('schema_migration')").fetchone() == (None,)


def test_a_number_used_twice_is_refused(empty_url: str, tmp_path: Path) -> None:
    folder = _copy_of_migrations(tmp_path)
    (folder / "0001_again.sql").write_text("select 1;", "utf-8")
    with pytest.raises(EnrolmentSyncError, match="share the number 0001"):
        db.migrate(db.parse_target(empty_url), folder=folder)


def test_the_shipped_folder_is_well_named() -> None:
    names: list[str] = [name for name, _ in db.migration_files()]
    assert names == sorted(names) and len({n[:4] for n in names}) == len(names)
