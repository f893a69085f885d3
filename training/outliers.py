"""Outlier exposure: shapes of no class drawn into training images, taught as "a defect, class unclear".

The unknown rule (`training.unknown`) has two signals, and on the other line type's defects neither
reaches one half at its budget (README, "What the unknown rule's two signals carry"): the detector was
only ever taught to be sure. With `train --outliers SHARE`, that share of the training crops gets one
procedurally drawn shape, away from every labelled box, and the heads learn, at the shape's cells, a
box (the shape's bounding box) and the same middling score for every class (`SPREAD_SCORE` times the
target Gaussian, `training.targets.spread_loss`): found, but with a class share of 1 / C, which is
what the rule's class-share limit calls `unknown`.

The shapes are geometric on purpose (filled and outlined polygons and rectangles, crosses, gratings,
checkers) and none is drawn after a defect type of either dataset: no discs or rings (cold strip's
punching), no lines or strokes (scratches, linear marks), no soft blobs (patches, oil spots). The
unseen-type figure is measured on the cold set's classes, so shapes modelled on them would spoil it.
Torch-free (numpy + OpenCV).
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np

SPREAD_SCORE = 0.4  # every class's target score at a shape's centre: above the operating thresholds
SIDE_PX = (16, 72)  # longer side of a shape's box in the training crop
CONTRAST = (35.0, 80.0)  # grey levels between a shape and the strip under it
PLACEMENT_TRIES = 12
SUPERSAMPLE = 4  # shapes are drawn 4x larger and shrunk, so their edges are anti-aliased


def _polygon(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    """An irregular filled polygon of 3 to 6 corners (few corners: never a disc)."""
    n = int(rng.integers(3, 7))
    angles = np.sort(rng.uniform(0, 2 * np.pi, n))
    radius = rng.uniform(0.55, 1.0, n)
    pts = np.stack([w / 2 + np.cos(angles) * radius * w / 2, h / 2 + np.sin(angles) * radius * h / 2], 1)
    mask = np.zeros((h, w), np.uint8)
    cv2.fillPoly(mask, [np.round(pts).astype(np.int32)], 255)
    return mask


def _rectangle(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    """A filled rectangle, or its outline."""
    mask = np.zeros((h, w), np.uint8)
    thickness = -1 if rng.random() < 0.5 else max(SUPERSAMPLE, int(min(w, h) * rng.uniform(0.08, 0.2)))
    cv2.rectangle(mask, (0, 0), (w - 1, h - 1), 255, thickness)
    return mask


def _cross(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    """Two bars crossing at the middle (a plus)."""
    mask = np.zeros((h, w), np.uint8)
    tx, ty = max(SUPERSAMPLE, int(w * rng.uniform(0.15, 0.35))), max(SUPERSAMPLE, int(h * rng.uniform(0.15, 0.35)))
    mask[(h - ty) // 2:(h + ty) // 2, :] = 255
    mask[:, (w - tx) // 2:(w + tx) // 2] = 255
    return mask


def _grating(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    """A rectangle of stripes across or along the strip (3 to 6 periods)."""
    periods = rng.uniform(3, 6)
    along = rng.random() < 0.5
    coord = np.arange(h if along else w, dtype=np.float32) / (h if along else w)
    wave = (np.sin(2 * np.pi * periods * coord) > 0).astype(np.uint8) * 255
    return np.ascontiguousarray(np.broadcast_to(wave[:, None] if along else wave[None, :], (h, w)))


def _checker(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    """A rectangle of 2 to 5 checker squares per side."""
    n = int(rng.integers(2, 6))
    ys = (np.arange(h) * n // h)[:, None]
    xs = (np.arange(w) * n // w)[None, :]
    return (((ys + xs) % 2) * 255).astype(np.uint8)


SHAPES: dict[str, Callable[[np.random.Generator, int, int], np.ndarray]] = {
    "polygon": _polygon, "rectangle": _rectangle, "cross": _cross, "grating": _grating, "checker": _checker}


def draw_shape(rng: np.random.Generator, w: int, h: int, kind: str | None = None) -> np.ndarray:
    """Coverage float32 [h, w] in 0..1 of one shape filling a w x h box, anti-aliased."""
    if w < 1 or h < 1:
        raise ValueError(f"shape box: expected a positive size, got {w} x {h}")
    kind = kind or str(rng.choice(sorted(SHAPES)))
    if kind not in SHAPES:
        raise ValueError(f"shape kind: expected one of {sorted(SHAPES)}, got {kind!r}")
    big = SHAPES[kind](rng, w * SUPERSAMPLE, h * SUPERSAMPLE)
    return cv2.resize(big, (w, h), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0


def _overlaps(box: np.ndarray, boxes: np.ndarray, margin: float) -> bool:
    if not len(boxes):
        return False
    return bool(np.any((boxes[:, 0] < box[2] + margin) & (boxes[:, 2] > box[0] - margin)
                       & (boxes[:, 1] < box[3] + margin) & (boxes[:, 3] > box[1] - margin)))


def paste_outlier(image: np.ndarray, boxes: np.ndarray, rng: np.random.Generator,
                  margin: float = 4.0) -> tuple[np.ndarray, np.ndarray | None]:
    """`image` (uint8 [H, W]) with one shape drawn where it touches no box of `boxes` (float [n, 4],
    `margin` pixels apart), and the shape's bounding box float32 [4]; the image unchanged and None
    when no free place was found (a crop full of defect)."""
    if image.dtype != np.uint8 or image.ndim != 2:
        raise ValueError(f"outlier canvas: expected a uint8 [H, W] image, got {image.dtype} {image.shape}")
    height, width = image.shape
    side = int(rng.integers(SIDE_PX[0], SIDE_PX[1] + 1))
    aspect = rng.uniform(0.4, 1.0)
    w, h = (side, max(SIDE_PX[0] // 2, round(side * aspect)))
    if rng.random() < 0.5:
        w, h = h, w
    if w >= width or h >= height:
        return image, None
    for _ in range(PLACEMENT_TRIES):
        x, y = int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1))
        box = np.array([x, y, x + w, y + h], np.float32)
        if _overlaps(box, boxes, margin):
            continue
        coverage = draw_shape(rng, w, h)
        contrast = rng.uniform(*CONTRAST) * (1.0 if rng.random() < 0.5 else -1.0)
        # a little texture inside the shape, so it is not a flat stamp
        texture = 1.0 + 0.2 * rng.standard_normal((h, w)).astype(np.float32)
        out = image.astype(np.float32)
        out[y:y + h, x:x + w] += coverage * contrast * texture
        # the box to learn is the shape's own extent (a thin triangle leaves much of its box empty)
        rows, cols = np.nonzero(coverage > 0.25)
        if len(rows):
            box = np.array([x + cols.min(), y + rows.min(), x + cols.max() + 1, y + rows.max() + 1], np.float32)
        return np.clip(np.rint(out), 0, 255).astype(np.uint8), box
    return image, None
