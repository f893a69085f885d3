"""Console users on real SQLite files: scrypt hashes, sign-in with lockout on an injected clock, the
audit of every change (never with the hash), and the `steel-inspect users` command's exit codes."""

from __future__ import annotations

import io
import os
import re
import sqlite3
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from inspection.commands.users import ROLE_CHOICES
from inspection.demo_user import DEMO_ROLE, DEMO_USER, ensure_demo_user
from inspection.passwords import (
    DEFAULT_PARAMS,
    PasswordError,
    ScryptParams,
    check_new_password,
    hash_password,
    parse_hash,
    verify_password,
)
from inspection.records import users
from inspection.records.audit import verify
from inspection.records.db import open_db
from tests.conftest import REPO

Cli = Callable[..., tuple[int, str, str]]
FAST = ScryptParams(n=2**12, r=8, p=1)  # the stored parameters are what a check uses: tests may hash cheaply
MINUTE = 60 * 10**9


class Clock:
    """A clock the test moves by hand (nanoseconds)."""

    def __init__(self, start: int = 1_800_000_000 * 10**9) -> None:
        self.now = start

    def __call__(self) -> int:
        return self.now


@pytest.fixture
def db(tmp_path: Path) -> sqlite3.Connection:
    database = open_db(tmp_path / "line.db")
    yield database
    database.close()


def test_scrypt_hash_verifies_the_password_and_rejects_others() -> None:
    stored = hash_password("correct horse battery", FAST)
    assert stored.startswith("scrypt$4096$8$1$") and "correct" not in stored
    assert verify_password("correct horse battery", stored)
    for wrong in ("correct horse batterY", "correct horse battery ", "", "x" * 2000):
        assert not verify_password(wrong, stored)
    again = hash_password("correct horse battery", FAST)
    assert again != stored and parse_hash(again)[1] != parse_hash(stored)[1]  # a fresh salt each time
    default = hash_password("correct horse battery")
    assert parse_hash(default)[0] == DEFAULT_PARAMS == ScryptParams(2**15, 8, 3)
    assert verify_password("correct horse battery", default)


@pytest.mark.parametrize("stored", ["", "scrypt$4096$8$1$c2FsdA==", "bcrypt$4096$8$1$c2FsdHNhbHQ=$a2V5",
                                    "scrypt$4095$8$1$c2FsdHNhbHQ=$" + "a" * 44,  # n not a power of 2
                                    "scrypt$1073741824$8$1$c2FsdHNhbHQ=$" + "a" * 44,  # 1 TiB of memory asked
                                    "scrypt$4096$8$1$not base64!$" + "a" * 44])
def test_a_malformed_or_hostile_stored_hash_fails_closed(stored: str) -> None:
    assert verify_password("correct horse battery", stored) is False


@pytest.mark.parametrize(("password", "message"), [("short", "at least 10 characters, got 5"),
                                                    (" " * 12, "only spaces"),
                                                    ("y" * 1025, "at most 1024 characters")])
def test_new_passwords_are_checked_without_echoing_them(password: str, message: str) -> None:
    with pytest.raises(PasswordError, match=message) as info:
        check_new_password(password)
    assert password.strip() == "" or password not in str(info.value)


def test_users_are_added_listed_and_every_change_is_audited_without_the_hash(db: sqlite3.Connection) -> None:
    clock = Clock()
    users.add_user(db, "ana", "inspector", "ana-password-1", actor="cli:admin", clock=clock, params=FAST)
    users.add_user(db, "Bo.Quality", "quality_engineer", "bo-password-1", actor="cli:admin", clock=clock,
                   params=FAST)
    with pytest.raises(users.UserError, match="'ana' exists already"):
        users.add_user(db, "ANA", "admin", "another-password", actor="cli:admin", params=FAST)
    with pytest.raises(users.UserError, match="role: expected one of"):
        users.add_user(db, "cy", "boss", "cy-password-1", actor="cli:admin", params=FAST)
    with pytest.raises(users.UserError, match="user name"):
        users.add_user(db, "cy smith", "admin", "cy-password-1", actor="cli:admin", params=FAST)
    users.set_role(db, "bo.quality", "admin", actor="cli:root", clock=clock)
    users.set_disabled(db, "ana", True, actor="cli:root", clock=clock)
    users.set_password(db, "ana", "a-new-password", actor="cli:root", clock=clock, params=FAST)
    listed = users.list_users(db)
    assert [(u.name, u.role, u.disabled) for u in listed] == [("ana", "inspector", True),
                                                             ("Bo.Quality", "admin", False)]
    assert users.count_enabled(db) == 1
    events = db.execute("SELECT kind, actor, event FROM audit_log ORDER BY seq").fetchall()
    assert [(k, a) for k, a, _ in events] == [("user_added", "cli:admin"), ("user_added", "cli:admin"),
                                              ("user_role", "cli:root"), ("user_disabled", "cli:root"),
                                              ("user_password", "cli:root")]
    assert '"was":"quality_engineer"' in events[2][2]
    stored = [h for (h,) in db.execute("SELECT password_hash FROM users")]
    audit_text = "\n".join(e for *_, e in events)
    assert all(h.startswith("scrypt$") and h not in audit_text for h in stored)
    assert "scrypt" not in audit_text and "password-1" not in audit_text
    assert verify(db).ok


