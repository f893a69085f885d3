"""Open a line database: WAL mode, busy timeout, schema upgraded by the migrations in `schema`.

WAL lets the console read while the recorder writes. ``synchronous=NORMAL`` in WAL mode keeps
every committed transaction across a process crash (the case the recorder must survive); only
an OS crash or power loss can lose the last commits.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path

from sqlite_utils import Database

from inspection.errors import write_problem
from inspection.records.errors import StoreError
from inspection.records.schema import MIGRATION_NAMES, migrations

MIGRATIONS_TABLE = migrations.migrations_table  # sqlite-utils' record of applied migrations


def open_db(
    path: str | Path, *, readonly: bool = False, migrate: bool = True, stop_before: str | None = None
) -> Database:
    """Open (and create / upgrade unless `readonly`) the line database at `path`.

    Anything that is not a steel-inspect line database is refused with a `StoreError` naming the file: a folder,
    random bytes, a damaged file, another program's SQLite file (the writer would otherwise add the
    line's tables to it), and for a reader an empty file. A new or empty file is a new database for
    the writer. `stop_before` names a migration to stop before (tests use it to build an older schema).
    """
    path = Path(path)
    if path.is_dir():
        raise StoreError(f"{path}: is a folder, not a database file")
    if readonly:
        if not path.is_file():
            raise StoreError(f"{path}: no such database")
        if path.stat().st_size == 0:
            raise StoreError(f"{path}: not a steel-inspect line database: the file is empty")
        target, uri = f"{path.resolve().as_uri()}?mode=ro", True
    else:
        _check_writable(path)
        target, uri = str(path), False
    try:
        conn = sqlite3.connect(target, uri=uri, check_same_thread=False)
    except sqlite3.DatabaseError as exc:
        raise _refusal(path, exc) from exc
    db = Database(conn)
    try:
        with database_errors(path):
            # sqlite3 opens lazily: these are the first reads of the file, where random bytes show.
            if readonly:
                db.execute("PRAGMA busy_timeout = 5000")
            else:
                db.execute("PRAGMA busy_timeout = 10000")
                db.execute("PRAGMA journal_mode = WAL")
                db.execute("PRAGMA synchronous = NORMAL")
            _check_line_database(db, path, readonly=readonly)
            if migrate and not readonly:
                migrations.apply(db, stop_before=stop_before)
    except BaseException:
        db.close()
        raise
    return db


# SQLite's primary result codes that mean the file or its environment, not the query: a user's
# problem to report in one line. Anything else (SQLITE_ERROR: no such table, bad SQL...) is a bug.
_FILE_PROBLEMS = {sqlite3.SQLITE_NOTADB, sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_IOERR,
                  sqlite3.SQLITE_FULL, sqlite3.SQLITE_READONLY, sqlite3.SQLITE_PERM, sqlite3.SQLITE_BUSY,
                  sqlite3.SQLITE_LOCKED}


@contextlib.contextmanager
def database_errors(path: str | Path) -> Iterator[None]:
    """Turn SQLite's errors about the file at `path` (damaged, not a database, disk full, locked)
    into a `StoreError` naming it; errors of the query itself pass through."""
    try:
        yield
    except sqlite3.DatabaseError as exc:
        if (getattr(exc, "sqlite_errorcode", 0) & 0xFF) not in _FILE_PROBLEMS:
            raise
        raise _refusal(Path(path), exc) from exc


def _refusal(path: Path, exc: sqlite3.DatabaseError) -> StoreError:
    """One line for SQLite's refusal of `path`, by its error code."""
    code = getattr(exc, "sqlite_errorcode", 0) & 0xFF  # the primary code; extended codes add high bits
    if code == sqlite3.SQLITE_NOTADB:
        return StoreError(f"{path}: not a SQLite database ({exc})")
    if code == sqlite3.SQLITE_CORRUPT:
        return StoreError(f"{path}: the database is damaged ({exc})")
    if code == sqlite3.SQLITE_READONLY:
        return StoreError(f"{path}: cannot write the database ({exc})")
    return StoreError(f"{path}: cannot use the database ({exc})")


def _check_writable(path: Path) -> None:
    """The writer needs the folder (created here if missing) and, in WAL mode, room for its -wal and
    -shm files beside the database: say which folder is wrong instead of SQLite's bare 'unable to open'."""
    verb = "open" if path.exists() else "create"
    folder = path.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"{path}: cannot {verb} the database: {write_problem(path, exc)}") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise StoreError(f"{path}: cannot {verb} the database: folder {folder} is not writable")
    if path.exists() and not os.access(path, os.R_OK | os.W_OK):
        raise StoreError(f"{path}: cannot open the database: the file is not readable and writable")


def _check_line_database(db: Database, path: Path, *, readonly: bool) -> None:
    """Refuse a SQLite file of another program; for a reader also one without the line's schema."""
    tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()}
    if schema_version(db) > 0:
        return
    if tables - {MIGRATIONS_TABLE}:
        problem = "it holds other tables"
    elif readonly:
        problem = "it has no tables"
    else:
        return  # an empty database: the writer makes the schema
    db.close()
    raise StoreError(f"{path}: not a steel-inspect line database: {problem} ({', '.join(sorted(tables)[:5])})"
                     if tables else f"{path}: not a steel-inspect line database: {problem}")


def schema_version(db: Database) -> int:
    """How many of the known migrations are applied."""
    applied = {m.name for m in migrations.applied(db)}
    return sum(1 for name in MIGRATION_NAMES if name in applied)


@contextlib.contextmanager
def write_transaction(db: Database) -> Iterator[Database]:
    """BEGIN IMMEDIATE ... COMMIT: take the write lock up front.

    The audit chain reads its head and appends in one transaction; a deferred transaction could
    read a stale head while another writer (recorder vs console) commits, so writers lock first.
    """
    if db.conn.in_transaction:
        with db.atomic():
            yield db
        return
    db.conn.execute("BEGIN IMMEDIATE")
    try:
        yield db
    except BaseException:
        if db.conn.in_transaction:
            db.conn.execute("ROLLBACK")
        raise
    else:
        db.conn.execute("COMMIT")


def checkpoint(db: Database) -> None:
    """Move the write-ahead log into the database file and empty it (e.g. before measuring its size)."""
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
