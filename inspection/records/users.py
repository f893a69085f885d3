"""Console users: roles, password hashes, sign-in with lockout, and an audit event for every change.

Roles and what they may do in the console (`PERMISSIONS`; admin may do everything):

| role | may |
| --- | --- |
| inspector | review defects (confirm / relabel / reject) |
| quality_engineer | review, override grades, approve or decline another person's hold -> prime override |
| ml_engineer | see the Models page |
| admin | all of the above (users are managed with `steel-inspect users`, on the machine) |

Passwords are stored as scrypt hashes (`inspection.passwords`). A sign-in with a wrong password
counts a failed attempt; `LoginPolicy.attempts` in a row lock the account for
`LoginPolicy.lockout_ns` (a success resets the count; so does `set_password`). While locked, the
password is not even checked. Every attempt is a ``login_events`` row; additions, role changes,
password changes, disabling and lockouts are audit events (never with the hash; with a digest of the
row, so `audit verify` finds a role or hash edited in the file: `user_audit`). Disabling a user or
changing their password ends every console session they have open (`sessions`).

The slow hash is computed outside any write transaction: the recorder shares the database and
must not wait for a sign-in.
"""

from __future__ import annotations

import datetime as dt
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlite_utils import Database

from inspection.errors import SteelInspectError
from inspection.passwords import DEFAULT_PARAMS, ScryptParams, burn_time, hash_password, verify_password
from inspection.records import audit
from inspection.records.db import write_transaction
from inspection.records.user_audit import row_sha256

ROLES: tuple[str, ...] = ("inspector", "quality_engineer", "ml_engineer", "admin")
PERMISSIONS: dict[str, frozenset[str]] = {
    "review": frozenset({"inspector", "quality_engineer", "admin"}),
    "override": frozenset({"quality_engineer", "admin"}),
    "approve": frozenset({"quality_engineer", "admin"}),
    "models": frozenset({"ml_engineer", "admin"}),
}
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{1,63}")
KEEP_LOGIN_EVENTS = 10_000
_COLUMNS = "name, role, created_ns, disabled_ns, failed_attempts, locked_until_ns"


class UserError(SteelInspectError):
    """A user cannot be added, changed or found (bad name, bad role, unknown or existing user)."""


@dataclass(frozen=True)
class User:
    """A console user as stored (without the password hash)."""

    name: str
    role: str
    created_ns: int
    disabled_ns: int | None
    failed_attempts: int
    locked_until_ns: int | None

    @property
    def disabled(self) -> bool:
        return self.disabled_ns is not None

    def locked(self, now_ns: int) -> bool:
        return self.locked_until_ns is not None and self.locked_until_ns > now_ns

    def may(self, permission: str) -> bool:
        """True when this user's role allows `permission` (a key of `PERMISSIONS`) and it is enabled."""
        return not self.disabled and self.role in PERMISSIONS[permission]


@dataclass(frozen=True)
class LoginPolicy:
    """How many wrong passwords in a row lock an account, and for how long."""

    attempts: int = 5
    lockout_ns: int = 15 * 60 * 10**9


@dataclass(frozen=True)
class LoginResult:
    """The outcome of one sign-in: ``ok`` | ``unknown_user`` | ``bad_password`` | ``locked_out`` (this
    attempt locked the account) | ``locked`` | ``disabled``, and the message to show."""

    outcome: str
    message: str
    user: User | None = None

    @property
    def ok(self) -> bool:
        return self.outcome == "ok"


def check_name(name: Any) -> str:
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise UserError(f"user name: expected 2-64 letters, digits, '.', '_' or '-' starting with a letter or "
                        f"digit, got {str(name)[:80]!r}")
    return name


def check_role(role: Any) -> str:
    if role not in ROLES:
        raise UserError(f"role: expected one of {', '.join(ROLES)}, got {str(role)[:40]!r}")
    return role


def count_enabled(db: Database) -> int:
    """Users who can sign in (0 also for a database from before users existed)."""
    if not db["users"].exists():
        return 0
    return db.execute("SELECT count(*) FROM users WHERE disabled_ns IS NULL").fetchone()[0]


def get_user(db: Database, name: str) -> User | None:
    """The user called `name` (case does not matter), or None."""
    if not isinstance(name, str) or not db["users"].exists():
        return None
    row = db.execute(f"SELECT {_COLUMNS} FROM users WHERE name = ?", (name,)).fetchone()
    return User(*row) if row else None