def test_lockout_after_five_failures_and_unlock_after_fifteen_minutes(db: sqlite3.Connection) -> None:
    clock = Clock()
    policy = users.LoginPolicy(attempts=5, lockout_ns=15 * MINUTE)
    users.add_user(db, "ana", "inspector", "ana-password-1", actor="t", clock=clock, params=FAST)

    def attempt(password: str, name: str = "ana") -> users.LoginResult:
        return users.authenticate(db, name, password, policy=policy, clock=clock)

    assert attempt("wrong-password").outcome == "bad_password"
    assert attempt("ana-password-1").ok  # a success resets the count
    outcomes = [attempt(f"wrong-{i}").outcome for i in range(5)]
    assert outcomes == ["bad_password"] * 4 + ["locked_out"]
    assert users.get_user(db, "ana").locked(clock.now)
    clock.now += 14 * MINUTE
    locked = attempt("ana-password-1")  # even the right password: not checked while locked
    assert locked.outcome == "locked" and "locked" in locked.message and "until" in locked.message
    clock.now += 1 * MINUTE + 1
    assert attempt("ana-password-1").ok  # lock over
    assert users.get_user(db, "ana").failed_attempts == 0
    assert [e["outcome"] for e in users.login_events(db, 3)] == ["ok", "locked", "locked_out"]
    locks = db.execute("SELECT actor, event FROM audit_log WHERE kind = 'user_locked'").fetchall()
    assert len(locks) == 1 and '"failed_attempts":5' in locks[0][1] and locks[0][0] == "console"


def test_passwd_lifts_a_lockout_and_disabled_or_unknown_users_cannot_sign_in(db: sqlite3.Connection) -> None:
    clock = Clock()
    policy = users.LoginPolicy(attempts=2, lockout_ns=15 * MINUTE)
    users.add_user(db, "ana", "inspector", "ana-password-1", actor="t", clock=clock, params=FAST)
    for _ in range(2):
        users.authenticate(db, "ana", "nope-nope-nope", policy=policy, clock=clock)
    assert users.authenticate(db, "ana", "ana-password-1", policy=policy, clock=clock).outcome == "locked"
    users.set_password(db, "ana", "ana-password-2", actor="admin", clock=clock, params=FAST)
    assert users.authenticate(db, "ANA", "ana-password-2", policy=policy, clock=clock).user.name == "ana"
    users.set_disabled(db, "ana", True, actor="admin", clock=clock)
    wrong = users.authenticate(db, "ana", "nope-nope-nope", policy=policy, clock=clock)
    assert wrong.outcome == "bad_password" and wrong.message == "Sign-in refused: wrong name or password."
    disabled = users.authenticate(db, "ana", "ana-password-2", policy=policy, clock=clock)
    assert disabled.outcome == "disabled" and not disabled.ok
    unknown = users.authenticate(db, "nobody\x1b[31m", "whatever-123", policy=policy, clock=clock)
    assert unknown.outcome == "unknown_user" and unknown.message == wrong.message  # no hint which names exist
    assert users.login_events(db, 1)[0]["name"] == "nobody?[31m"  # control characters not stored as such


def test_the_demo_user_is_made_once_with_a_private_password_file(tmp_path: Path) -> None:
    database = tmp_path / "demo" / "line.db"
    first = ensure_demo_user(database)
    assert (first.name, first.users) == (DEMO_USER, 1) and len(first.password) >= 16
    assert first.password not in repr(first)
    assert stat.S_IMODE(first.file.stat().st_mode) == 0o600
    assert f"password: {first.password}" in first.file.read_text()
    second = ensure_demo_user(database)
    assert second.password is None and second.users == 1
    with open_db(database) as db:
        result = users.authenticate(db, DEMO_USER, first.password)
        assert result.ok and result.user.role == DEMO_ROLE


