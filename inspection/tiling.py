"""Cut frames into overlapping model tiles, and merge what tiles (or frames) found twice.

Frames from a line-scan camera (e.g. 4096 x 1024 px) are larger than what a model was
trained on. They are covered by a regular grid of equal tiles that overlap by at least the
size of a typical defect, so every defect lies wholly inside at least one tile; equal tiles
batch well on a GPU. The same defect seen in two tiles (or at the edge of two consecutive
frames) is then merged into one box.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Tile:
    """A tile's top-left corner in the frame and its size, in pixels."""

    x: int
    y: int
    width: int
    height: int

    @property
    def box(self) -> tuple[int, int, int, int]:
        return (self.x, self.y, self.x + self.width, self.y + self.height)


def _starts(length: int, tile: int, overlap: int) -> list[int]:
    if length <= tile:
        return [0]
    stride = tile - overlap
    starts = list(range(0, length - tile, stride))
    starts.append(length - tile)  # the last tile ends exactly at the border
    return starts


def tile_grid(width: int, height: int, tile: int, overlap: int) -> list[Tile]:
    """Equal tiles covering a width x height image, overlapping by at least `overlap` px.

    A side shorter than `tile` gets one tile of that side's length.
    """
    if tile <= 0 or not 0 <= overlap < tile:
        raise ValueError(f"tile grid: expected tile > 0 and 0 <= overlap < tile, got {tile}, {overlap}")
    tw, th = min(tile, width), min(tile, height)
    return [Tile(x, y, tw, th) for y in _starts(height, tile, overlap) for x in _starts(width, tile, overlap)]


def tiles_touching(tiles: list[Tile], regions: np.ndarray) -> list[Tile]:
    """The tiles that intersect any region (x1, y1, x2, y2 rows), in grid order."""
    if len(regions) == 0:
        return []
    regions = np.asarray(regions, dtype=np.float32).reshape(-1, 4)
    chosen = []
    for t in tiles:
        x1, y1, x2, y2 = t.box
        hit = (regions[:, 0] < x2) & (regions[:, 2] > x1) & (regions[:, 1] < y2) & (regions[:, 3] > y1)
        if hit.any():
            chosen.append(t)
    return chosen


def _union_overlapping(boxes: list[list[float]]) -> list[list[float]]:
    """Replace boxes that intersect by their union until none intersect (transitively)."""
    merged = True
    while merged:
        merged = False
        out: list[list[float]] = []
        for box in boxes:
            for other in out:
                if box[0] < other[2] and other[0] < box[2] and box[1] < other[3] and other[1] < box[3]:
                    other[:] = [min(box[0], other[0]), min(box[1], other[1]), max(box[2], other[2]),
                                max(box[3], other[3])]
                    merged = True
                    break
            else:
                out.append(list(box))
        boxes = out
    return boxes


WINDOW_STEP_PX = 128  # window sides are multiples of this (or the frame's side): few shapes (`cpu_runs`)


