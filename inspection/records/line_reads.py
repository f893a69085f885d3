"""The reads the line's own processes need: the recorder's coil bookkeeping, the grade rows it
publishes, models, the run summary of `steel-inspect run` and the accuracy benchmarks' records.

(The console's and the reports' reads are in `queries`; both run SQL only here, in `records`.)
"""

from __future__ import annotations

import json
import operator
from collections import Counter
from collections.abc import Mapping
from typing import Any

from sqlite_utils import Database

from inspection.records import queries, seams


def has_grade(db: Database, coil: str) -> bool:
    return db.execute("SELECT 1 FROM grades WHERE coil=? LIMIT 1", (coil,)).fetchone() is not None


def ungraded_ended_coils(db: Database) -> list[str]:
    """Coils that ended but were never graded (the recorder stopped before): finalise them now."""
    return [r[0] for r in db.execute("SELECT DISTINCT coil FROM coil_events WHERE kind='coil_end' "
                                     "AND coil NOT IN (SELECT coil FROM grades)").fetchall()]


def ungraded_coils(db: Database, line: str) -> list[str]:
    """Coils of `line` without any grade (cut short when the whole line stops: held)."""
    return [r[0] for r in db.execute("SELECT id FROM coils WHERE line = ? AND NOT EXISTS (SELECT 1 FROM grades g "
                                     "WHERE g.coil = coils.id)", (line,)).fetchall()]


def coils_left_open(db: Database, camera: str, next_coil: str, started_ns: int) -> list[str]:
    """Ungraded coils this camera started before `next_coil` and never ended (their coil_end was
    lost with a crashed worker)."""
    return [r[0] for r in db.execute(
        "SELECT s.coil FROM coil_events s WHERE s.camera = ? AND s.kind = 'coil_start' AND s.coil != ? "
        "AND s.time_ns < ? AND NOT EXISTS (SELECT 1 FROM coil_events e WHERE e.coil = s.coil "
        "AND e.camera = s.camera AND e.kind = 'coil_end') "
        "AND NOT EXISTS (SELECT 1 FROM grades g WHERE g.coil = s.coil)",
        (camera, next_coil, started_ns)).fetchall()]


def next_coil_number(db: Database, prefix: str) -> int | None:
    """One more than the highest number of the coils whose id is `prefix` + digits (the simulated
    cameras' ids), or None when there is none: a new run of the line continues after them instead
    of sending coil ids the database already holds (which it would ignore as re-sent)."""
    numbers = [int(coil[len(prefix):]) for (coil,) in db.execute(
        "SELECT id FROM coils WHERE id LIKE ? ESCAPE '\\'", (prefix.replace("_", "\\_") + "%",))
        if coil[len(prefix):].isdigit()]
    return max(numbers) + 1 if numbers else None


def last_grade_id(db: Database) -> int:
    return db.execute("SELECT coalesce(max(id), 0) FROM grades").fetchone()[0]


def grades_since(db: Database, after_id: int,
                 known_counts: Mapping[int, dict[str, int]] | None = None) -> list[dict[str, Any]]:
    """Grade rows with id > `after_id`, oldest first, each with its `event` (graded, regraded, hold,
    override), its reasons decoded and the coil's effective defect counts per class at that moment.
    `known_counts` (grade id -> counts) are the counts a grade was decided on, when its writer
    knows them: reading a coil's defects again for them costs as much as grading it."""
    rows = db.execute("SELECT id, coil, grade, source, reasons, rule_set, rule_version, coverage, defects_counted, "
                      "by FROM grades WHERE id > ? ORDER BY id", (after_id,)).fetchall()
    out = []
    for gid, coil, grade, source, reasons, rule_set, rule_version, coverage, counted, by in rows:
        earlier = db.execute("SELECT 1 FROM grades WHERE coil=? AND id<? LIMIT 1", (coil, gid)).fetchone()
        counts = (known_counts or {}).get(gid)
        if counts is None:
            counts = class_counts(db, coil)
        out.append({"id": gid, "coil": coil, "grade": grade, "reasons": json.loads(reasons),
                    "event": ("override" if source == "override" else "hold" if grade == "hold"
                              else "regraded" if earlier else "graded"),
                    "coverage": coverage, "counts": counts,
                    "defects_total": counted if counted is not None else sum(counts.values()),
                    "rule_set": rule_set, "rule_set_version": rule_version, "by": by})
    return out


def class_counts(db: Database, coil: str, defects: list[dict[str, Any]] | None = None) -> dict[str, int]:
    """Effective defects per class (reviews applied, rejected ones left out, seam fragments once);
    `defects`: the coil's `queries.coil_defects` rows when the caller has read them already."""
    rows = queries.coil_defects(db, coil) if defects is None else defects
    # counted in C (a coil's 10,000 rows at every finalisation); a plain dict, classes in first-seen order
    return dict(Counter(map(_EFFECTIVE_CLASS, queries.not_rejected(rows))))


