"""A tiny NEU-DET-shaped dataset written by the tests themselves (no real images needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from inspection.datasets import DATASET_CLASSES


def write_tiny_neu(root: Path, rng: np.random.Generator, count: int = 12, min_xy: int = 4) -> Path:
    """`root/neu-det` with `count` 64x64 images of the first two NEU classes, each holding one 20-px
    dark or bright square at x, y in [min_xy, 30) with its VOC box."""
    import cv2

    folder = root / "neu-det"
    (folder / "images").mkdir(parents=True)
    (folder / "annotations").mkdir()
    classes = DATASET_CLASSES["neu-det"]
    for i in range(count):
        cls = classes[i % 2]
        image = rng.normal(100, 8, (64, 64)).clip(0, 255).astype(np.uint8)
        x, y = int(rng.integers(min_xy, 30)), int(rng.integers(min_xy, 30))
        image[y:y + 20, x:x + 20] = 200 if i % 2 else 30
        name = f"{cls}_{i}"
        cv2.imwrite(str(folder / "images" / f"{name}.jpg"), image)
        (folder / "annotations" / f"{name}.xml").write_text(
            f"<annotation><size><width>64</width><height>64</height></size><object><name>{cls}</name>"
            f"<bndbox><xmin>{x}</xmin><ymin>{y}</ymin><xmax>{x + 20}</xmax><ymax>{y + 20}</ymax></bndbox>"
            "</object></annotation>")
    return folder