def _window_side(start: float, end: float, limit: int, min_px: int, step_px: int) -> tuple[int, int]:
    """A window side covering start..end: at least `min_px`, rounded up to `step_px`, inside 0..limit."""
    size = min(limit, max(min_px, -(-int(np.ceil(end - start)) // step_px) * step_px))
    first = int(round((start + end - size) / 2))
    first = max(0, min(first, limit - size))
    return first, size


def windows_around(regions: np.ndarray, width: int, height: int, *, context_px: int = 64, min_px: int = 256,
                   step_px: int = WINDOW_STEP_PX) -> list[Tile]:
    """Model windows around candidate regions (x1, y1, x2, y2 rows, frame px), instead of grid tiles.

    Each region is grown by `context_px` on every side (the model needs some strip around a
    defect, and a cheap region may underestimate the defect's extent); regions whose grown boxes
    touch become one window; each side is at least `min_px` (about the size the model was trained
    on), rounded up to `step_px` so windows share a few shapes and batch together, centred on the
    region and kept inside the frame. A flagged 64 px cell then costs the model 256 x 256 px
    instead of up to four overlapping 512 px grid tiles.
    """
    if context_px < 0 or min_px < 1 or step_px < 1:
        raise ValueError(f"windows: expected context_px >= 0, min_px >= 1, step_px >= 1, got {context_px}, "
                         f"{min_px}, {step_px}")
    regions = np.asarray(regions, dtype=np.float32).reshape(-1, 4)
    grown = [[max(0.0, x1 - context_px), max(0.0, y1 - context_px), min(float(width), x2 + context_px),
              min(float(height), y2 + context_px)] for x1, y1, x2, y2 in regions.tolist()]
    windows = []
    for x1, y1, x2, y2 in _union_overlapping([b for b in grown if b[2] > b[0] and b[3] > b[1]]):
        x, w = _window_side(x1, x2, width, min_px, step_px)
        y, h = _window_side(y1, y2, height, min_px, step_px)
        windows.append(Tile(x, y, w, h))
    return sorted(windows, key=lambda t: (t.y, t.x))


def _intersections(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Intersection area of every box in `a` [n, 4] with every box in `b` [m, 4], and both areas."""
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    return inter, (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1]), (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box in `a` [n, 4] with every box in `b` [m, 4] (x1, y1, x2, y2) -> [n, m]."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    inter, area_a, area_b = _intersections(a, b)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def _overlap_matrix(boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pairwise IoU and intersection over the smaller box."""
    inter, area, _ = _intersections(boxes, boxes)
    union = area[:, None] + area[None, :] - inter
    iou = np.where(union > 0, inter / np.maximum(union, 1e-9), 0.0)
    smaller = np.minimum(area[:, None], area[None, :])
    iomin = np.where(smaller > 0, inter / np.maximum(smaller, 1e-9), 0.0)
    return iou, iomin


def merge_boxes(
    boxes: np.ndarray,
    scores: np.ndarray,
    labels: np.ndarray,
    *,
    iou: float = 0.3,
    containment: float = 0.6,
    touch_px: float = 0.0,
    views: np.ndarray | None = None,
    cut: np.ndarray | None = None,
    best: bool = False,
) -> tuple[np.ndarray, ...]:
    """Merge boxes of the same class that are one defect seen twice.

    Two boxes of one class merge when their IoU >= `iou`, when one lies mostly inside the
    other (intersection / smaller area >= `containment`: a tile that saw only part of a
    defect), or, when `touch_px` > 0, when they come within `touch_px` of each other (the
    halves of a defect cut by a frame seam). Merged
    boxes take the union extent and the highest score. Groups are transitive (union-find).

    With `views` (the model view, tile or window, each box came from), only boxes of different
    views merge: inside one view the model has already decided how many defects it sees, and
    merging there joined neighbouring defects into one box (`bench e2e --explain`, "merged
    away"). With `cut` as well (the box touches an edge of its view that is not the frame's),
    containment alone links a pair only when the smaller box is cut: a defect the view saw in
    part, not a small defect beside a large one.
    Returns (boxes, scores, labels), highest score first; with `best`, a fourth array holds the
    input index of each output box's highest-scoring member (whose class and details it keeps).
    """
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    scores = np.asarray(scores, dtype=np.float32).reshape(-1)
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    n = len(boxes)
    if n <= 1:
        return (boxes, scores, labels, np.arange(n)) if best else (boxes, scores, labels)
    grown = boxes + np.array([-touch_px, -touch_px, touch_px, touch_px], dtype=np.float32) / 2
    iou_m, iomin_m = _overlap_matrix(grown)
    same = labels[:, None] == labels[None, :]
    contained = iomin_m >= containment
    if cut is not None:
        area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        smaller_is_i = area[:, None] <= area[None, :]
        cut = np.asarray(cut, dtype=bool).reshape(-1)
        contained &= np.where(smaller_is_i, cut[:, None], cut[None, :])
    link = same & ((iou_m >= iou) | contained)
    if touch_px > 0:
        link |= same & (iomin_m > 0)
    if views is not None:
        views = np.asarray(views).reshape(-1)
        link &= views[:, None] != views[None, :]
    parent = list(range(n))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j in zip(*np.nonzero(np.triu(link, k=1)), strict=True):
        parent[find(int(i))] = find(int(j))
    groups: dict[int, list[int]] = {}
    for i in range(n):
        groups.setdefault(find(i), []).append(i)
    out_boxes, out_scores, out_best = [], [], []
    for members in groups.values():
        m = np.array(members)
        out_boxes.append([boxes[m, 0].min(), boxes[m, 1].min(), boxes[m, 2].max(), boxes[m, 3].max()])
        out_scores.append(scores[m].max())
        out_best.append(int(m[np.argmax(scores[m])]))
    order = np.argsort(-np.array(out_scores), kind="stable")
    chosen = np.array(out_best, dtype=np.int64)[order]
    merged = (np.array(out_boxes, dtype=np.float32)[order], np.array(out_scores, dtype=np.float32)[order],
              labels[chosen])
    return (*merged, chosen) if best else merged


def suppress_other_classes(boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray, *, iou: float,
                           containment: float = 0.0) -> np.ndarray:
    """Indices of the boxes kept when one defect carries boxes of several classes.

    The model's own NMS works per class, so one defect can come out as a box of each class it
    half-resembles (`bench e2e --explain`: "other_class" records, a false defect each, and a wrong
    class whenever the wrong box fits the defect better). Going down the scores, a box is dropped
    when a kept box of another class overlaps it at IoU >= `iou` (<= 0: off) or, with
    `containment` > 0, covers at least that share of its area. Boxes of one class are left alone:
    the model's NMS, chosen on val, decided those are separate defects (suppressing them too lost
    hot defects lying side by side, `merged_away`). Returns kept indices in the input order.
    """
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    n = len(boxes)
    if n <= 1 or (iou <= 0 and containment <= 0):
        return np.arange(n)
    iou_m, iomin_m = _overlap_matrix(boxes)
    overlaps = iou_m >= iou if iou > 0 else np.zeros((n, n), dtype=bool)
    if containment > 0:
        # share of box j covered by box i: the intersection (iomin x the smaller area) over j's area
        area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        inter = iomin_m * np.minimum(area[:, None], area[None, :])
        overlaps |= inter / np.maximum(area[None, :], 1e-9) >= containment
    labels = np.asarray(labels).reshape(-1)
    overlaps &= labels[:, None] != labels[None, :]
    alive = np.ones(n, dtype=bool)
    for j in np.argsort(-np.asarray(scores, dtype=np.float32).reshape(-1), kind="stable"):
        if alive[j]:  # kept: what it overlaps goes (greedy NMS, one row per kept box)
            alive &= ~overlaps[j]
            alive[j] = True
    return np.flatnonzero(alive)


def suppress_nested(boxes: np.ndarray, labels: np.ndarray, *, containment: float | np.ndarray) -> np.ndarray:
    """Indices of the boxes kept when a box lies inside a larger box of its own class.

    The model can mark one defect twice: a box over the whole of a textured area (crazing, rolled-in
    scale) and a smaller one on its strongest part (`bench e2e --explain`: most "duplicate" records on
    hot strip lie 80 % or more inside the record that matched the defect). Going from the largest box
    down, a box of the same class covering at least `containment` of a smaller box's area drops it
    (<= 0: off); the larger box keeps its own score and class. `containment` may be an array indexed
    by label, a share per class (<= 0 for a class: its boxes are all kept). Returns kept indices in
    input order.
    """
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    n = len(boxes)
    labels = np.asarray(labels).reshape(-1)
    share = (np.asarray(containment, dtype=np.float32)[labels] if np.ndim(containment)
             else np.full(n, containment, dtype=np.float32))
    if n <= 1 or not (share > 0).any():
        return np.arange(n)
    inter, area, _ = _intersections(boxes, boxes)
    # covers[i, j]: box i holds at least box j's class share of box j, both of one class, i the larger
    covers = (inter / np.maximum(area[None, :], 1e-9) >= share[None, :]) & (share[None, :] > 0)
    covers &= labels[:, None] == labels[None, :]
    covers &= area[:, None] > area[None, :]
    alive = np.ones(n, dtype=bool)
    for i in np.argsort(-area, kind="stable"):
        if alive[i]:
            alive &= ~covers[i]
    return np.flatnonzero(alive)