# -- the command ------------------------------------------------------------------------------

def _cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    """The installed command, as an admin runs it."""
    return subprocess.run([sys.executable, "-m", "inspection", "users", *args], cwd=REPO, input=stdin,
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(REPO)})


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Cli:
    """The same command in this process (faster): (exit status, stdout, stderr); `stdin` is what a
    pipe would give it (a StringIO is not a terminal, as a pipe is not)."""
    from inspection.cli import main

    def run(*args: str, stdin: str = "") -> tuple[int, str, str]:
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
        code = main(["users", *args])
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run


def test_users_command_adds_lists_disables_and_changes_passwords(tmp_path: Path) -> None:
    database = str(tmp_path / "line.db")
    added = _cli("add", "ana", "--role", "inspector", "--db", database, "--password-stdin",
                 stdin="ana-password-1\n")
    assert added.returncode == 0, added.stderr
    assert "user ana added (inspector)" in added.stdout and "ana-password-1" not in added.stdout + added.stderr
    assert _cli("passwd", "ana", "--db", database, "--password-stdin", stdin="ana-password-2\n").returncode == 0
    assert _cli("disable", "ana", "--db", database).returncode == 0
    listed = _cli("list", "--db", database)
    assert listed.returncode == 0
    assert listed.stdout.splitlines()[0].split() == ["name", "role", "disabled", "locked", "failed", "created"]
    # disabled: since when; not locked; no failed attempt
    assert re.match(r"ana +inspector +\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC +no +0 ", listed.stdout.splitlines()[1])
    with open_db(database) as db:
        assert users.authenticate(db, "ana", "ana-password-2").outcome == "disabled"
        assert verify(db).ok


@pytest.mark.parametrize(("args", "stdin", "message"), [
    (("add", "bo", "--role", "admin", "--password-stdin"), "short\n", "password: at least 10 characters, got 5"),
    (("add", "bo", "--role", "admin"), "", "no terminal to ask for the password on: pass it with --password-stdin"),
    (("add", "ana", "--role", "admin", "--password-stdin"), "ana-password-9\n", "user 'ana' exists already"),
    (("add", "b b", "--role", "admin", "--password-stdin"), "bo-password-1\n", "user name: expected 2-64"),
    (("disable", "nobody"), None, "no user 'nobody'"),
    (("passwd", "nobody", "--password-stdin"), "bo-password-1\n", "no user 'nobody'"),
    (("role", "ana", "inspector"), None, "user 'ana' has the role inspector already"),
])
def test_users_command_refuses_bad_input_in_one_line_with_exit_2(tmp_path: Path, cli: Cli, args: tuple[str, ...],
                                                                 stdin: str | None, message: str) -> None:
    database = tmp_path / "line.db"
    with open_db(database) as db:
        users.add_user(db, "ana", "inspector", "ana-password-1", actor="t", params=FAST)
    code, _, err = cli(*args, "--db", str(database), stdin=stdin or "")
    assert code == 2 and err.startswith(f"steel-inspect users: error: {message}") and err.count("\n") == 1, err
    assert "password-1" not in err and "password-9" not in err


@pytest.mark.parametrize("where", ["missing", "not_sqlite", "under_a_file"])
def test_users_command_names_an_unusable_database(tmp_path: Path, cli: Cli, where: str) -> None:
    (tmp_path / "file").write_text("not a database")
    path = {"missing": tmp_path / "none.db", "not_sqlite": tmp_path / "file",
            "under_a_file": tmp_path / "file" / "line.db"}[where]
    code, _, err = cli("list", "--db", str(path))
    assert code == 2 and err.count("\n") == 1 and str(path) in err, err
    code, _, err = cli("add", "bo", "--role", "admin", "--password-stdin", "--db", str(path), stdin="bo-password-1\n")
    assert code == (0 if where == "missing" else 2), err  # add may start a new database, not use a bad one
    assert err.count("\n") == (0 if where == "missing" else 1), err


def test_the_command_offers_exactly_the_roles_the_records_know() -> None:
    assert ROLE_CHOICES == users.ROLES


