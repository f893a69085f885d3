"""`Store.apply_batch`'s positional defect rows (`records.batch_rows`): every value in the column
of its name, the guesses of unknown defects keyed to their defect, duplicates still ignored."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from inspection.frame import StreamKey
from inspection.records import batch_rows
from inspection.records.audit import digest_rows, verify
from inspection.records.batch_rows import DEFECT_COLUMNS, STORED_NAMES, as_stored
from inspection.records.crops import CropStore
from inspection.records.store import Store
from inspection.results import Defect, FrameResult
from inspection.testing.synthetic import TEST_MODEL, coil_messages, crop_png

CAMERAS = [{"id": "top-1", "surface": "top"}, {"id": "bottom-1", "surface": "bottom"}]


def _store(tmp_path: Path) -> Store:
    store = Store(tmp_path / "line.db", crops=CropStore(tmp_path / "crops"))
    store.register_line("demo-hot-1", "hot", 1600.0, CAMERAS)
    return store


def test_every_value_lands_in_the_column_of_its_name(tmp_path: Path) -> None:
    store = _store(tmp_path)
    messages = coil_messages("C-1", length_m=6, defects_per_frame=4, seed=5, crops=True)
    unknown = Defect("unknown", 0.4, 2, (1, 2.5, 30, 40.0), 1234.5, -3, 38.0, 29.0, 900,
                     crop_png=crop_png(np.random.default_rng(1)), guesses=(("patches", 0.4), ("inclusion", 0.31)))
    extra = FrameResult(StreamKey("demo-hot-1", "hot", "top-1", "top"), "C-1", 99, 98, 10**18, 98 * 1024.0, 1024.0,
                        TEST_MODEL[0], TEST_MODEL[1], 10**18 + 5, (unknown,))
    result = store.apply_batch([*messages, extra])
    frames = [m for m in [*messages, extra] if isinstance(m, FrameResult)]
    sent = {(m.coil, m.source.camera, m.index, i): (m, d) for m in frames for i, d in enumerate(m.defects)}
    assert result.new_defects == len(sent) > 20
    cur = store.db.execute(f"SELECT {', '.join(f'[{c}]' for c in DEFECT_COLUMNS)}, id FROM defects")
    for row in cur.fetchall():
        got = dict(zip([*DEFECT_COLUMNS, "id"], row, strict=True))
        m, d = sent[(got["coil"], got["camera"], got["frame_index"], got["defect_index"])]
        model = store.db.execute("SELECT version, sha256 FROM models WHERE id = ?", (got["model_id"],)).fetchone()
        assert tuple(model) == TEST_MODEL
        assert (got["surface"], got["frame_seq"], got["captured_ns"]) == (m.source.surface, m.seq, m.captured_ns)
        assert (got["x1"], got["y1"], got["x2"], got["y2"]) == d.box
        assert (got["along_mm"], got["across_mm"], got["length_mm"], got["width_mm"], got["area_mm2"]) == (
            d.along_mm, d.across_mm, d.length_mm, d.width_mm, d.area_mm2)
        assert (got["class"], got["score"], got["severity"]) == (d.cls, d.score, d.severity)
        assert store.crops.get(got["crop_sha256"]) == d.crop_png
        assert isinstance(got["x1"], float) and isinstance(got["across_mm"], float)  # REAL columns, ints sent
        if d.guesses:
            stored = store.db.execute("SELECT coil, guesses FROM defect_guesses WHERE defect_id = ?",
                                      (got["id"],)).fetchone()
            assert tuple(stored) == ("C-1", '[["patches",0.4],["inclusion",0.31]]')
    assert store.db.execute("SELECT count(*) FROM defect_guesses").fetchone()[0] == 1
    again = store.apply_batch([*messages, extra])  # re-sent: nothing added, every defect a duplicate
    assert again.new_defects == 0 and again.duplicate_defects == len(sent)
    assert verify(store.db).ok


def _frame(index: int, defects: tuple[Defect, ...]) -> FrameResult:
    return FrameResult(StreamKey("demo-hot-1", "hot", "top-1", "top"), "C-2", index, index, 10**18 + index,
                       index * 1024.0, 1024.0, TEST_MODEL[0], TEST_MODEL[1], 10**18 + index + 5, defects)


def test_the_digest_of_the_rows_as_built_is_the_digest_of_the_rows_stored(tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """The batch's defects are digested as built, not read back: ints in REAL columns, -0.0 (stored as
    0.0), a float severity (stored as an int) hash as SQLite stores them (`audit verify` re-reads them)."""
    store = _store(tmp_path)
    read_back: list[str] = []
    real = store._new_rows
    monkeypatch.setattr(store, "_new_rows", lambda table, *a, **k: (read_back.append(table), real(table, *a, **k))[1])
    odd = (Defect("scratches", 1, 2.0, (0, -0.0, 3, 4), 0, -0.0, 0, 0, 0),  # type: ignore[arg-type]
           Defect("patches", 0.5, 3, (1.5, 2, 3.5, 4), 10**17, -1e-300, 1e300, 5e-324, 12.0))
    result = store.apply_batch([_frame(0, odd), *coil_messages("C-3", length_m=4, defects_per_frame=3, seed=1)],
                               want_rows=True)
    assert "defects" not in read_back and result.new_defects > 2
    entry = json.loads(store.db.execute("SELECT event FROM audit_log WHERE kind = 'batch'").fetchone()[0])["rows"]
    first, last, n, sha = entry["defects"]
    assert (n, sha) == digest_rows(store.db, "defects", first, last)
    stored = store.db.execute("SELECT rowid, * FROM defects ORDER BY rowid").fetchall()
    as_read = [dict(zip(STORED_NAMES, r, strict=True)) for r in stored]
    assert as_read == result.defect_rows  # the recorder's rows (events, alarms), as a read would give them
    assert [list(map(type, d.values())) for d in as_read] == [list(map(type, d.values())) for d in result.defect_rows]
    assert stored[0][-4] == 2 and type(stored[0][-4]) is int  # severity 2.0 sent
    assert math.copysign(1.0, stored[0][9]) == 1.0  # across -0.0 sent, 0.0 stored
    assert verify(store.db).ok


def test_rows_of_other_types_are_read_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A value SQLite would not hand back as it is (a numpy float here) makes the batch read its rows back."""
    store = _store(tmp_path)
    read_back: list[str] = []
    real = store._new_rows
    monkeypatch.setattr(store, "_new_rows", lambda table, *a, **k: (read_back.append(table), real(table, *a, **k))[1])
    numpy_along = Defect("scratches", 0.9, 2, (0, 1, 3, 4), np.float64(250.0), 7.0, 3, 4, 12)
    result = store.apply_batch([_frame(0, (numpy_along,))], want_rows=True)
    assert "defects" in read_back and result.new_defects == 1
    assert type(result.defect_rows[0]["along_mm"]) is float
    assert verify(store.db).ok


