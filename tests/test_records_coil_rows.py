"""A coil finalised from the rows the recorder kept (`records.coil_rows`) is finalised exactly as from a
read of the coil: same grades, review queue, roll marks, alarms, class counts, published events and
audit chain, with seam-cut defects, unknown defects, reviews before the coil end, and a recorder
killed in the middle of a coil (its successor reads the coil back)."""

from __future__ import annotations

import dataclasses
import itertools
from pathlib import Path
from typing import Any

import pytest

from inspection.frame import CoilEvent
from inspection.records import queries
from inspection.records.audit import verify
from inspection.records.batch_rows import STORED_NAMES
from inspection.records.coil_rows import CoilRows
from inspection.records.events import DefectRecorded
from inspection.records.recorder import Recorder
from inspection.records.store import Store
from inspection.results import Defect, FrameResult, ResultMessage
from inspection.severity import severity
from inspection.testing.synthetic import coil_messages

LINE = "demo-hot-1"
CAMERAS = [{"id": "top-1", "surface": "top", "mm_per_px_along": 1.0},
           {"id": "bottom-1", "surface": "bottom", "mm_per_px_along": 1.0}]
FRAME_MM = 1024.0
PITCH_MM = 1500.0


def _defect(cls: str, along: tuple[float, float], across: tuple[float, float], position: float, score: float = 0.9,
            guesses: tuple[tuple[str, float], ...] = ()) -> Defect:
    length, width = along[1] - along[0], across[1] - across[0]
    return Defect(cls, score, severity(cls, length, width, length * width, score),
                  (across[0], along[0] - position, across[1], along[1] - position), (along[0] + along[1]) / 2,
                  (across[0] + across[1]) / 2, length, width, length * width, guesses=guesses)


def _with_extras(messages: list[ResultMessage]) -> list[ResultMessage]:
    """The top camera's frames with a roll mark every `PITCH_MM`, a scratch cut by each of the first
    seams (two fragments to link), and an unknown defect with its guesses."""
    out: list[ResultMessage] = []
    for m in messages:
        if isinstance(m, FrameResult) and m.source.camera == "top-1":
            start, end = m.position_mm, m.position_mm + FRAME_MM
            extra = [_defect("rolled-in_scale", (a - 8, a + 8), (792.0, 808.0), start)
                     for a in (700 + n * PITCH_MM for n in range(40)) if start <= a < end]
            seam_above, seam_below = end, start
            if m.index < 6:  # the upper fragment, reaching this frame's lower seam
                extra.append(_defect("scratches", (seam_above - 40, seam_above), (300.0, 310.0), start, 0.8))
            if 1 <= m.index < 7:  # the lower fragment, from this frame's upper seam
                extra.append(_defect("scratches", (seam_below, seam_below + 90), (301.0, 311.0), start, 0.7))
            if m.index == 3:
                extra.append(_defect("unknown", (start + 100, start + 130), (50.0, 70.0), start, 0.4,
                                     guesses=(("patches", 0.4), ("inclusion", 0.31))))
            m = dataclasses.replace(m, defects=(*m.defects, *extra))
        out.append(m)
    return out


def _messages() -> list[ResultMessage]:
    """Three coils, the second and third interleaved (their frames arrive mixed)."""
    first = _with_extras(coil_messages("C-1", length_m=40, defects_per_frame=6.0, seed=3))
    second = _with_extras(coil_messages("C-2", length_m=30, defects_per_frame=4.0, seed=4))
    third = coil_messages("C-3", length_m=25, defects_per_frame=5.0, seed=5)
    mixed = [m for pair in itertools.zip_longest(second, third) for m in pair if m is not None]
    return [*first, *mixed]


