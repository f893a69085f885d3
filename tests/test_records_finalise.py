"""The records-side recorder (no sockets): a coil finalised with one read of its defects in one
transaction, a batch's severe-defect alarms stored in the batch's own; nothing published before it
commits."""

from __future__ import annotations

import json
import logging
import math
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from inspection.records import alarms, line_reads, queries, review_queue
from inspection.records.audit import canonical_json, verify
from inspection.records.events import AlarmRaised, DefectRecorded, GradeDecided
from inspection.records.recorder import Recorder
from inspection.records.store import Store
from inspection.testing.synthetic import coil_messages

CAMERAS = [{"id": "top-1", "surface": "top"}, {"id": "bottom-1", "surface": "bottom"}]


def _store(tmp_path: Path) -> Store:
    store = Store(tmp_path / "line.db")
    store.register_line("demo-hot-1", "hot", 1600.0, CAMERAS)
    return store


@pytest.mark.parametrize("keep_coil_rows", [False, True])
def test_finalising_a_coil_reads_its_defects_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  keep_coil_rows: bool) -> None:
    """Grading, the roll-mark search, the review queue and the published class counts share one read,
    and with the rows the recorder kept (`coil_rows`) none."""
    store = _store(tmp_path)
    reads: list[str] = []
    real = queries.coil_defects

    def counting(db, coil, **options):  # noqa: ANN001, ANN003, ANN202 - stands in for queries.coil_defects
        reads.append(coil)
        return real(db, coil, **options)

    monkeypatch.setattr(queries, "coil_defects", counting)
    monkeypatch.setattr(review_queue, "coil_defects", counting)
    events: list = []
    recorder = Recorder(store, "demo-hot-1", on_event=events.append, keep_coil_rows=keep_coil_rows)
    recorder.add(coil_messages("COIL-R", length_m=30, defects_per_frame=3.0, seed=2))
    recorder.flush()
    assert recorder.stats.coils_graded == 1
    assert reads == ([] if keep_coil_rows else ["COIL-R"])
    assert recorder.stats.coils_read_back == (0 if keep_coil_rows else 1)
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


