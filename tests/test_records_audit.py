"""Audit chain: edits and deletions made behind the system's back with plain sqlite3 are found."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from inspection.records.audit import verify
from inspection.records.db import open_db
from inspection.records.store import Store
from inspection.testing.synthetic import coil_messages

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    path = tmp_path / "line.db"
    with Store(path) as store:
        store.register_line(
            "demo-hot-1",
            "hot",
            1600.0,
            [{"id": "top-1", "surface": "top"}, {"id": "bottom-1", "surface": "bottom"}],
        )
        for i in range(3):
            store.apply_batch(coil_messages(f"C-{i}", length_m=20, defects_per_frame=1.0, seed=i))
            store.grade_coil(f"C-{i}", "coil_end")
        defect = store.db.execute("SELECT min(id) FROM defects").fetchone()[0]
        store.add_review(defect, "anna", "reject", reason="reflection")
        store.override_grade("C-1", "bert", "secondary", "customer spec")
    return path


def _tamper(path: Path, sql: str) -> None:
    """What someone with file access does: drop the append-only triggers, then edit."""
    conn = sqlite3.connect(path)
    with conn:
        for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'").fetchall():
            conn.execute(f"DROP TRIGGER {name}")
        assert conn.execute(sql).rowcount >= 1
    conn.close()


@pytest.mark.parametrize("sql", ["UPDATE defects SET class = 'x'", "DELETE FROM reviews",
                                 "UPDATE audit_log SET actor = 'x'", "DELETE FROM grades"])
def test_evidence_cannot_be_edited_in_place(db_path: Path, sql: str) -> None:
    conn = sqlite3.connect(db_path)
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        conn.execute(sql)
    conn.close()


def _verify(path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    from inspection.cli import main

    code = main(["audit", "verify", "--db", str(path)])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def test_intact_database_verifies_through_the_installed_command(db_path: Path) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "inspection", "audit", "verify", "--db", str(db_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "audit intact" in run.stdout


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("UPDATE defects SET class = 'scratches' WHERE id = 5", "defects rowid"),
        ("UPDATE defects SET score = 0.01 WHERE id = (SELECT max(id) FROM defects)", "content changed"),
        ("DELETE FROM defects WHERE id = 7", "rows deleted"),
        ("UPDATE grades SET grade = 'prime' WHERE id = 1", "grades rowid 1..1"),
        ("UPDATE reviews SET action = 'confirm'", "reviews rowid 1..1"),
        ("DELETE FROM grade_overrides", "grade_overrides"),
        ("UPDATE models SET sha256 = 'x'", "models rowid"),
        ("UPDATE audit_log SET actor = 'mallory' WHERE seq = 3", "audit_log seq 3"),
        ("DELETE FROM audit_log WHERE seq = 4", "seq 4 is missing"),
        (
            "INSERT INTO defects (coil, surface, camera, frame_seq, frame_index, defect_index, along_mm, "
            "across_mm, class, score, severity, captured_ns) "
            "VALUES ('C-0', 'top', 'top-1', 1, 1, 99, 1, 1, 'patches', 1, 1, 1)",
            "first uncovered rowid",
        ),
    ],
)
def test_tampering_is_detected_and_named(
    db_path: Path, sql: str, expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _verify(db_path, capsys)[0] == 0
    _tamper(db_path, sql)
    code, out = _verify(db_path, capsys)
    assert code == 1, out
    assert expected in out, out


def test_relinking_an_edited_row_still_breaks_the_chain(db_path: Path) -> None:
    # An attacker who edits an event and recomputes its own hash breaks the next row's prev_hash.
    from inspection.records.audit import link_hash

    conn = sqlite3.connect(db_path)
    seq, time_ns, kind, actor, event, prev = conn.execute(
        "SELECT seq, time_ns, kind, actor, event, prev_hash FROM audit_log WHERE seq = 2"
    ).fetchone()
    with conn:
        conn.execute("DROP TRIGGER audit_log_no_update")
        conn.execute(
            "UPDATE audit_log SET actor = 'mallory', hash = ? WHERE seq = 2",
            (link_hash(prev, seq, time_ns, kind, "mallory", event),),
        )
    conn.close()
    verdict = verify(open_db(db_path, readonly=True))
    assert not verdict.ok and verdict.seq == 3 and "prev_hash" in verdict.problem
