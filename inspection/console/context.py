"""Where the console's data lives and when cached reads must be thrown away (who is signed in: `auth`).

The database is `$STEEL_INSPECT_DB` when set, else the line config's `line.database`
(`$STEEL_INSPECT_CONFIG` names the config; default: the demo line). Crops live in the config's
`line.crops_dir`, or `$STEEL_INSPECT_CROPS`.

Cached reads are keyed on `change_token`: the audit log's head sequence number (every mutating
event -- defects recorded, reviews, grades, overrides, imports -- appends to it) plus the size
of the review queue, which is derived and not audited. A review bumps the token, so nothing
stale shows after it; widget interactions that change nothing re-use the cache.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import streamlit as st
from sqlite_utils import Database

from inspection.config import LineConfig, load_config
from inspection.errors import SteelInspectError
from inspection.records import queries
from inspection.records.audit_keys import KEY_FILE_NAME, AuditKey, key_if_present
from inspection.records.db import open_db


class ConsoleError(SteelInspectError):
    """The console cannot do what was asked: no database, nobody signed in, a role that may not."""


@dataclass(frozen=True)
class Sources:
    """The files the console reads: the line database and the crop store."""

    database: Path
    crops_dir: Path
    line: LineConfig | None


@st.cache_resource(show_spinner=False)
def _config(path: str | None) -> LineConfig:
    return load_config(path)


def sources() -> Sources:
    """Resolve the database and crop folder from the environment and the line config."""
    config: LineConfig | None
    try:
        config = _config(os.environ.get("STEEL_INSPECT_CONFIG") or None)
    except SteelInspectError:
        config = None
    db_env = os.environ.get("STEEL_INSPECT_DB")
    crops_env = os.environ.get("STEEL_INSPECT_CROPS")
    if db_env:
        database = Path(db_env).expanduser()
    elif config is not None:
        database = config.database
    else:
        raise ConsoleError("no line database: set STEEL_INSPECT_DB or STEEL_INSPECT_CONFIG")
    if crops_env:
        crops = Path(crops_env).expanduser()
    elif db_env and (database.parent / "crops").is_dir():
        crops = database.parent / "crops"  # a database copied with its crops beside it
    elif config is not None:
        crops = config.crops_dir
    else:
        crops = database.parent / "crops"
    return Sources(database=database.resolve(), crops_dir=crops.resolve(), line=config)


def audit_key() -> AuditKey | None:
    """The line's audit key, when its file exists, for the console's writes to sign their audit
    events: the config's (``$STEEL_INSPECT_CONFIG``), or ``keys/audit.hmac_key`` beside a database
    given by ``$STEEL_INSPECT_DB`` alone (where `audit verify --db` looks too)."""
    src = sources()
    if os.environ.get("STEEL_INSPECT_DB") and not os.environ.get("STEEL_INSPECT_CONFIG") or src.line is None:
        return key_if_present(src.database.parent / "keys" / KEY_FILE_NAME)
    return key_if_present(src.line.audit_key_path)


@contextmanager
def read_db(path: str | Path) -> Iterator[Database]:
    """A read-only connection, closed afterwards; the console never writes through it."""
    db = open_db(Path(path), readonly=True)
    try:
        yield db
    finally:
        db.close()


def change_token(path: str | Path) -> tuple[int, ...]:
    """Changes whenever anything the console shows can have changed (see module docstring).

    The file's inode is part of it, so a database replaced under a running console is re-read.
    """
    with read_db(path) as db:
        marks = queries.change_marks(db)
    return Path(path).stat().st_ino, *marks


def page_database() -> tuple[str, tuple[int, ...]]:
    """(database path, change token) for a page, or stop the page with a clear message."""
    try:
        database = sources().database
    except ConsoleError as exc:
        st.error(str(exc))
        st.stop()
    if not database.is_file():
        st.warning(f"No line database at `{database}` yet. Run the line (`steel-inspect demo`) "
                   "or point the console at one: `STEEL_INSPECT_DB=path streamlit run app.py`.")
        st.stop()
    try:
        return str(database), change_token(database)
    except (SteelInspectError, sqlite3.DatabaseError) as exc:  # a corrupt or foreign file: say so
        st.error(f"Cannot read `{database}`: {exc}")
        st.stop()
