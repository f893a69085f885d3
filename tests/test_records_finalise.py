"""Finalising a coil in the records-side recorder (no sockets): one read of its defects, one
transaction, nothing published before it commits."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from inspection.records import line_reads, queries, review_queue
from inspection.records.audit import verify
from inspection.records.events import AlarmRaised, GradeDecided
from inspection.records.recorder import Recorder
from inspection.records.store import Store
from inspection.testing.synthetic import coil_messages

CAMERAS = [{"id": "top-1", "surface": "top"}, {"id": "bottom-1", "surface": "bottom"}]


def _store(tmp_path: Path) -> Store:
    store = Store(tmp_path / "line.db")
    store.register_line("demo-hot-1", "hot", 1600.0, CAMERAS)
    return store


def test_finalising_a_coil_reads_its_defects_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Grading, the roll-mark search, the review queue and the published class counts share one read."""
    store = _store(tmp_path)
    reads: list[str] = []
    real = queries.coil_defects

    def counting(db, coil, **options):  # noqa: ANN001, ANN003, ANN202 - stands in for queries.coil_defects
        reads.append(coil)
        return real(db, coil, **options)

    monkeypatch.setattr(queries, "coil_defects", counting)
    monkeypatch.setattr(review_queue, "coil_defects", counting)
    events: list = []
    recorder = Recorder(store, "demo-hot-1", on_event=events.append)
    recorder.add(coil_messages("COIL-R", length_m=30, defects_per_frame=3.0, seed=2))
    recorder.flush()
    assert recorder.stats.coils_graded == 1
    assert reads == ["COIL-R"]
    graded = [e for e in events if isinstance(e, GradeDecided)]
    assert len(graded) == 1 and graded[0].counts == line_reads.class_counts(store.db, "COIL-R")
    assert store.db.execute("SELECT count(*) FROM review_queue").fetchone()[0] > 0
    assert verify(store.db).ok


def test_a_failed_finalisation_stores_and_publishes_nothing(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """The grade, its alarms and the review queue commit together, and only then reach the PLC; a
    failure part way leaves the coil pending, and the retry decides it once."""
    store = _store(tmp_path)
    events: list = []
    # severe-defect alarms off: they belong to the batch, not to the coil's finalisation
    recorder = Recorder(store, "demo-hot-1", on_event=events.append, grace_s=0.0, alarm_min_severity=None)
    real = store.enqueue_reviews
    monkeypatch.setattr(store, "enqueue_reviews", lambda *a, **k: (_ for _ in ()).throw(
        sqlite3.OperationalError("database is locked")))
    recorder.add(coil_messages("COIL-H", length_m=20, defects_per_frame=1.0, seed=5, skip_frames=(3,)))
    with pytest.raises(sqlite3.OperationalError):
        recorder.flush()  # the frame lost: held at once (grace 0), with a coverage alarm, then the failure
    assert store.db.execute("SELECT count(*) FROM grades").fetchone()[0] == 0
    assert store.db.execute("SELECT count(*) FROM alarms").fetchone()[0] == 0
    assert not [e for e in events if isinstance(e, AlarmRaised | GradeDecided)]
    assert recorder.stats.coils_graded == 0 and recorder.stats.alarms == 0

    monkeypatch.setattr(store, "enqueue_reviews", real)
    recorder.housekeeping()  # the next second: decided again, whole
    assert [r[0] for r in store.db.execute("SELECT grade FROM grades")] == ["hold"]
    assert [r[0] for r in store.db.execute("SELECT kind FROM alarms")] == ["coverage"]
    assert [e.kind for e in events if isinstance(e, AlarmRaised)] == ["coverage"]
    assert [e.grade for e in events if isinstance(e, GradeDecided)] == ["hold"]
    assert recorder.stats.coils_graded == 1 and recorder.stats.alarms == 1
    assert verify(store.db).ok
