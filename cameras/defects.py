"""Defects for the simulator: real labelled images from the public datasets, pasted into frames.

`DatasetDefects` draws samples from a named split (``test`` by default, so the pipeline is
measured on images no model trained on) of the line type's dataset (hot: neu-det, cold:
cr7-det). Each sample's boxes become the ground truth: pixels map 1:1 (neu-det 200x200 and
cr7-det 400x400 are both at their native scale). Where the datasets are absent,
`ProceduralDefects` draws scratches, spots and scale patches instead and says so.

`paste` blends only the labelled box regions (dilated, with soft edges) onto the strip
background, after shifting the sample's brightness to the local background, so the defect
keeps its own contrast and texture while the square outline of the sample image disappears.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

from inspection.errors import SourceError

log = logging.getLogger(__name__)

PROCEDURAL_CLASSES = {
    "hot": ("scratches", "patches", "pitted_surface"),
    "cold": ("linear", "oil spots", "pits"),
}
_FEATHER_PX = 4.0


@dataclass(frozen=True, eq=False)
class DefectPatch:
    """An image to paste and its labelled boxes (x1, y1, x2, y2 in patch pixels)."""

    image: np.ndarray
    boxes: np.ndarray
    labels: tuple[str, ...]
    image_file: str
    dataset: str | None
    split: str | None
    source: str  # "dataset" | "procedural"


class DatasetDefects:
    """Samples of one split of the line type's dataset, read lazily and cached."""

    source = "dataset"

    def __init__(self, datasets_dir: Path, line_type: str, split: str) -> None:
        from inspection.datasets import LINE_DATASETS, load_split, read_image

        self.dataset = LINE_DATASETS[line_type]
        self.split = split
        self.samples = [s for s in load_split(Path(datasets_dir), self.dataset, split) if len(s.labels)]
        if not self.samples:
            raise SourceError(f"{datasets_dir}: split {split!r} of {self.dataset} has no labelled images")
        self._read = lru_cache(maxsize=256)(read_image)

    def sample(self, rng: np.random.Generator) -> DefectPatch:
        s = self.samples[int(rng.integers(len(self.samples)))]
        return DefectPatch(
            self._read(s.image_path),
            s.boxes.astype(np.float32),
            tuple(s.labels),
            s.image_path.name,
            self.dataset,
            self.split,
            "dataset",
        )


class ProceduralDefects:
    """Drawn stand-ins (scratch, spot, scale patch) for machines without the datasets."""

    source = "procedural"

    def __init__(self, line_type: str) -> None:
        self.classes = PROCEDURAL_CLASSES[line_type]
        self.bright = line_type == "cold"

    def sample(self, rng: np.random.Generator) -> DefectPatch:
        size = int(rng.integers(96, 200))
        img = np.full((size, size), 128, np.uint8)
        kind = int(rng.integers(3))
        level = 60 if not self.bright else 90
        if kind == 0:  # a scratch along the strip, slightly slanted
            x0, x1 = (int(v) for v in rng.integers(size // 4, 3 * size // 4, 2))
            cv2.line(img, (x0, 8), (x1, size - 8), level, int(rng.integers(2, 5)), cv2.LINE_AA)
        elif kind == 1:  # a few round spots
            for _ in range(int(rng.integers(2, 6))):
                c = (int(rng.integers(20, size - 20)), int(rng.integers(20, size - 20)))
                cv2.ellipse(img, c, (int(rng.integers(4, 14)), int(rng.integers(4, 18))), 0, 0, 360, level, -1)
        else:  # a patch of scale: a blotchy dark region
            blob = cv2.GaussianBlur(rng.standard_normal((size, size)).astype(np.float32), (0, 0), 6)
            mask = blob > 0.02
            mask[:8], mask[-8:], mask[:, :8], mask[:, -8:] = False, False, False, False
            img[mask] = level
        ys, xs = np.nonzero(img != 128)
        box = np.array([[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]], np.float32)
        return DefectPatch(img, box, (self.classes[kind],), f"procedural-{kind}", None, None, "procedural")


def defect_library(datasets_dir: Path | None, line_type: str, split: str) -> DatasetDefects | ProceduralDefects:
    """Real defects when the datasets folder exists, else procedural ones (logged as a warning)."""
    from inspection.datasets import LINE_DATASETS

    if datasets_dir is not None and (Path(datasets_dir) / LINE_DATASETS[line_type] / "images").is_dir():
        library = DatasetDefects(Path(datasets_dir), line_type, split)
        log.info(
            "simulator: pasting real %s defects from the %r split (%d images) in %s",
            library.dataset,
            split,
            len(library.samples),
            datasets_dir,
        )
        return library
    log.warning(
        "simulator: datasets folder %s has no %s/images: falling back to PROCEDURAL defects; "
        "ground truth says source=procedural",
        datasets_dir,
        LINE_DATASETS[line_type],
    )
    return ProceduralDefects(line_type)


def paste(frame: np.ndarray, patch: DefectPatch, x: int, y: int) -> None:
    """Blend the patch's labelled regions into `frame` (in place) with its top-left at (x, y)."""
    h, w = patch.image.shape
    if x < 0 or y < 0 or y + h > frame.shape[0] or x + w > frame.shape[1]:
        raise SourceError(
            f"paste: a {w}x{h} patch at ({x}, {y}) does not fit a {frame.shape[1]}x{frame.shape[0]} frame"
        )
    region = frame[y : y + h, x : x + w]
    boxes = tuple(tuple(float(v) for v in box) for box in patch.boxes)
    alpha = _alpha(h, w, boxes)
    # the sample's overall median is its own background level (defects cover a minority of it)
    shift = float(np.median(region)) - float(np.median(patch.image))
    background = region.astype(np.float32)
    blended = background + alpha * (patch.image.astype(np.float32) + shift - background)
    region[...] = np.clip(blended + 0.5, 0, 255).astype(np.uint8)


@lru_cache(maxsize=1024)
def _alpha(h: int, w: int, boxes: tuple[tuple[float, ...], ...]) -> np.ndarray:
    """Blend weights of a sample: 1 over its (dilated) boxes, soft edges; cached per sample."""
    pad = int(2 * _FEATHER_PX)
    mask = np.zeros((h, w), np.float32)
    for x1, y1, x2, y2 in boxes:
        mask[max(0, int(y1) - pad) : int(np.ceil(y2)) + pad, max(0, int(x1) - pad) : int(np.ceil(x2)) + pad] = 1.0
    alpha = cv2.GaussianBlur(mask, (0, 0), _FEATHER_PX)
    # fade at the sample's own border, where boxes touch it, so no square outline shows
    ramp = np.minimum(np.arange(1, w + 1), np.arange(w, 0, -1))[None, :].astype(np.float32)
    ramp_y = np.minimum(np.arange(1, h + 1), np.arange(h, 0, -1))[:, None].astype(np.float32)
    alpha *= np.clip(np.minimum(ramp, ramp_y) / (2 * _FEATHER_PX), 0, 1)
    alpha.flags.writeable = False  # shared by every paste of this sample
    return alpha