def list_users(db: Database) -> list[User]:
    if not db["users"].exists():
        return []
    return [User(*row) for row in db.execute(f"SELECT {_COLUMNS} FROM users ORDER BY name COLLATE NOCASE")]


def add_user(db: Database, name: str, role: str, password: str, *, actor: str,
             clock: Callable[[], int] = time.time_ns, params: ScryptParams = DEFAULT_PARAMS) -> User:
    """Add a user; `UserError` when the name is taken (whatever its case) or name / role are bad,
    `PasswordError` when the password is too short."""
    check_name(name)
    check_role(role)
    hashed = hash_password(password, params)  # before the transaction: it takes a while
    with write_transaction(db):
        existing = get_user(db, name)
        if existing is not None:
            raise UserError(f"user {existing.name!r} exists already (names are compared without regard to case)")
        now = clock()
        db.execute("INSERT INTO users (name, role, password_hash, created_ns, password_changed_ns) "
                   "VALUES (?,?,?,?,?)", (name, role, hashed, now, now))
        audit.append(db, "user_added", actor, {"name": name, "role": role, "row_sha256": row_sha256(db, name)},
                     now)
    return _existing(db, name)


def add_first_user(db: Database, name: str, role: str, password: str, *, actor: str,
                   clock: Callable[[], int] = time.time_ns, params: ScryptParams = DEFAULT_PARAMS) -> User | None:
    """Add a user only when the database has none at all (the demo's first start); None otherwise.
    Checked in the write transaction, so two starts cannot both add one."""
    check_name(name)
    check_role(role)
    hashed = hash_password(password, params)
    with write_transaction(db):
        if db.execute("SELECT 1 FROM users LIMIT 1").fetchone():
            return None
        now = clock()
        db.execute("INSERT INTO users (name, role, password_hash, created_ns, password_changed_ns) "
                   "VALUES (?,?,?,?,?)", (name, role, hashed, now, now))
        audit.append(db, "user_added", actor, {"name": name, "role": role, "row_sha256": row_sha256(db, name)},
                     now)
    return _existing(db, name)


def set_password(db: Database, name: str, password: str, *, actor: str,
                 clock: Callable[[], int] = time.time_ns, params: ScryptParams = DEFAULT_PARAMS) -> None:
    """A new password for `name`; it also lifts a lockout (an admin who resets it has checked)."""
    user = _existing(db, name)
    hashed = hash_password(password, params)
    with write_transaction(db):
        now = clock()
        db.execute("UPDATE users SET password_hash = ?, password_changed_ns = ?, failed_attempts = 0, "
                   "locked_until_ns = NULL WHERE name = ?", (hashed, now, user.name))
        ended = _end_sessions(db, user.name)  # whoever knew the old password may hold a session
        audit.append(db, "user_password", actor, {"name": user.name, "row_sha256": row_sha256(db, user.name),
                                                 "sessions_ended": ended}, now)


def set_role(db: Database, name: str, role: str, *, actor: str, clock: Callable[[], int] = time.time_ns) -> None:
    user = _existing(db, name)
    check_role(role)
    if role == user.role:
        raise UserError(f"user {user.name!r} has the role {role} already")
    with write_transaction(db):
        now = clock()
        db.execute("UPDATE users SET role = ? WHERE name = ?", (role, user.name))
        audit.append(db, "user_role", actor, {"name": user.name, "role": role, "was": user.role,
                                              "row_sha256": row_sha256(db, user.name)}, now)


def set_disabled(db: Database, name: str, disabled: bool, *, actor: str,
                 clock: Callable[[], int] = time.time_ns) -> None:
    """Disable (no sign-in, open sessions refused at their next action) or enable `name` again."""
    user = _existing(db, name)
    if user.disabled == disabled:
        raise UserError(f"user {user.name!r} is {'disabled' if disabled else 'enabled'} already")
    with write_transaction(db):
        now = clock()
        db.execute("UPDATE users SET disabled_ns = ? WHERE name = ?", (now if disabled else None, user.name))
        event = {"name": user.name, "row_sha256": row_sha256(db, user.name)}
        if disabled:
            event["sessions_ended"] = _end_sessions(db, user.name)
        audit.append(db, "user_disabled" if disabled else "user_enabled", actor, event, now)