def _record(path: Path, keep_coil_rows: bool, restart_at: int | None = None) -> tuple[Store, list[Any], Recorder]:
    """Record `_messages` in batches of 20, with reviews of C-1's first defects before its end;
    `restart_at`: a new store and recorder (a killed recorder's successor) from that batch on."""
    clock = itertools.count(1_800_000_000 * 10**9, 1000)
    events: list[Any] = []

    def start() -> tuple[Store, Recorder]:
        store = Store(path, clock=lambda: next(clock))
        return store, Recorder(store, LINE, on_event=events.append, keep_coil_rows=keep_coil_rows, grace_s=3600)

    store, recorder = start()
    store.register_line(LINE, "hot", 1600.0, CAMERAS)
    messages = _messages()
    for n, k in enumerate(range(0, len(messages), 20)):
        if n == restart_at:  # killed: nothing flushed at the end, its memory gone
            store.close()
            store, recorder = start()
        recorder.add(messages[k:k + 20])
        recorder.flush()
        if n == 2:  # an inspector at work before the coil ended: a false alarm, a relabel, a confirm
            first = [i for (i,) in store.db.execute("SELECT id FROM defects WHERE coil='C-1' ORDER BY id LIMIT 3")]
            store.add_review(first[0], "ann", "reject", reason="false alarm")
            store.add_review(first[1], "ann", "relabel", new_class="patches")
            store.add_review(first[2], "bob", "confirm")
    recorder.finish()
    return store, events, recorder


def _outcome(store: Store, events: list[Any]) -> dict[str, Any]:
    def rows(sql: str) -> list[tuple]:
        return [tuple(r) for r in store.db.execute(sql)]

    return {
        "grades": rows("SELECT coil, grade, source, trigger, reasons, coverage, defects_counted FROM grades "
                       "ORDER BY id"),
        "queue": rows("SELECT defect_id, coil, class, priority, reason FROM review_queue ORDER BY defect_id"),
        "alarms": rows("SELECT coil, kind, surface, class, across_mm, pitch_mm, roll_diameter_mm, count, message, "
                       "details FROM alarms ORDER BY id"),
        "counts": rows("SELECT * FROM coil_class_counts ORDER BY coil, class, surface, severity"),
        "links": rows("SELECT coil, upper_id, lower_id, severity FROM defect_links ORDER BY id"),
        "published": [e for e in events if not isinstance(e, DefectRecorded)],
    }


def test_finalising_from_the_kept_rows_gives_what_reading_the_coil_gives(tmp_path: Path) -> None:
    before, before_events, reading = _record(tmp_path / "read.db", keep_coil_rows=False)
    after, after_events, keeping = _record(tmp_path / "kept.db", keep_coil_rows=True)
    assert (reading.stats.coils_read_back, keeping.stats.coils_read_back) == (3, 0)
    expected = _outcome(before, before_events)
    # the test exercises what it claims to: roll marks, seam links, reviews, unknown defects, all coils
    assert {a[1] for a in expected["alarms"]} >= {"periodic", "severe_defect"}
    assert expected["links"] and {g[0] for g in expected["grades"]} == {"C-1", "C-2", "C-3"}
    assert {q[4] for q in expected["queue"]} >= {"unknown", "high_severity", "sample"}
    assert _outcome(after, after_events) == expected
    # byte for byte the same database: the same audit chain head, every row the same
    head = "SELECT hash FROM audit_log ORDER BY seq DESC LIMIT 1"
    assert before.db.execute(head).fetchone() == after.db.execute(head).fetchone()
    assert verify(before.db).ok and verify(after.db).ok


