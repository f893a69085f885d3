"""A small but real line database for console tests, `bench console` and a first look at the console.

`python -m inspection.testing.sample_db OUT_DIR` writes OUT_DIR/line.db and OUT_DIR/crops; then
`STEEL_INSPECT_DB=OUT_DIR/line.db streamlit run app.py` shows it.

Everything is written through the records write API (`Store.apply_batch` with worker messages,
`grade_coil`, `enqueue_reviews`, `add_alarm`, the platform import), exactly as the recorder
would: coil events, inspected frames, defects with PNG crops, grades, a periodic roll mark and
MES data. Reproducible from a seed.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from inspection.frame import CoilEvent, StreamKey
from inspection.records import queries
from inspection.records.crops import CropStore
from inspection.records.periodic import Point, find_periodic
from inspection.records.platform import import_rows, synthetic_extract
from inspection.records.store import Store
from inspection.results import Defect, FrameResult
from inspection.shadow_results import Disagreement, ShadowResult

LINE = "demo-hot-1"
CLASSES = ("crazing", "inclusion", "patches", "pitted_surface", "rolled-in_scale", "scratches")
MODEL_VERSION = "hot-20261123-1"
MODEL_SHA = "ab" * 32
FRAME_MM = 1024.0
WIDTH_MM = 1600.0
T0_NS = 1_795_000_000_000_000_000  # 2026-11-18; coils 7 h apart, so several days of trends


@dataclass(frozen=True)
class SampleCoil:
    coil: str
    length_m: float
    defects: int
    periodic: bool = False


def _crop(rng: np.random.Generator, cls: str) -> bytes:
    """A 64x64 grey crop with a class-dependent mark, so crops differ visibly and by sha256."""
    image = rng.normal(120, 18, (64, 64)).clip(0, 255).astype(np.uint8)
    shade = 40 + 30 * CLASSES.index(cls) if cls in CLASSES else 60
    cv2.circle(image, (32, 32), int(rng.integers(6, 20)), shade, -1)
    ok, png = cv2.imencode(".png", image)
    if not ok:
        raise RuntimeError("PNG encoding failed")
    return png.tobytes()


def _messages(spec: SampleCoil, start_ns: int, rng: np.random.Generator) -> list:
    frames = max(1, math.ceil(spec.length_m * 1000 / FRAME_MM))
    messages: list = []
    per_frame: dict[tuple[str, int], list[Defect]] = {}
    for i in range(spec.defects):
        surface = "top" if i % 2 == 0 else "bottom"
        if spec.periodic and i < 12:  # a roll mark: same class and place across, every 2.2 m
            cls, along, across, surface = "pitted_surface", 1500.0 + 2200.0 * i, 800.0, "top"
        else:
            cls = CLASSES[int(rng.integers(len(CLASSES)))]
            along, across = float(rng.uniform(0, spec.length_m * 1000)), float(rng.uniform(20, WIDTH_MM - 20))
        size = float(min(3.0 + rng.exponential(14.0), 90.0))
        score = float(rng.uniform(0.3, 0.99))
        severity = 3 if size > 65 else 2 if size > 30 else 1
        box = (10.0, 10.0, 10.0 + size, 10.0 + size)
        defect = Defect(cls=cls, score=score, severity=severity, box=box,
                        along_mm=along, across_mm=across, length_mm=size, width_mm=size,
                        area_mm2=size * size, crop_png=_crop(rng, cls))
        per_frame.setdefault((surface, min(int(along // FRAME_MM), frames - 1)), []).append(defect)
    for surface in ("top", "bottom"):
        key = StreamKey(LINE, "hot", f"{surface}-1", surface)
        messages.append(CoilEvent("coil_start", key, spec.coil, 0, start_ns))
        for index in range(frames):
            t = start_ns + index * 200_000_000
            messages.append(FrameResult(key, spec.coil, index + 1, index, t, index * FRAME_MM, FRAME_MM,
                                        MODEL_VERSION, MODEL_SHA, t + 5_000_000,
                                        tuple(per_frame.get((surface, index), ()))))
        messages.append(CoilEvent("coil_end", key, spec.coil, frames + 1, start_ns + frames * 200_000_000,
                                  length_mm=spec.length_m * 1000, frames=frames, dropped=0))
    return messages


def build(path: Path, crops_dir: Path, coils: Sequence[SampleCoil], seed: int = 0) -> None:
    """Write `coils` into the database at `path` (created if needed), with crops in `crops_dir`."""
    rng = np.random.default_rng(seed)
    pick = random.Random(seed)
    with Store(path, crops=CropStore(crops_dir)) as store:
        store.register_line(LINE, "hot", WIDTH_MM, [{"id": "top-1", "surface": "top", "width_px": 1600,
                                                    "mm_per_px_across": 1.0, "mm_per_px_along": 1.0},
                                                   {"id": "bottom-1", "surface": "bottom", "width_px": 1600,
                                                    "mm_per_px_across": 1.0, "mm_per_px_along": 1.0}])
        for n, spec in enumerate(coils):
            messages = _messages(spec, T0_NS + n * 7 * 3_600_000_000_000, rng)
            for i in range(0, len(messages), 200):
                store.apply_batch(messages[i:i + 200])
        extract = synthetic_extract([c.coil for c in coils], "hot", seed, line=LINE, width_mm=WIDTH_MM)
        for row, spec in zip(extract, coils, strict=True):
            row["length_m"] = spec.length_m
        import_rows(store.db, [(f"item {i}", row) for i, row in enumerate(extract)], "console sample")
        for spec in coils:
            _finalise(store, spec.coil, pick.randrange(1 << 30))


def _finalise(store: Store, coil: str, seed: int) -> None:
    """What the recorder does at coil end: grade, look for periodic defects, queue reviews."""
    store.grade_coil(coil, "coil_end", force=True)
    points = [Point(d["id"], d["surface"], d["effective_class"], d["along_mm"], d["across_mm"])
              for d in queries.coil_defects(store.db, coil, include_rejected=False)]
    for finding in find_periodic(points):
        store.add_alarm("periodic", finding.message(), coil=coil, surface=finding.surface, class_=finding.cls,
                        across_mm=finding.across_mm, pitch_mm=finding.pitch_mm,
                        roll_diameter_mm=finding.roll_diameter_mm, count=finding.count,
                        details={"defect_ids": list(finding.defect_ids)})
    store.enqueue_reviews(coil, seed=seed)


def add_shadow_run(store: Store, coil: str, shadow_version: str, seed: int = 0) -> list[ShadowResult]:
    """Shadow results for every inspected frame of `coil`, written through `Store.record_shadow` as the
    recorder would: the shadow misses the first defect of every frame that has any, calls the second
    one another class, and finds one mark of its own in every third frame (crops in the store's
    shadow folder). Returns what was recorded."""
    rng = np.random.default_rng(seed)
    frames = store.db.execute("SELECT camera, frame_index, seq, captured_ns FROM frames WHERE coil = ? "
                              "AND status = 'inspected' ORDER BY camera, frame_index", (coil,)).fetchall()
    messages = []
    for camera, index, seq, captured in frames:
        defects = [d for d in queries.coil_defects(store.db, coil, merge_seams=False)
                   if d["camera"] == camera and d["frame_index"] == index]
        defects.sort(key=lambda d: d["defect_index"])
        items = []
        if defects:
            d = defects[0]
            items.append(Disagreement("active_only", (d["x1"], d["y1"], d["x2"], d["y2"]), d["along_mm"],
                                      d["across_mm"], 0.0, active_index=d["defect_index"], active_class=d["class"],
                                      active_score=d["score"], crop_png=_crop(rng, d["class"])))
        if len(defects) > 1:
            d = defects[1]
            other = CLASSES[(CLASSES.index(d["class"]) + 1) % len(CLASSES)] if d["class"] in CLASSES else CLASSES[0]
            items.append(Disagreement("other_class", (d["x1"], d["y1"], d["x2"], d["y2"]), d["along_mm"],
                                      d["across_mm"], 0.8, active_index=d["defect_index"], active_class=d["class"],
                                      active_score=d["score"], shadow_class=other, shadow_score=0.6,
                                      crop_png=_crop(rng, other)))
        if index % 3 == 0:
            items.append(Disagreement("shadow_only", (300.0, 40.0, 330.0, 70.0), index * FRAME_MM + 55.0, 315.0,
                                      0.0, shadow_class="scratches", shadow_score=0.55,
                                      crop_png=_crop(rng, "scratches")))
        surface = "top" if camera.startswith("top") else "bottom"
        messages.append(ShadowResult(StreamKey(LINE, "hot", camera, surface), coil, seq, index, captured,
                                     MODEL_VERSION, MODEL_SHA, shadow_version, "cd" * 32, 40.0,
                                     active_defects=len(defects), shadow_defects=len(defects) - (1 if defects else 0)
                                     + (index % 3 == 0), disagreements=tuple(items)))
    store.record_shadow(messages)
    return messages


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description="write a sample line database for the console")
    parser.add_argument("out", type=Path, help="folder for line.db and crops/ (must not hold a line.db yet)")
    parser.add_argument("--coils", type=int, default=12, help="number of coils (default 12)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if (args.out / "line.db").exists():
        parser.error(f"{args.out / 'line.db'} exists; choose an empty folder")
    rng = random.Random(args.seed)
    coils = [SampleCoil(f"S{args.seed:02d}{i:04d}", rng.choice((90.0, 120.0, 150.0)), rng.randint(2, 60),
                        periodic=i % 5 == 2) for i in range(args.coils)]
    build(args.out / "line.db", args.out / "crops", coils, seed=args.seed)
    print(f"wrote {len(coils)} coils to {args.out / 'line.db'}; view: "
          f"STEEL_INSPECT_DB={args.out / 'line.db'} streamlit run app.py")


if __name__ == "__main__":
    main()
