"""`dataset export`: reviewed defects become a labelled folder the dataset reader loads.

The crops are cut from a real frame by the worker's own crop function, so the test checks the
geometry end to end: the exported box, read back by `load_samples`, covers exactly the frame
pixels of the recorded defect.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from inspection.cli import main
from inspection.datasets import load_samples
from inspection.frame import CoilEvent, StreamKey
from inspection.frame_inspector import crop_png
from inspection.records.crops import CropStore
from inspection.records.dataset_export import NEGATIVE, export_reviewed
from inspection.records.db import open_db
from inspection.records.errors import StoreError
from inspection.records.store import Store
from inspection.results import UNKNOWN, Defect, FrameResult

MARGIN = 16
SOURCE = StreamKey(line="demo-hot-1", line_type="hot", camera="top-1", surface="top")
MODEL = ("hot-test-7", "ab" * 32)
# class, box in frame pixels; B overlaps A's crop, D touches the frame's corner (crop clipped at 0)
DEFECTS = {
    "A": ("inclusion", (100.0, 100.0, 140.0, 130.0)),
    "B": ("patches", (130.0, 110.0, 160.0, 150.0)),
    "C": ("scratches", (300.0, 200.0, 340.0, 260.0)),
    "D": ("crazing", (4.0, 5.0, 40.0, 30.0)),
    "E": (UNKNOWN, (400.0, 300.0, 430.0, 330.0)),
}


def _frame() -> np.ndarray:
    rng = np.random.default_rng(3)
    return rng.integers(0, 256, (400, 512), dtype=np.uint8)  # every pixel distinct enough to catch a shift


def _record(tmp_path: Path) -> tuple[Path, Path, dict[str, int], np.ndarray]:
    db_path, crops_dir = tmp_path / "line.db", tmp_path / "crops"
    image = _frame()
    defects = tuple(
        Defect(cls=cls, score=0.8, severity=2, box=box, along_mm=box[1] + 10, across_mm=box[0] + 10, length_mm=30.0,
               width_mm=30.0, area_mm2=900.0, crop_png=crop_png(image, box, MARGIN),
               guesses=(("inclusion", 0.4),) if cls == UNKNOWN else ())
        for cls, box in DEFECTS.values())
    t0 = 1_763_900_000 * 10**9
    with Store(db_path, crops=CropStore(crops_dir)) as store:
        store.register_line("demo-hot-1", "hot", 1600.0, [{"id": "top-1", "surface": "top", "width_px": 512}])
        store.apply_batch([
            CoilEvent("coil_start", SOURCE, "C-1", 0, t0),
            FrameResult(SOURCE, "C-1", 1, 0, t0, 0.0, 400.0, MODEL[0], MODEL[1], t0 + 5, defects),
        ])
        ids = dict(zip(DEFECTS, (r[0] for r in store.db.execute("SELECT id FROM defects ORDER BY id")),
                       strict=True))
        store.add_review(ids["A"], "anna", "confirm")
        store.add_review(ids["B"], "anna", "confirm")
        store.add_review(ids["B"], "ben", "relabel", new_class="scale_pickup")  # the latest review stands
        store.add_review(ids["C"], "ben", "reject", reason="roll shadow")
        store.add_review(ids["E"], "ben", "confirm")
    return db_path, crops_dir, ids, image


def _export(db_path: Path, crops_dir: Path, out: Path, **kwargs):
    db = open_db(db_path, readonly=True)
    try:
        return export_reviewed(db, CropStore(crops_dir), out, line_type="hot",
                               known_classes=("crazing", "inclusion", "patches", "pitted_surface",
                                              "rolled-in_scale", "scratches"),
                               crop_margin_px=MARGIN, database_name=str(db_path), **kwargs)
    finally:
        db.close()


def test_export_writes_reviewed_defects_with_boxes_on_the_recorded_pixels(tmp_path: Path) -> None:
    db_path, crops_dir, ids, frame = _record(tmp_path)
    out = tmp_path / "plant-hot"
    result = _export(db_path, crops_dir, out)

    assert (result.samples, result.positives, result.negatives) == (3, 2, 1)
    assert result.classes == {"inclusion": 1, "scale_pickup": 1}
    assert result.new_classes == ["scale_pickup"]
    assert result.skipped == {"confirmed as unknown: relabel it to export it": 1}

    samples = {s.name: s for s in load_samples(out)}
    assert sorted(samples) == sorted([f"inclusion_{ids['A']}.png", f"scale_pickup_{ids['B']}.png",
                                      f"{NEGATIVE}_{ids['C']}.png"])
    a = samples[f"inclusion_{ids['A']}.png"]
    # A's crop also shows B (reviewed): both are labelled, B clipped to the crop
    assert sorted(a.labels) == ["inclusion", "scale_pickup"]
    crop = cv2.imread(str(a.image_path), cv2.IMREAD_GRAYSCALE)
    own = a.boxes[a.labels.index("inclusion")]
    x1, y1, x2, y2 = (int(v) for v in own)
    fx1, fy1, fx2, fy2 = (int(v) for v in DEFECTS["A"][1])
    np.testing.assert_array_equal(crop[y1:y2, x1:x2], frame[fy1:fy2, fx1:fx2])
    negative = samples[f"{NEGATIVE}_{ids['C']}.png"]
    assert len(negative.boxes) == 0

    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["reviewers"] == ["anna", "ben"]
    assert manifest["line_type"] == "hot" and manifest["crop_margin_px"] == MARGIN
    by_file = {s["file"]: s for s in manifest["samples"]}
    b = by_file[f"images/scale_pickup_{ids['B']}.png"]
    assert (b["defect_id"], b["coil"], b["camera"], b["detected_as"], b["model_version"], b["action"],
            b["reviewer"]) == (ids["B"], "C-1", "top-1", "patches", MODEL[0], "relabel", "ben")
    assert by_file[f"images/{NEGATIVE}_{ids['C']}.png"]["negative"] is True
    # D was never reviewed: not exported
    assert all(s["defect_id"] != ids["D"] for s in manifest["samples"])
    listed = (out / "MANIFEST.sha256").read_text().splitlines()
    assert len(listed) == 1 + 2 * 3  # manifest.json, 3 images, 3 annotations


def test_export_of_a_crop_clipped_at_the_frame_edge_keeps_its_box(tmp_path: Path) -> None:
    db_path, crops_dir, ids, frame = _record(tmp_path)
    with Store(db_path, crops=CropStore(crops_dir)) as store:
        store.add_review(ids["D"], "anna", "confirm")
    out = tmp_path / "out"
    _export(db_path, crops_dir, out)
    d = {s.name: s for s in load_samples(out)}[f"crazing_{ids['D']}.png"]
    crop = cv2.imread(str(d.image_path), cv2.IMREAD_GRAYSCALE)
    x1, y1, x2, y2 = (int(v) for v in d.boxes[0])
    np.testing.assert_array_equal(crop[y1:y2, x1:x2], frame[5:30, 4:40])


def test_export_never_overwrites_and_says_what_is_missing(tmp_path: Path) -> None:
    db_path, crops_dir, ids, _ = _record(tmp_path)
    out = tmp_path / "out"
    _export(db_path, crops_dir, out)
    with pytest.raises(StoreError, match="not an empty folder"):
        _export(db_path, crops_dir, out)
    with pytest.raises(StoreError, match="no reviewed hot defects in the given time range"):
        _export(db_path, crops_dir, tmp_path / "later", since_ns=2**62)
    # a pruned crop is skipped with its reason, the rest is exported
    sha = open_db(db_path, readonly=True).execute("SELECT crop_sha256 FROM defects WHERE id=?",
                                                  (ids["A"],)).fetchone()[0]
    CropStore(crops_dir).path(sha).unlink()
    result = _export(db_path, crops_dir, tmp_path / "pruned")
    assert result.skipped["crop pruned or missing"] == 1
    assert result.samples == 2


def test_export_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db_path, crops_dir, _, _ = _record(tmp_path)
    out = tmp_path / "cli-out"
    argv = ["dataset", "export", "--line-type", "hot", "--db", str(db_path), "--crops", str(crops_dir),
            "--crop-margin", str(MARGIN), "--out", str(out), "--no-progress"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "3 samples from" in printed and "scale_pickup" in printed and "skipped 1: confirmed as unknown" in printed
    assert main(argv) == 2
    assert "not an empty folder" in capsys.readouterr().err
    assert main(["dataset", "export", "--line-type", "cold", "--db", str(db_path), "--crops", str(crops_dir),
                 "--out", str(tmp_path / "cold")]) == 2
    assert "no reviewed cold defects" in capsys.readouterr().err
