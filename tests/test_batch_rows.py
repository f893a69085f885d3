"""`Store.apply_batch`'s positional defect rows (`records.batch_rows`): every value in the column
of its name, the guesses of unknown defects keyed to their defect, duplicates still ignored."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from inspection.frame import StreamKey
from inspection.records.audit import verify
from inspection.records.batch_rows import DEFECT_COLUMNS
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
