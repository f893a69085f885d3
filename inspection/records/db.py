"""Open a line database: WAL mode, busy timeout, schema upgraded by the migrations in `schema`.

WAL lets the console read while the recorder writes. ``synchronous=NORMAL`` in WAL mode keeps
every committed transaction across a process crash (the case the recorder must survive); only
an OS crash or power loss can lose the last commits.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path

from sqlite_utils import Database

from inspection.records.errors import StoreError
from inspection.records.schema import MIGRATION_NAMES, migrations


def open_db(
    path: str | Path, *, readonly: bool = False, migrate: bool = True, stop_before: str | None = None
) -> Database:
    """Open (and create / upgrade unless `readonly`) the line database at `path`.

    `stop_before` names a migration to stop before (tests use it to build an older schema).
    """
    path = Path(path)
    if readonly:
        if not path.exists():
            raise StoreError(f"{path}: no such database")
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
        db = Database(conn)
        db.execute("PRAGMA busy_timeout = 5000")
        return db
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        conn = sqlite3.connect(str(path), check_same_thread=False)
        db = Database(conn)
        db.execute("PRAGMA busy_timeout = 10000")
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("PRAGMA synchronous = NORMAL")
    except sqlite3.DatabaseError as exc:
        raise StoreError(f"{path}: not a usable SQLite database: {exc}") from None
    if migrate:
        migrations.apply(db, stop_before=stop_before)
    return db


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