def test_as_stored_refuses_rows_it_cannot_vouch_for() -> None:
    def row(rowid: int, captured: object = 5) -> tuple:
        return (rowid, rowid, "C", "top", "top-1", 1, 1, 0, 1.0, 2.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0, "x", 0.5, 2, 1,
                None, captured)

    assert as_stored([row(11), row(12)], 2, 12) == [row(11), row(12)]
    assert as_stored([row(11), row(12)], 1, 12) is None  # one of them ignored (a duplicate)
    assert as_stored([row(11)], 1, 12) is None  # not at the rowid expected
    assert as_stored([row(11, True)], 1, 11) is None  # a bool is stored as 1


def test_a_batch_recorded_from_its_rows_as_built_is_recorded_as_one_read_back(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The rows as built (digest, seam candidates, class counts, the recorder's rows) against the
    rows read back (as_stored refusing every batch): the same database, row for row, and the same
    audit chain, with seam-cut fragments, unknown defects and interleaved coils."""
    from tests.test_records_coil_rows import CAMERAS as LINE_CAMERAS
    from tests.test_records_coil_rows import LINE, _messages

    messages = _messages()
    outcomes = []
    for name in ("read", "built"):
        if name == "read":
            monkeypatch.setattr(batch_rows, "as_stored", lambda *a, **k: None)
        else:
            monkeypatch.undo()
        store = Store(tmp_path / f"{name}.db", clock=iter(range(10**18, 10**18 + 10**7, 1000)).__next__)
        store.register_line(LINE, "hot", 1600.0, LINE_CAMERAS)
        results = [store.apply_batch(messages[k:k + 30], want_rows=True) for k in range(0, len(messages), 30)]
        assert all(bool(r.stored_rows) == (name == "built") for r in results if r.new_defects)
        tables = ("defects", "defect_links", "defect_guesses", "frames", "coil_class_counts", "audit_log")
        outcomes.append({t: store.db.execute(f"SELECT * FROM {t} ORDER BY rowid").fetchall() for t in tables}
                        | {"rows": [r.defect_rows for r in results]})
        assert verify(store.db).ok
        store.close()
    assert outcomes[0] == outcomes[1]
    assert outcomes[0]["defect_links"] and len(outcomes[0]["coil_class_counts"]) > 20