def test_severe_alarms_are_stored_with_their_batch_and_logged_as_a_summary(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Every severe defect keeps its own stored, audited alarm sent right after the defect, but the
    batch's alarms share one insert and one audit event, and the log gets one line for them all."""
    store = Store(tmp_path / "line.db", seam_margin_px=None)  # no seam links: one alarm per severe fragment
    store.register_line("demo-hot-1", "hot", 1600.0, CAMERAS)
    events: list = []
    recorder = Recorder(store, "demo-hot-1", on_event=events.append)
    with caplog.at_level(logging.WARNING, logger="inspection.records.recorder"):
        recorder.add(coil_messages("COIL-S", length_m=30, defects_per_frame=3.0, seed=2))
        recorder.flush()  # one batch (62 messages)
    severe = [r[0] for r in store.db.execute("SELECT id FROM defects WHERE severity >= 3 ORDER BY id")]
    assert len(severe) > 5
    stored = [json.loads(r[0])["defect_id"] for r in store.db.execute(
        "SELECT details FROM alarms WHERE kind = 'severe_defect' ORDER BY id")]
    assert stored == severe and recorder.stats.alarms == len(severe)
    batch_events = [json.loads(r[0]) for r in store.db.execute(
        "SELECT event FROM audit_log WHERE kind = 'alarm' AND event LIKE '%severe_defect%'")]
    assert len(batch_events) == 1 and batch_events[0]["alarms"] == len(severe)
    order = [(type(e).__name__, e.row["id"] if isinstance(e, DefectRecorded) else e.details.get("defect_id"))
             for e in events if isinstance(e, DefectRecorded) or (isinstance(e, AlarmRaised)
                                                                   and e.kind == "severe_defect")]
    for defect_id in severe:  # each alarm follows its defect on the PLC output
        assert order[order.index(("AlarmRaised", defect_id)) - 1] == ("DefectRecorded", defect_id)
    summaries = [r.getMessage() for r in caplog.records if "severe_defect" in r.getMessage()]
    assert len(summaries) == 1 and f"{len(severe)} severe_defect on coil COIL-S" in summaries[0]
    assert verify(store.db).ok


def test_a_batch_whose_alarms_fail_is_not_recorded_and_is_retried(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """A defect is never committed without the alarm it raised: the batch rolls back and stays buffered."""
    store = _store(tmp_path)
    events: list = []
    recorder = Recorder(store, "demo-hot-1", on_event=events.append)
    real = store.add_alarms
    monkeypatch.setattr(store, "add_alarms", lambda *a, **k: (_ for _ in ()).throw(
        sqlite3.OperationalError("database or disk is full")))
    recorder.add(coil_messages("COIL-F", length_m=10, defects_per_frame=3.0, seed=2))
    recorder.flush()
    assert "will retry" in recorder.stats.last_error
    assert store.db.execute("SELECT count(*) FROM defects").fetchone()[0] == 0 and not events

    monkeypatch.setattr(store, "add_alarms", real)
    recorder.flush()
    severe = store.db.execute("SELECT count(*) FROM defects WHERE severity >= 3").fetchone()[0]
    assert severe and recorder.stats.new_defects == store.db.execute("SELECT count(*) FROM defects").fetchone()[0]
    assert len([e for e in events if isinstance(e, AlarmRaised) and e.kind == "severe_defect"]) == severe
    assert verify(store.db).ok


@pytest.mark.parametrize("details", [
    {"defect_id": 12, "camera": "top-1", "class": "inclusion", "score": 0.8734, "along_mm": 12345.678,
     "across_mm": -456.7, "severity": 3, "merged_into": 11},
    {"score": 5e-05, "along_mm": 0.0, "across_mm": -0.0, "x": 1e16, "y": 9999999999999998.0, "t": "é\u2028\n\"\\"},
    {"ids": [1, 2, 3], "coverage": {"share": 0.5}, "flag": True, "none": None, "big": 2**70},
    {"surrogate": "\ud800", "z": 1, "a": 2},
])
def test_alarm_details_are_spelled_as_canonical_json(details: dict[str, Any]) -> None:
    assert alarms.details_json(details) == canonical_json(details)


def test_alarm_details_of_random_values_are_spelled_as_canonical_json() -> None:
    import random
    import struct

    rng = random.Random(7)

    def value() -> Any:
        kind = rng.randrange(5)
        if kind == 0:  # any finite double, every exponent
            while True:
                x = struct.unpack("d", struct.pack("Q", rng.getrandbits(64)))[0]
                if math.isfinite(x):
                    return x
        if kind == 1:
            return rng.uniform(-2000, 200_000) * rng.choice((1, 1e-3, 1e-5, 1e3))
        if kind == 2:
            return rng.randrange(-2**64, 2**64)
        if kind == 3:
            return "".join(chr(rng.choice((rng.randrange(0, 0x80), rng.randrange(0x80, 0xD800),
                                           rng.randrange(0xE000, 0x110000)))) for _ in range(rng.randrange(8)))
        return None

    for _ in range(3000):
        details = {f"k{rng.randrange(20)}": value() for _ in range(rng.randrange(1, 10))}
        assert alarms.details_json(details) == canonical_json(details)


def test_a_defect_event_built_fast_is_the_event() -> None:
    import dataclasses

    row = {"id": 7, "coil": "C", "severity": 2}
    fast, slow = DefectRecorded.of(row, "v1", None), DefectRecorded(row, "v1", None)
    assert fast == slow and repr(fast) == repr(slow) and dataclasses.asdict(fast) == dataclasses.asdict(slow)
    with pytest.raises(dataclasses.FrozenInstanceError):
        fast.row = {}  # type: ignore[misc]


def test_an_alarm_built_fast_is_the_alarm() -> None:
    import dataclasses

    args = ("severe_defect", "m", "C", 3, {"surface": "top"}, {"defect_id": 1})
    fast, slow = alarms.Alarm.of(*args), alarms.Alarm(*args)
    assert fast == slow and repr(fast) == repr(slow) and fast.event(5) == slow.event(5)
    with pytest.raises(dataclasses.FrozenInstanceError):
        fast.kind = "x"  # type: ignore[misc]
