"""Real `dataset export` folders for tests: defects recorded into a real line database with the worker's
own crops, reviewed through the records API, exported by `export_reviewed`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from inspection.frame import CoilEvent, StreamKey
from inspection.frame_inspector import crop_png
from inspection.records.crops import CropStore
from inspection.records.dataset_export import export_reviewed
from inspection.records.db import open_db
from inspection.records.store import Store
from inspection.results import Defect, FrameResult

MARGIN = 16
NEU = ("crazing", "inclusion", "patches", "pitted_surface", "rolled-in_scale", "scratches")
# Review = (action, new class or None); one defect per review, side by side in one frame per coil.
Review = tuple[str, str | None]


def record_reviews(folder: Path, coils: Mapping[str, Sequence[Review]], line_type: str = "hot",
                   detected_as: str = "inclusion") -> Path:
    """A line database in `folder` with one frame per coil holding one defect per review, reviewed so."""
    db_path, crops = folder / "line.db", CropStore(folder / "crops")
    source = StreamKey(line=f"demo-{line_type}-1", line_type=line_type, camera="top-1", surface="top")
    rng = np.random.default_rng(len(coils))
    t0 = 1_763_900_000 * 10**9
    with Store(db_path, crops=crops) as store:
        store.register_line(source.line, line_type, 1600.0, [{"id": "top-1", "surface": "top", "width_px": 512}])
        for n, (coil, reviews) in enumerate(coils.items()):
            image = rng.integers(0, 256, (256, 512), dtype=np.uint8)
            boxes = [(20.0 + 80 * i, 60.0, 60.0 + 80 * i, 100.0) for i in range(len(reviews))]  # apart: own crops
            defects = tuple(Defect(cls=detected_as, score=0.8, severity=2, box=b, along_mm=b[1], across_mm=b[0],
                                   length_mm=40.0, width_mm=40.0, area_mm2=1600.0, crop_png=crop_png(image, b, MARGIN))
                            for b in boxes)
            t = t0 + n * 10**9
            store.apply_batch([CoilEvent("coil_start", source, coil, 0, t),
                               FrameResult(source, coil, 1, 0, t, 0.0, 256.0, "hot-test-1", "ab" * 32, t + 5,
                                           defects)])
            ids = [r[0] for r in store.db.execute("SELECT id FROM defects WHERE coil=? ORDER BY defect_index",
                                                  (coil,))]
            for defect_id, (action, new_class) in zip(ids, reviews, strict=True):
                store.add_review(defect_id, "anna", action, new_class=new_class)
    return db_path


def export(db_path: Path, out: Path, line_type: str = "hot", **kwargs: object) -> Path:
    """`export_reviewed` of the database written by `record_reviews` into `out`."""
    db = open_db(db_path, readonly=True)
    try:
        export_reviewed(db, CropStore(db_path.parent / "crops"), out, line_type=line_type, known_classes=NEU,
                        crop_margin_px=MARGIN, database_name=str(db_path), **kwargs)  # type: ignore[arg-type]
    finally:
        db.close()
    return out
