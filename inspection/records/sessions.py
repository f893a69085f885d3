"""Console sessions that outlive a page reload: the browser holds a random token, the database its sha256.

A reload or a new tab starts a new Streamlit session, which knows nothing of the sign-in before it.
So a sign-in creates a row here (`start`) and hands the browser a random 256-bit token; a new
Streamlit session presents the token and gets the user back (`resume`) while the row is valid:

- the row exists: "Sign out" deletes it (`end`), and so do `users.set_disabled` and
  `users.set_password`, in their own transaction (`end_all`), so a disabled user or a password
  that leaked stops every open session at once, in every browser;
- the user exists and is enabled (checked again here, whatever deleted the rows);
- it saw activity within the console's idle limit (`last_seen_ns`, moved on by `touch`).

Only the sha256 of the token is stored: a copy of the database (a backup, a support case) signs
nobody in. A fast unsalted hash suffices for 256 random bits; passwords, guessable, need scrypt.
The rows are not evidence (they are deleted); sign-in attempts are `login_events`, user changes
audit events.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlite_utils import Database

from inspection.records.db import write_transaction
from inspection.records.users import User, get_user

TABLE = "console_sessions"
TOKEN_BYTES = 32


@dataclass(frozen=True)
class Resumed:
    """What `resume` found for a token: ``ok`` (with the user), ``unknown`` (no such session: never
    was, signed out, revoked), ``expired`` (idle too long) or ``disabled``."""

    outcome: str
    user: User | None = None
    digest: str | None = None
    last_seen_ns: int | None = None


def digest(token: str) -> str:
    """The stored form of a session token."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def available(db: Database) -> bool:
    """False for a database from before sessions were kept (its console keeps one session per tab)."""
    return db[TABLE].exists()


def start(db: Database, name: str, *, idle_ns: int, clock: Callable[[], int] = time.time_ns) -> str:
    """A new session for `name` (who just signed in); returns the token for the browser, which is
    not kept anywhere here. Sessions of anyone idle longer than `idle_ns` are deleted meanwhile, so
    the table holds only live sessions."""
    token = secrets.token_urlsafe(TOKEN_BYTES)
    with write_transaction(db):
        now = clock()
        db.execute(f"DELETE FROM {TABLE} WHERE last_seen_ns < ?", (now - idle_ns,))
        db.execute(f"INSERT INTO {TABLE} (token_sha256, name, created_ns, last_seen_ns) VALUES (?,?,?,?)",
                   (digest(token), name, now, now))
    return token


def resume(db: Database, token: str, *, idle_ns: int, clock: Callable[[], int] = time.time_ns) -> Resumed:
    """The user of the session `token` names, if it is still valid (see the module docstring); a
    valid one counts as activity, an expired or orphaned one is deleted."""
    if not isinstance(token, str) or not token or len(token) > 200 or not available(db):
        return Resumed("unknown")
    key = digest(token)
    row = db.execute(f"SELECT name, last_seen_ns FROM {TABLE} WHERE token_sha256 = ?", (key,)).fetchone()
    if row is None:
        return Resumed("unknown")
    name, last_seen = row
    now = clock()
    user = get_user(db, name)
    if user is None or user.disabled or now - last_seen > idle_ns:
        end(db, key)
        outcome = "expired" if user is not None and not user.disabled else "disabled"
        return Resumed(outcome, user, key, last_seen)
    touch(db, key, now)
    return Resumed("ok", user, key, now)


def is_open(db: Database, key: str) -> bool:
    """True while the session with stored digest `key` has not been ended (read-only)."""
    if not available(db):
        return True  # nothing to revoke from: the tab's own session is all there is
    return db.execute(f"SELECT 1 FROM {TABLE} WHERE token_sha256 = ?", (key,)).fetchone() is not None


def touch(db: Database, key: str, now_ns: int) -> None:
    """Record activity of the session `key` (the idle limit counts from here)."""
    with write_transaction(db):
        db.execute(f"UPDATE {TABLE} SET last_seen_ns = max(last_seen_ns, ?) WHERE token_sha256 = ?", (now_ns, key))


def end(db: Database, key: str) -> None:
    """End one session (sign-out): its token is worthless from now on, in every tab that holds it."""
    with write_transaction(db):
        db.execute(f"DELETE FROM {TABLE} WHERE token_sha256 = ?", (key,))


def end_all(db: Database, name: str) -> int:
    """End every session of `name` (call inside the transaction that disables the user or changes the
    password); returns how many were open."""
    if not available(db):
        return 0
    return db.execute(f"DELETE FROM {TABLE} WHERE name = ?", (name,)).rowcount


def open_sessions(db: Database, name: str) -> int:
    """How many sessions `name` has open (for `steel-inspect users list` and tests)."""
    if not available(db):
        return 0
    return db.execute(f"SELECT count(*) FROM {TABLE} WHERE name = ?", (name,)).fetchone()[0]

