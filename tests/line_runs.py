"""Helpers for tests that run a whole line in processes: read its database from outside, act on it
from a background thread, find its child processes, and check its books after a fault.

The books of a run (`check_books`): every frame a camera captured is inspected, dropped (by its camera
or by a worker, and recorded as such) or counted as lost -- per coil and camera from the camera's own
count in its coil_end, and for the whole run from the cameras' summaries -- and nothing is recorded
twice; the database passes SQLite's integrity check and `steel-inspect audit verify`; a coil inspected
below the coverage gate is held, and a coil that lost frames says how many in its hold alarm.
"""

from __future__ import annotations

import json
import multiprocessing
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Callable
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

from inspection.records import queries
from inspection.records.db import open_db

REPO = Path(__file__).resolve().parents[1]


def recorded(db: Path, sql: str = "SELECT count(*) FROM frames", params: tuple = ()) -> int:
    """A count from the line's database as another process sees it; 0 until the recorder made it."""
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        try:
            row = con.execute(sql, params).fetchone()
            return int(row[0]) if row and row[0] is not None else 0
        finally:
            con.close()
    except sqlite3.Error:
        return 0


def in_background(target: Callable[..., None], *args: object) -> dict[str, str]:
    """Run `target(*args)` in a daemon thread; the returned dict gets "failed" (the reason) if it
    raised, for the test to assert on once the line has ended."""
    outcome: dict[str, str] = {}

    def run() -> None:
        try:
            target(*args)
        except AssertionError as exc:
            outcome["failed"] = str(exc)

    threading.Thread(target=run, daemon=True).start()
    return outcome


def child(name: str) -> BaseProcess | None:
    """This process's live child called `name` (the line's supervisor runs in the test's process)."""
    return next((c for c in multiprocessing.active_children() if c.name == name), None)


def cameras_running() -> bool:
    return any(c.name.startswith("camera-") for c in multiprocessing.active_children())


def audit_verify(db: Path) -> subprocess.CompletedProcess:
    """`steel-inspect audit verify --db DB`, the command an auditor runs."""
    return subprocess.run([sys.executable, "-m", "inspection", "audit", "verify", "--db", str(db)], cwd=REPO,
                          capture_output=True, text=True, timeout=120)


def coverages(db: Path) -> dict[str, dict[str, Any]]:
    """`queries.coverage` of every coil in the database."""
    reader = open_db(db, readonly=True)
    try:
        coils = [r[0] for r in reader.execute("SELECT id FROM coils ORDER BY id")]
        return {coil: queries.coverage(reader, coil) for coil in coils}
    finally:
        reader.close()


def latest_grades(db: Path) -> dict[str, str]:
    con = sqlite3.connect(db)
    try:
        return dict(con.execute("SELECT coil, grade FROM grades g WHERE id = (SELECT max(id) FROM grades "
                                "WHERE coil = g.coil)").fetchall())
    finally:
        con.close()


def check_books(db: Path, summary: dict[str, Any] | None = None, coverage_min: float = 0.995) -> dict[str, Any]:
    """Assert the books of the line's database (and of `run_pipeline`'s `summary`, if given) balance;
    see the module docstring. Returns every coil's coverage."""
    con = sqlite3.connect(db)
    try:
        assert con.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        frames, distinct = con.execute(
            "SELECT count(*), count(DISTINCT coil || ':' || camera || ':' || frame_index) FROM frames").fetchone()
        assert frames == distinct, "a frame recorded twice"
        defects, distinct = con.execute(
            "SELECT count(*), count(DISTINCT coil || ':' || camera || ':' || frame_index || ':' || defect_index) "
            "FROM defects").fetchone()
        assert defects == distinct, "a defect recorded twice"
        ends = con.execute("SELECT coalesce(sum(frames), 0), coalesce(sum(dropped), 0) FROM coil_events "
                           "WHERE kind = 'coil_end'").fetchone()
        alarms = [json.loads(d) for (d,) in con.execute("SELECT details FROM alarms WHERE kind = 'coverage'")]
    finally:
        con.close()
    verdict = audit_verify(db)
    assert verdict.returncode == 0, verdict.stdout + verdict.stderr
    covers = coverages(db)
    grades = latest_grades(db)
    lost_alarms = {a.get("frames_lost") for a in alarms}
    for coil, cover in covers.items():
        for cam in cover["cameras"]:
            if cam["ended"]:  # the camera's own count: inspected + dropped (worker, camera) + lost
                assert cam["frames"] == cam["inspected"] + cam["dropped_worker"] + cam["dropped_camera"] + cam["lost"]
        if cover["share"] < coverage_min:
            assert grades.get(coil) == "hold", (coil, grades.get(coil), cover)
        if cover["lost"]:
            assert grades.get(coil) == "hold", (coil, cover)
            assert cover["lost"] in lost_alarms, (coil, cover["lost"], alarms)  # the hold alarm counts them
    if summary is not None:
        sent, inspected = summary["frames_sent"], summary["frames_inspected"]
        assert sent == inspected + summary["frames_dropped_by_workers"] + summary["frames_lost"], summary
        assert summary["frames_lost"] >= 0, summary
        if not summary["coil_ends_missing"]:
            # the same frames counted two ways: the cameras' summaries against the records, and each
            # camera's coil_end (which reached the database through the workers) against the records
            assert summary["frames_lost"] == sum(summary["frames_lost_by_coil"].values()), summary
            assert ends == (sent + summary["frames_dropped_by_cameras"], summary["frames_dropped_by_cameras"])
    return covers