@pytest.mark.parametrize("restart_at", [1, 5, 9])
def test_a_restarted_recorder_reads_back_the_coil_it_did_not_see_whole(tmp_path: Path, restart_at: int) -> None:
    """Nothing recorded is lost with a killed recorder: its successor keeps only what it committed,
    finds that short of the coil and finalises from a read of it, to the same result as a successor
    that reads every coil (and, but for the order its coils are finalised in, as a recorder never killed)."""
    store, events, _ = _record(tmp_path / "read.db", keep_coil_rows=False, restart_at=restart_at)
    restarted, restarted_events, recorder = _record(tmp_path / "kept.db", keep_coil_rows=True, restart_at=restart_at)
    assert recorder.stats.coils_read_back >= 1  # the coil it came into the middle of
    expected, got = _outcome(store, events), _outcome(restarted, restarted_events)
    assert got == expected
    head = "SELECT hash FROM audit_log ORDER BY seq DESC LIMIT 1"
    assert store.db.execute(head).fetchone() == restarted.db.execute(head).fetchone()
    never_killed = _outcome(*_record(tmp_path / "whole.db", keep_coil_rows=True)[:2])
    for key in ("grades", "queue", "alarms", "counts", "links"):
        assert sorted(got[key], key=repr) == sorted(never_killed[key], key=repr), key
    assert verify(restarted.db).ok


def test_kept_rows_are_handed_out_only_when_they_are_the_whole_coil(tmp_path: Path) -> None:
    store = Store(tmp_path / "line.db")
    store.register_line(LINE, "hot", 1600.0, CAMERAS)
    messages = coil_messages("C-9", length_m=10, defects_per_frame=3.0, seed=1)
    head = [m for m in messages if not isinstance(m, CoilEvent)]
    kept = CoilRows()
    assert kept.rows(store.db, "C-9") == []  # nothing recorded, nothing kept: an empty coil
    store.apply_batch(head[:4])  # recorded by someone else (a predecessor): not kept here
    assert kept.rows(store.db, "C-9") is None
    kept.add(store.apply_batch(head[4:], want_rows=True).stored_rows)
    assert kept.rows(store.db, "C-9") is None  # short of the coil's first frames: read it
    whole = CoilRows()
    whole.add_read(dict(zip(STORED_NAMES, r, strict=True)) for r in store.db.execute("SELECT rowid, * FROM defects"))
    assert whole.rows(store.db, "C-9") is not None
    bounded = CoilRows(max_rows=5)
    bounded.add([(i, i, "X", *(None,) * 20) for i in range(6)])
    assert "X" not in bounded  # beyond the bound the coil kept longest is forgotten (read back)


def test_the_kept_rows_read_as_the_coil_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`queries.lean_coil_defects` on a coil's rows gives `coil_defects(lean=True)`: the same rows, keys
    (in the same order), values and types, with seam-cut fragments merged, reviews and guesses."""
    store = Store(tmp_path / "line.db")
    store.register_line(LINE, "hot", 1600.0, CAMERAS)
    kept = CoilRows()
    messages = _messages()
    for k in range(0, len(messages), 25):
        kept.add(store.apply_batch(messages[k:k + 25], want_rows=True).stored_rows)
    first = [i for (i,) in store.db.execute("SELECT id FROM defects WHERE coil='C-2' ORDER BY id LIMIT 2")]
    store.add_review(first[0], "ann", "reject")
    store.add_review(first[1], "ann", "relabel", new_class="patches")
    plain = []
    real_plain = queries._plain_dict
    monkeypatch.setattr(queries, "_plain_dict", lambda row: (plain.append(row[0]), real_plain(row))[1])
    for coil in ("C-1", "C-2", "C-3"):
        read = queries.coil_defects(store.db, coil, lean=True)
        rows = kept.rows(store.db, coil)
        assert rows is not None
        got = queries.lean_coil_defects(store.db, coil, rows)
        assert got == read and [list(r) for r in got] == [list(r) for r in read]
        assert [[type(v) for v in r.values()] for r in got] == [[type(v) for v in r.values()] for r in read]
    # C-3 (no links, reviews or unknown defects) took the one-display path, the others the general one
    assert plain and set(plain) == {r[0] for r in kept.rows(store.db, "C-3") or []}
    merged = queries.lean_coil_defects(store.db, "C-2", kept.rows(store.db, "C-2") or [])
    assert any(len(r["parts"]) > 1 for r in merged) and any("guesses" in r for r in merged)
    assert {r["review_status"] for r in merged} >= {"rejected", "relabelled", "unreviewed"}
