"""Console sessions in the line database (`inspection.records.sessions`) on real SQLite files, on a clock
the test moves: only the token's hash is stored, and a session ends on sign-out, idle time, a
disabled user or a new password."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from inspection.console import session_cookie
from inspection.passwords import ScryptParams
from inspection.records import sessions, users
from inspection.records.db import open_db
from inspection.records.verify_db import verify_database

FAST = ScryptParams(n=2**12, r=8, p=1)
MINUTE = 60 * 10**9
IDLE = 480 * MINUTE


class Clock:
    def __init__(self, start: int = 1_800_000_000 * 10**9) -> None:
        self.now = start

    def __call__(self) -> int:
        return self.now


@pytest.fixture
def db(tmp_path: Path) -> sqlite3.Connection:
    database = open_db(tmp_path / "line.db")
    users.add_user(database, "ana", "inspector", "ana-password-1", actor="test", params=FAST)
    users.add_user(database, "bo", "quality_engineer", "bo-password-1", actor="test", params=FAST)
    yield database
    database.close()


def test_only_the_hash_of_the_token_is_stored_and_the_token_resumes_the_user(db: sqlite3.Connection) -> None:
    clock = Clock()
    token = sessions.start(db, "ana", idle_ns=IDLE, clock=clock)
    assert len(token) >= 43  # 32 random bytes, URL-safe base64
    stored = db.execute("SELECT * FROM console_sessions").fetchall()
    assert len(stored) == 1 and token not in repr(stored) and sessions.digest(token) in repr(stored)
    clock.now += 30 * MINUTE
    found = sessions.resume(db, token, idle_ns=IDLE, clock=clock)
    assert (found.outcome, found.user.name, found.last_seen_ns) == ("ok", "ana", clock.now)
    assert db.execute("SELECT last_seen_ns FROM console_sessions").fetchone()[0] == clock.now  # activity


@pytest.mark.parametrize("token", ["", "x", "A" * 43, "A" * 5000, None, 42])
def test_an_unknown_or_malformed_token_resumes_nobody(db: sqlite3.Connection, token: object) -> None:
    sessions.start(db, "ana", idle_ns=IDLE)
    assert sessions.resume(db, token, idle_ns=IDLE).outcome == "unknown"  # type: ignore[arg-type]


@pytest.mark.parametrize(("idle_min", "outcome"), [(479.9, "ok"), (480.0, "ok"), (480.1, "expired")])
def test_a_session_idle_longer_than_the_limit_is_expired_and_deleted(db: sqlite3.Connection, idle_min: float,
                                                                     outcome: str) -> None:
    clock = Clock()
    token = sessions.start(db, "ana", idle_ns=IDLE, clock=clock)
    clock.now += int(idle_min * MINUTE)
    assert sessions.resume(db, token, idle_ns=IDLE, clock=clock).outcome == outcome
    assert sessions.open_sessions(db, "ana") == (1 if outcome == "ok" else 0)


def test_sign_out_ends_only_that_session(db: sqlite3.Connection) -> None:
    first, second = (sessions.start(db, "ana", idle_ns=IDLE) for _ in range(2))
    sessions.end(db, sessions.digest(first))
    assert sessions.resume(db, first, idle_ns=IDLE).outcome == "unknown"
    assert sessions.resume(db, second, idle_ns=IDLE).outcome == "ok"
    assert not sessions.is_open(db, sessions.digest(first)) and sessions.is_open(db, sessions.digest(second))


def test_disabling_a_user_or_a_new_password_ends_all_their_sessions(db: sqlite3.Connection) -> None:
    ana = [sessions.start(db, "ana", idle_ns=IDLE) for _ in range(2)]
    bo = sessions.start(db, "bo", idle_ns=IDLE)
    users.set_disabled(db, "ANA", True, actor="cli:root")
    assert [sessions.resume(db, t, idle_ns=IDLE).outcome for t in ana] == ["unknown", "unknown"]
    users.set_disabled(db, "ana", False, actor="cli:root")  # enabled again: the old tokens stay dead
    assert sessions.resume(db, ana[0], idle_ns=IDLE).outcome == "unknown"
    users.set_password(db, "bo", "bo-password-2", actor="cli:root", params=FAST)
    assert sessions.resume(db, bo, idle_ns=IDLE).outcome == "unknown"
    events = [e for (e,) in db.execute("SELECT event FROM audit_log WHERE kind IN ('user_disabled', "
                                       "'user_password') ORDER BY seq")]
    assert '"sessions_ended":2' in events[0] and '"sessions_ended":1' in events[1]


def test_a_disabled_user_is_not_resumed_even_with_a_row_left(db: sqlite3.Connection) -> None:
    token = sessions.start(db, "ana", idle_ns=IDLE)
    db.execute("UPDATE users SET disabled_ns = 1 WHERE name = 'ana'")  # behind the records API's back
    assert sessions.resume(db, token, idle_ns=IDLE).outcome == "disabled"
    assert sessions.open_sessions(db, "ana") == 0


def test_starting_a_session_deletes_the_idle_ones(db: sqlite3.Connection) -> None:
    clock = Clock()
    sessions.start(db, "ana", idle_ns=IDLE, clock=clock)
    clock.now += IDLE + MINUTE
    sessions.start(db, "bo", idle_ns=IDLE, clock=clock)
    assert db.execute("SELECT name FROM console_sessions").fetchall() == [("bo",)]


def test_audit_verify_names_the_sessions_table_as_not_evidence(db: sqlite3.Connection, tmp_path: Path) -> None:
    sessions.start(db, "ana", idle_ns=IDLE)
    report = verify_database(tmp_path / "line.db")
    assert report.ok, report.problem
    assert any("console_sessions (console sessions (token hashes))" in line for line in report.lines)


def test_a_claim_code_gives_the_token_once_and_expires() -> None:
    now = time.monotonic()
    code = session_cookie.offer("the-token", now=now)
    assert session_cookie.pending(code, now=now)
    assert session_cookie.take(code, now=now + 1) == "the-token"
    assert session_cookie.take(code, now=now + 1) is None and not session_cookie.pending(code, now=now + 1)
    late = session_cookie.offer("other", now=now)
    assert session_cookie.take(late, now=now + session_cookie.CLAIM_S + 1) is None
    assert session_cookie.take("never-offered") is None


def test_claim_codes_stay_bounded() -> None:
    now = time.monotonic()
    codes = [session_cookie.offer(f"t{i}", now=now) for i in range(session_cookie.MAX_PENDING + 10)]
    assert session_cookie.take(codes[0], now=now) is None  # the oldest made room
    assert session_cookie.take(codes[-1], now=now) == f"t{len(codes) - 1}"
