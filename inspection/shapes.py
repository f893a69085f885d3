"""Fixed input shapes for the GPU: model windows rounded up to a few sizes, batches padded to one size.

The first stage hands the detector windows of many shapes (128-px steps from 256 px up to the whole
frame) in batches of any size. On a GPU every new input shape costs: TensorRT builds an engine for
a shape outside its optimisation profile, cuDNN's exhaustive search re-tunes its convolutions. So on
a GPU each window is padded (bottom and right, replicate border, like the size-multiple padding on
the CPU: box coordinates need no shift) to the smallest bucket side that holds it, each batch is
padded to `batch` images, and one TensorRT profile spans every bucket. Padding is not free: the
model sees replicated border where the CPU saw none (`bench gpu` measures it on the CPU,
`cpu_bucket_control`: fp32 NEU-DET val images padded from 224 to 256 px kept 0.90 of their
detections), so the default sides follow the first stage's 128-px window steps: windows up to
512 px are not padded at all. A window larger than the
largest side is cut into views of that side that overlap by a quarter of it, and what the views
found is merged back into one set of detections (`merge_views`, the frame inspector's rule).

Sides stay at or below 2048 px: an fp16 engine keeps box maths to within half a pixel up to 1024
px and one pixel up to 2048 px (fp16 has 11 significant bits); beyond that boxes would step by 2 px.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from inspection.errors import SteelInspectError
from inspection.tiling import Tile, merge_boxes, tile_grid

MAX_SIDE = 2048
DEFAULT_SIDES = (256, 384, 512)  # the first stage sizes windows in 128-px steps from 256: exact up to 512
DEFAULT_BATCH = 16


class ShapeError(SteelInspectError, ValueError):
    """Shape buckets are invalid: sides not ascending, too large, or not a multiple the model needs."""


@dataclass(frozen=True)
class ShapeBuckets:
    """Window sides (px, ascending) and the fixed batch the GPU runs."""

    sides: tuple[int, ...] = DEFAULT_SIDES
    batch: int = DEFAULT_BATCH
    always: bool = False  # bucket on the CPU too (tests, and the CPU control of `bench gpu`)

    def __post_init__(self) -> None:
        sides = tuple(self.sides)
        if (not sides or any(isinstance(s, bool) or not isinstance(s, int) or not 0 < s <= MAX_SIDE for s in sides)
                or list(sides) != sorted(set(sides))):
            raise ShapeError(f"shape buckets: expected ascending distinct sides in 1..{MAX_SIDE} px, "
                             f"got {self.sides!r}")
        if isinstance(self.batch, bool) or not isinstance(self.batch, int) or self.batch < 1:
            raise ShapeError(f"shape buckets: expected a batch >= 1, got {self.batch!r}")
        object.__setattr__(self, "sides", sides)

    @property
    def largest(self) -> int:
        return self.sides[-1]

    @property
    def shapes(self) -> list[tuple[int, int]]:
        """Every (height, width) an input can have, largest first (the profile's optimum)."""
        return sorted(itertools.product(self.sides, self.sides), key=lambda s: (-s[0] * s[1], s))

    def side(self, length: int) -> int | None:
        """The smallest side that holds `length` px, or None when it is longer than the largest."""
        return next((s for s in self.sides if s >= length), None)

    def shape_for(self, height: int, width: int) -> tuple[int, int] | None:
        h, w = self.side(height), self.side(width)
        return (h, w) if h is not None and w is not None else None

    def split(self, height: int, width: int) -> list[Tile]:
        """Views of at most the largest side covering a larger image, overlapping by a quarter of it."""
        return tile_grid(width, height, self.largest, self.largest // 4)

    def check_multiple(self, multiple: int) -> None:
        bad = [s for s in self.sides if s % multiple]
        if bad:
            raise ShapeError(f"shape buckets: sides {bad} are not multiples of the model's size_multiple {multiple}")

    def trt_profile(self, input_name: str) -> dict[str, str]:
        """One explicit TensorRT optimisation profile over every bucket: batch 1..`batch`, sides from
        the smallest to the largest, tuned at the full batch of the largest bucket. (The provider takes
        several profiles per input too; one spanning profile needs no choice of profile at run time.)"""
        low, high = self.sides[0], self.largest

        def shape(n: int, side: int) -> str:
            return f"{input_name}:{n}x1x{side}x{side}"

        return {"trt_profile_min_shapes": shape(1, low), "trt_profile_opt_shapes": shape(self.batch, high),
                "trt_profile_max_shapes": shape(self.batch, high)}


def pad_to(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """`image` grown to height x width at its bottom and right edges (replicate border)."""
    bottom, right = height - image.shape[0], width - image.shape[1]
    if bottom == 0 and right == 0:
        return image
    return cv2.copyMakeBorder(image, 0, bottom, 0, right, cv2.BORDER_REPLICATE)


def merge_views(tiles: list[Tile], found: list[Any], height: int, width: int, edge_px: float = 2.0
                ) -> dict[str, np.ndarray | None]:
    """One set of detections from the views of a large image: boxes moved to image pixels and merged
    where two views saw the same defect (`tiling.merge_boxes` with views and cut edges, as the
    frame inspector merges its windows). `found` holds each view's `Detections`; the result holds the
    fields of one `Detections` (the per-detection extras of each merged box's best member)."""
    parts: dict[str, list[np.ndarray]] = {"boxes": [], "scores": [], "labels": [], "views": [], "cut": []}
    extras: dict[str, list[np.ndarray]] = {"class_scores": [], "novelty": [], "unknown": []}
    for index, (tile, det) in enumerate(zip(tiles, found, strict=True)):
        boxes = det.boxes + np.array([tile.x, tile.y, tile.x, tile.y], np.float32)
        x1, y1, x2, y2 = tile.box
        parts["boxes"].append(boxes)
        parts["scores"].append(det.scores)
        parts["labels"].append(det.labels)
        parts["views"].append(np.full(len(det), index))
        parts["cut"].append(((boxes[:, 0] <= x1 + edge_px) & (x1 > 0)) | ((boxes[:, 1] <= y1 + edge_px) & (y1 > 0))
                            | ((boxes[:, 2] >= x2 - edge_px) & (x2 < width))
                            | ((boxes[:, 3] >= y2 - edge_px) & (y2 < height)))
        for name in extras:
            if getattr(det, name) is not None:
                extras[name].append(getattr(det, name))
    flat = {k: np.concatenate(v) for k, v in parts.items()}
    boxes, scores, labels, best = merge_boxes(flat["boxes"], flat["scores"], flat["labels"], views=flat["views"],
                                              cut=flat["cut"], best=True)
    out: dict[str, np.ndarray | None] = {"boxes": boxes.astype(np.float32), "scores": scores.astype(np.float32),
                                         "labels": labels.astype(np.int64)}
    for name, values in extras.items():
        out[name] = np.concatenate(values)[best] if len(values) == len(tiles) else None
    return out