# -- users against the audit chain ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def managed_users(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A line database whose users were only ever changed the legitimate way: the command, and sign-ins
    (failed ones too, up to a lockout)."""
    from inspection.cli import main

    database = tmp_path_factory.mktemp("users") / "line.db"
    steps = [(("add", "ana", "--role", "inspector", "--password-stdin"), "ana-password-1\n"),
             (("add", "bo", "--role", "quality_engineer", "--password-stdin"), "bo-password-1\n"),
             (("passwd", "ana", "--password-stdin"), "ana-password-2\n"), (("role", "bo", "ml_engineer"), ""),
             (("disable", "ana"), ""), (("enable", "ana"), "")]
    stdin = sys.stdin
    try:
        for args, text in steps:
            sys.stdin = io.StringIO(text)
            assert main(["users", *args, "--db", str(database)]) == 0, args
    finally:
        sys.stdin = stdin
    with open_db(database) as db:
        assert users.authenticate(db, "bo", "bo-password-1").ok  # resets counters: no audit event
        for _ in range(users.LoginPolicy().attempts):
            users.authenticate(db, "ana", "not-her-password")
        assert users.get_user(db, "ana").locked_until_ns is not None  # locked: an audit event with a digest
    return database


def _verify(database: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    from inspection.cli import main

    code = main(["audit", "verify", "--db", str(database), "--no-crops"])
    return code, capsys.readouterr().out


USER_TAMPERING = [  # an edit made with sqlite3 on the file -> what `audit verify` names
    ("role raised to admin", "UPDATE users SET role = 'admin' WHERE name = 'ana'",
     "users: 'ana' has role admin, audit seq 1 recorded inspector"),
    ("another user's hash copied", "UPDATE users SET password_hash = (SELECT password_hash FROM users WHERE "
     "name = 'bo') WHERE name = 'ana'", "users: 'ana' differs from what audit seq 7 (user_locked) recorded"),
    ("disabled time edited", "UPDATE users SET disabled_ns = 1 WHERE name = 'bo'",
     "users: 'bo' differs from what audit seq 4 (user_role) recorded"),
    ("user renamed", "UPDATE users SET name = 'Bo' WHERE name = 'bo'", "users: 'Bo' differs from what audit seq 4"),
    ("user added", "INSERT INTO users (name, role, password_hash, created_ns, password_changed_ns) SELECT "
     "'mallory', 'admin', password_hash, 1, 1 FROM users WHERE name = 'bo'",
     "users: 'mallory' (admin) has no audit event: added behind the system's back"),
    ("user deleted", "DELETE FROM users WHERE name = 'bo'",
     "users: 'bo' (audit seq 4, user_role) is missing: deleted behind the system's back"),
]


def test_users_changed_by_the_command_and_by_sign_ins_keep_audit_verify_green(
        managed_users: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = _verify(managed_users, capsys)
    assert code == 0, out
    assert "console users match their recorded digests" in out and "users (" not in out  # covered, not listed


@pytest.mark.parametrize(("case", "sql", "named"), USER_TAMPERING, ids=[c[0] for c in USER_TAMPERING])
def test_a_user_edited_in_the_database_file_fails_audit_verify_naming_the_user(
        managed_users: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str, sql: str,
        named: str) -> None:
    import shutil

    database = tmp_path / "line.db"
    shutil.copy(managed_users, database)  # every writer closed: the WAL is checkpointed into the file
    con = sqlite3.connect(database)
    with con:
        con.execute(sql)
    con.close()
    code, out = _verify(database, capsys)
    assert code == 1 and f"AUDIT BROKEN: {named}" in out, out


def test_a_user_from_before_row_digests_still_has_its_role_checked(db: sqlite3.Connection) -> None:
    """A database whose users were added by an older version (events without ``row_sha256``): the role
    is replayed from the events, the rest is said to be uncovered until the user's next change."""
    from inspection.records import audit
    from inspection.records.db import write_transaction

    with write_transaction(db):  # what the older version wrote
        db.execute("INSERT INTO users (name, role, password_hash, created_ns, password_changed_ns) "
                   "VALUES ('ana', 'inspector', ?, 1, 1)", (hash_password("ana-password-1", FAST),))
        audit.append(db, "user_added", "cli:admin", {"name": "ana", "role": "inspector"}, 1)
    verdict = verify(db)
    assert verdict.ok, verdict
    db.execute("UPDATE users SET role = 'admin' WHERE name = 'ana'")
    db.conn.commit()
    verdict = verify(db)
    assert not verdict.ok and verdict.problem.startswith("users: 'ana' has role admin, audit seq 1 recorded"), verdict
    db.execute("UPDATE users SET role = 'inspector' WHERE name = 'ana'")
    db.conn.commit()
    users.set_password(db, "ana", "ana-password-2", actor="cli:root", params=FAST)  # from now on: digested
    db.execute("UPDATE users SET password_hash = 'scrypt$1$1$1$x$y' WHERE name = 'ana'")
    db.conn.commit()
    assert verify(db).problem.startswith("users: 'ana' differs from what audit seq 2 (user_password) recorded")