def authenticate(db: Database, name: str, password: str, *, policy: LoginPolicy = LoginPolicy(),
                 clock: Callable[[], int] = time.time_ns, actor: str = "console") -> LoginResult:
    """Check a sign-in, count a failure, lock after `policy.attempts` failures in a row; every
    attempt is recorded in ``login_events``. Never raises for a bad name or password."""
    typed = _printable(name)
    user = get_user(db, name) if isinstance(name, str) and NAME_PATTERN.fullmatch(name) else None
    refused = "Sign-in refused: wrong name or password."
    if user is None:
        burn_time(password if isinstance(password, str) else "")
        return _record(db, typed, LoginResult("unknown_user", refused), clock())
    if user.locked(clock()):
        return _record(db, user.name, LoginResult("locked", _locked_message(user), user), clock())
    stored = db.execute("SELECT password_hash FROM users WHERE name = ?", (user.name,)).fetchone()[0]
    good = verify_password(password, stored)  # slow: outside the transaction
    with write_transaction(db):
        now = clock()
        current = _existing(db, user.name)
        if current.locked(now):  # another attempt locked it meanwhile
            return _record(db, user.name, LoginResult("locked", _locked_message(current), current), now)
        if good and current.disabled:
            return _record(db, user.name, LoginResult("disabled", "Sign-in refused: this account is disabled "
                                                      "(ask an admin).", current), now)
        if good:
            db.execute("UPDATE users SET failed_attempts = 0, locked_until_ns = NULL WHERE name = ?", (user.name,))
            return _record(db, user.name, LoginResult("ok", f"Signed in as {user.name}.", _existing(db, user.name)),
                           now)
        failures = current.failed_attempts + 1
        if failures < policy.attempts:
            db.execute("UPDATE users SET failed_attempts = ? WHERE name = ?", (failures, user.name))
            return _record(db, user.name, LoginResult("bad_password", refused, current), now)
        until = now + policy.lockout_ns
        db.execute("UPDATE users SET failed_attempts = 0, locked_until_ns = ? WHERE name = ?", (until, user.name))
        audit.append(db, "user_locked", actor, {"name": user.name, "failed_attempts": failures, "until_ns": until,
                                                "row_sha256": row_sha256(db, user.name)}, now)
        locked = _existing(db, user.name)
        return _record(db, user.name, LoginResult("locked_out", f"{refused} {_locked_message(locked, failures)}",
                                                  locked), now)


def login_events(db: Database, limit: int = 50) -> list[dict[str, Any]]:
    """The newest sign-in attempts, newest first: name as typed, outcome, time."""
    if not db["login_events"].exists():
        return []
    rows = db.execute("SELECT name, outcome, time_ns FROM login_events ORDER BY id DESC LIMIT ?", (limit,))
    return [{"name": n, "outcome": o, "time_ns": t, "time": iso_utc(t)} for n, o, t in rows]


def iso_utc(ns: int | None) -> str:
    if ns is None:
        return "-"
    return dt.datetime.fromtimestamp(ns / 1e9, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _locked_message(user: User, failures: int | None = None) -> str:
    after = f" after {failures} failed attempts" if failures else ""
    return (f"Account {user.name} is locked{after} until {iso_utc(user.locked_until_ns)} "
            "(an admin can lift it: steel-inspect users passwd).")


def _record(db: Database, name: str, result: LoginResult, now: int) -> LoginResult:
    with write_transaction(db):
        cursor = db.execute("INSERT INTO login_events (name, outcome, time_ns) VALUES (?,?,?)",
                            (name, result.outcome, now))
        # bounded: anyone who reaches the console can try names, this table must not grow without end
        db.execute("DELETE FROM login_events WHERE id <= ?", (cursor.lastrowid - KEEP_LOGIN_EVENTS,))
    return result


def _end_sessions(db: Database, name: str) -> int:
    # Imported here: a session belongs to a user, so `sessions` imports this module.
    from inspection.records import sessions

    return sessions.end_all(db, name)


def _existing(db: Database, name: str) -> User:
    user = get_user(db, name)
    if user is None:
        raise UserError(f"no user {str(name)[:80]!r}")
    return user


def _printable(name: Any) -> str:
    text = name if isinstance(name, str) else ""
    return "".join(c if c.isprintable() else "?" for c in text[:64]) or "?"
