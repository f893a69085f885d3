"""The demo's console user: on a database without users, `steel-inspect demo` adds one so that the
console can be tried at once (`ensure_demo_user`).

The user is ``inspector`` with the role quality_engineer (reviews and grade overrides) and a random
password, which the demo prints once and writes to ``console-login`` beside the database, created
mode 0600 like the CURVE secret keys (never logged). A line that is not a demo gets its users from
`steel-inspect users add` instead.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from inspection.records import audit, users
from inspection.records.audit_keys import AuditKey
from inspection.records.db import open_db

DEMO_USER = "inspector"
DEMO_ROLE = "quality_engineer"
LOGIN_FILE = "console-login"


@dataclass(frozen=True)
class DemoLogin:
    """The user the demo made (`password` set) or found (`password` None: users existed already)."""

    name: str | None
    password: str | None
    file: Path
    users: int

    def __repr__(self) -> str:  # a login that lands in a log or a traceback shows no password
        return f"DemoLogin(name={self.name!r}, file={self.file}, users={self.users})"


def ensure_demo_user(database: Path, audit_key: AuditKey | None = None) -> DemoLogin:
    """Add the demo user when `database` has no user at all (its audit event signed with
    `audit_key`); write its password file 0600."""
    file = Path(database).parent / LOGIN_FILE
    password = secrets.token_urlsafe(12)  # 16 characters, 96 random bits
    db = audit.sign_with(open_db(database), audit_key)
    try:
        added = users.add_first_user(db, DEMO_USER, DEMO_ROLE, password, actor="demo")
        count = len(users.list_users(db))
    finally:
        db.close()
    if added is None:
        return DemoLogin(None, None, file, count)
    write_secret(file, f"user: {DEMO_USER}\nrole: {DEMO_ROLE}\npassword: {password}\n")
    return DemoLogin(DEMO_USER, password, file, count)


def write_secret(path: Path, text: str) -> None:
    """Create `path` readable by its owner only, from the start (not chmod-ed afterwards)."""
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