_EFFECTIVE_CLASS = operator.itemgetter("effective_class")


def model(db: Database, model_id: int) -> tuple[str, str] | None:
    """(version, sha256) of a `models` row."""
    row = db.execute("SELECT version, sha256 FROM models WHERE id=?", (model_id,)).fetchone()
    return (row[0], row[1]) if row else None


def run_summary(db: Database, started_ns: int) -> dict[str, Any]:
    """What a run of the line recorded (frames captured since `started_ns`): frames inspected and
    dropped, defects (a defect cut by frame seams once) and fragments, coils and their latest grade,
    per coil the frames its cameras' coil_ends count that no record shows (`queries.coverage`) and
    the cameras whose coil_end never arrived,
    capture -> record latencies (ms, sorted) and the inspecting time (first capture to last record)."""
    run = (started_ns,)
    inspected, dropped = db.execute(
        "SELECT coalesce(sum(status = 'inspected'), 0), coalesce(sum(status = 'dropped'), 0) FROM frames "
        "WHERE captured_ns >= ?", run).fetchone()
    fragments = db.execute("SELECT count(*) FROM defects WHERE captured_ns >= ?", run).fetchone()[0]
    coils = [r[0] for r in db.execute(
        "SELECT coil FROM frames WHERE captured_ns >= ? UNION SELECT coil FROM coil_events WHERE time_ns >= ? "
        "ORDER BY coil", run * 2)]
    grades = {coil: row[0] for coil in coils if (row := db.execute(
        "SELECT grade FROM grades WHERE coil = ? ORDER BY id DESC LIMIT 1", (coil,)).fetchone())}
    latencies = sorted(r[0] / 1e6 for r in db.execute(
        "SELECT recorded_ns - captured_ns FROM frames WHERE captured_ns >= ?", run))
    lost, ends_missing = {}, {}
    for coil in coils:
        cover = queries.coverage(db, coil)
        if cover["lost"]:
            lost[coil] = cover["lost"]
        missing = [c["camera"] for c in cover["cameras"] if not c["ended"]]
        if missing:
            ends_missing[coil] = missing
    first, last = db.execute("SELECT min(captured_ns), max(recorded_ns) FROM frames WHERE captured_ns >= ? "
                             "AND status = 'inspected'", run).fetchone()
    return {"frames_inspected": inspected, "frames_dropped_by_workers": dropped,
            "defects": fragments - seams.merged_away(db, started_ns), "defect_fragments": fragments,
            "coils": len(coils), "grades": grades, "frames_lost_by_coil": lost, "coil_ends_missing": ends_missing,
            "latencies_ms": latencies,
            "inspecting_s": round((last - first) / 1e9, 3) if first is not None else None}


def coil_ids(db: Database) -> list[str]:
    return [r[0] for r in db.execute("SELECT id FROM coils ORDER BY id")]


def last_defect_id(db: Database) -> int:
    return db.execute("SELECT coalesce(max(id), 0) FROM defects").fetchone()[0]


def first_count_day(db: Database) -> str | None:
    """The earliest day of the derived per-coil class counts (a benchmark's time range)."""
    return db.execute("SELECT min(day) FROM coil_class_counts").fetchone()[0]


def defect_count(db: Database) -> int:
    return db.execute("SELECT count(*) FROM defects").fetchone()[0]


def frame_count(db: Database) -> int:
    """Frames recorded (inspected or dropped by a worker), all coils and cameras."""
    return db.execute("SELECT count(*) FROM frames").fetchone()[0]


def inspected_length_mm(db: Database) -> float:
    """Strip length of every inspected frame, all cameras."""
    return db.execute("SELECT coalesce(sum(length_mm), 0) FROM frames WHERE status = 'inspected'").fetchone()[0]


def grades_of_ended_coils(db: Database) -> list[str]:
    """The latest grade of each coil a camera ended (not those held because the line stopped)."""
    return [r[0] for r in db.execute("SELECT grade FROM grades WHERE trigger = 'coil_end' AND id IN "
                                     "(SELECT max(id) FROM grades GROUP BY coil)")]


def model_versions(db: Database) -> list[str]:
    return [r[0] for r in db.execute("SELECT DISTINCT version FROM models")]


def defects_per_frame(db: Database) -> dict[tuple[str, str, int], int]:
    """Defects recorded per (coil, camera, frame index)."""
    return {(coil, camera, index): count for coil, camera, index, count in db.execute(
        "SELECT coil, camera, frame_index, defects FROM frames")}
