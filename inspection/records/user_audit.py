"""The console users against the audit chain: a role or password hash edited behind the system's back.

Users change in place (a wrong password counts a failed attempt), so their rows cannot be append-only
evidence, and a digest of the whole table would go stale at every sign-in. Instead every audited change
of a user (`USER_KINDS`) carries ``row_sha256``: the digest of that user's row right after the change,
over the columns that decide who may do what (`DIGESTED`). The sign-in counters (``failed_attempts``,
``locked_until_ns``) are left out: a sign-in changes them without an event. The digest covers the
scrypt hash with its random salt, so it tells nothing about the password.

`check_users` compares every row with the newest digest recorded for its name: a row edited, added or
deleted with sqlite3 is named. Events written before digests existed carry none: for such a user only
the role is checked (replayed from ``user_added`` / ``user_role``) until its next change records one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlite_utils import Database

from inspection.records.audit import sha256_rows

DIGESTED = ("name", "role", "password_hash", "created_ns", "disabled_ns", "password_changed_ns")
USER_KINDS = frozenset({"user_added", "user_password", "user_role", "user_disabled", "user_enabled",
                        "user_locked"})
_SELECT = f"SELECT {', '.join(DIGESTED)} FROM users"


def row_sha256(db: Database, name: str) -> str:
    """The digest of user `name`'s row as it is now (call in the transaction that changed it)."""
    row = db.execute(f"{_SELECT} WHERE name = ?", (name,)).fetchone()
    if row is None:
        raise LookupError(f"no user {name!r} to digest")
    return sha256_rows([tuple(row)])


@dataclass
class UserFacts:
    """What the chain says about each user (keys: names in lower case, as the table compares them)."""

    # newest event per user: (seq, kind, digest or None for an event from before digests, name as given)
    latest: dict[str, tuple[int, str, str | None, str]] = field(default_factory=dict)
    roles: dict[str, tuple[int, str]] = field(default_factory=dict)  # the role events gave, and where

    def observe(self, seq: int, kind: str, event: dict[str, Any]) -> str | None:
        name, digest = event.get("name"), event.get("row_sha256")
        if not isinstance(name, str) or not (digest is None or isinstance(digest, str)):
            return f"audit_log seq {seq} ({kind}): event fields are malformed"
        self.latest[name.lower()] = (seq, kind, digest, name)
        if kind in ("user_added", "user_role"):
            role = event.get("role")
            if not isinstance(role, str):
                return f"audit_log seq {seq} ({kind}): event fields are malformed"
            self.roles[name.lower()] = (seq, role)
        return None


def check_users(db: Database, facts: UserFacts, notes: list[str]) -> str | None:
    """The first user whose row is not what its newest audit event recorded; `notes` gets what could
    not be checked (users last changed before digests existed)."""
    if not db["users"].exists():
        return None
    seen, legacy = set(), []
    for row in db.execute(f"{_SELECT} ORDER BY name").fetchall():
        name, role = row[0], row[1]
        key = name.lower()
        seen.add(key)
        if key not in facts.latest:
            return f"users: {name!r} ({role}) has no audit event: added behind the system's back"
        seq, kind, digest, _ = facts.latest[key]
        role_seq, recorded_role = facts.roles.get(key, (seq, None))
        if recorded_role is not None and role != recorded_role:
            return (f"users: {name!r} has role {role}, audit seq {role_seq} recorded {recorded_role}: "
                    "edited behind the system's back")
        if digest is None:
            legacy.append(name)
        elif sha256_rows([tuple(row)]) != digest:
            return (f"users: {name!r} differs from what audit seq {seq} ({kind}) recorded (password hash, "
                    "disabled or times): edited behind the system's back")
    for key, (seq, kind, _, name) in sorted(facts.latest.items()):
        if key not in seen:
            return f"users: {name!r} (audit seq {seq}, {kind}) is missing: deleted behind the system's back"
    if legacy:
        notes.append(f"users: role checked, password hash not covered for {', '.join(legacy)} (last changed "
                     "by an older version; covered from the next change)")
    return None
