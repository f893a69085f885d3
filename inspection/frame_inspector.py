"""Turn frames into defects on the strip: first stage, tiles, model, merge, millimetres, severity.

Pure compute, no sockets: the worker process (`inspection.worker`) feeds it batches of frames
and sends what it returns to the recorder. All tiles of a batch of frames go to the model
together, so a GPU sees full batches even when each frame has only a few candidate tiles.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field

import cv2
import numpy as np

from inspection.candidates import CandidateSettings, find_candidates
from inspection.detector import UNKNOWN, Detections, Detector
from inspection.frame import Frame
from inspection.manifest import Manifest
from inspection.results import Defect
from inspection.severity import SeverityRule, severity
from inspection.tiling import (
    Tile,
    merge_boxes,
    suppress_nested,
    suppress_other_classes,
    tile_grid,
    tiles_touching,
    windows_around,
)

log = logging.getLogger(__name__)

FIRST_STAGES = ("windows", "candidates", "none")


@dataclass(frozen=True)
class InspectorSettings:
    tile_px: int = 512
    tile_overlap_px: int = 128
    # windows: model windows around what the cheap stage flags; candidates: the grid tiles touching it;
    # none: every grid tile (see `steel-inspect bench first_stage` / `bench e2e` for what each costs)
    first_stage: str = "windows"
    candidates: CandidateSettings = CandidateSettings()
    window_context_px: int = 64
    window_min_px: int = 256
    uint16_shift: int = 8  # uint16 frames are reduced to the model's 8 bits by this right shift
    crop_margin_px: int = 16
    crops: bool = True  # False: defects without crops (the shadow model cuts its own, for disagreements only)
    min_score: float | None = None  # None: the model's operating threshold
    # one class per defect, after the merge of views: a lower-scoring box of another class goes when it
    # overlaps a kept one at this IoU (0: off) or lies this much inside it (0: off); see suppress_other_classes
    other_class_iou: float = 0.3
    other_class_containment: float = 0.0
    # per line type, or per line type and class: a box this much inside a larger one of its class goes
    # (`suppress_nested`; left out: off)
    same_class_containment: Mapping[str, float | Mapping[str, float]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.first_stage not in FIRST_STAGES:
            raise ValueError(f"first_stage: expected one of {', '.join(FIRST_STAGES)}, got {self.first_stage!r}")


@dataclass(frozen=True)
class FrameInspection:
    frame: Frame
    defects: tuple[Defect, ...]
    tiles_total: int  # grid tiles of the frame
    tiles_inspected: int  # tiles (or windows) the model actually saw
    model_px: int  # pixels the model actually saw (overlaps counted twice)
    views: tuple[Tile, ...] = ()  # those tiles or windows: a second model can see the very same ones


def to_uint8(pixels: np.ndarray, uint16_shift: int) -> np.ndarray:
    if pixels.dtype == np.uint8:
        return pixels
    return np.clip(pixels >> uint16_shift, 0, 255).astype(np.uint8)


def nested_shares(setting: Mapping[str, float | Mapping[str, float]], manifest: Manifest) -> float | np.ndarray | None:
    """`same_class_containment` for `manifest`'s model: its line type's share, or an array of shares by
    class index; None: off."""
    value = setting.get(manifest.line_type, 0.0)
    if not isinstance(value, Mapping):
        return float(value) if value > 0 else None
    return _class_shares(manifest.version, manifest.classes, tuple(sorted(value.items())))


@functools.lru_cache(maxsize=16)
def _class_shares(version: str, classes: tuple[str, ...], table: tuple[tuple[str, float], ...]) -> np.ndarray | None:
    """Shares by class index, once per model and table: the worker makes a `FrameInspector` per batch, and a
    class the model lacks is logged once, not at every frame (as a line's class threshold is, at load)."""
    shares = dict(table)
    unknown = sorted(set(shares) - set(classes))
    if unknown:  # a tuning knob never stops the line
        log.warning("model %s has no class %s: the line's same_class_containment for it is not used (classes: %s)",
                    version, " or ".join(repr(c) for c in unknown), ", ".join(classes))
    by_index = np.array([float(shares.get(c, 0.0)) for c in classes], np.float32)
    return by_index if (by_index > 0).any() else None


class FrameInspector:
    """Inspect batches of frames with one detector."""

    def __init__(self, detector: Detector, settings: InspectorSettings = InspectorSettings(),
                 severity_rule: SeverityRule | None = None) -> None:
        self.detector = detector
        self.settings = settings
        self.severity_rule = severity_rule or SeverityRule()

    def plan(self, image: np.ndarray, overlap_rows: int = 0) -> tuple[list[Tile], int]:
        """The model views (windows or tiles) of one uint8 frame, and how many grid tiles it has.
        The first stage judges the whole image, overlap rows included (they give the frame's first
        new rows the context a frame's border lacks); views lying wholly in the overlap are left out:
        the previous frame inspected those rows."""
        tiles, total = self._plan(image)
        if overlap_rows:
            tiles = [t for t in tiles if t.y + t.height > overlap_rows]
        return tiles, total

    def _plan(self, image: np.ndarray) -> tuple[list[Tile], int]:
        s = self.settings
        grid = tile_grid(image.shape[1], image.shape[0], s.tile_px, s.tile_overlap_px)
        if s.first_stage == "windows":
            tiles = windows_around(find_candidates(image, s.candidates), image.shape[1], image.shape[0],
                                   context_px=s.window_context_px, min_px=min(s.window_min_px, s.tile_px))
        elif s.first_stage == "candidates":
            tiles = tiles_touching(grid, find_candidates(image, s.candidates))
        else:
            tiles = grid
        return tiles, len(grid)

    def inspect(self, frames: list[Frame], plans: list[tuple[list[Tile], int]] | None = None
                ) -> list[FrameInspection]:
        """Defects per frame; `plans` (each frame's views and grid tile count) skips the first stage,
        so a shadow model sees exactly the windows the active model saw."""
        s = self.settings
        images = [to_uint8(f.pixels, s.uint16_shift) for f in frames]
        plans = plans if plans is not None else [self.plan(image, f.overlap_rows) for f, image in zip(frames, images,
                                                                                                     strict=True)]
        crops = [image[t.y:t.y + t.height, t.x:t.x + t.width] for image, (tiles, _) in zip(images, plans, strict=True)
                 for t in tiles]
        detections = self.detector.detect(crops, min_score=s.min_score) if crops else []
        results, at = [], 0
        for frame, image, (tiles, total) in zip(frames, images, plans, strict=True):
            found = detections[at:at + len(tiles)]
            at += len(tiles)
            boxes, scores, labels, views, cut, local = view_boxes(tiles, found, image.shape)
            merged = self.merge(boxes, scores, labels, views, cut)
            if frame.overlap_rows:
                merged, image = new_rows_only(merged, image, frame.overlap_rows)
            names = [_reported(found[views[i]], local[i]) for i in merged[3]]
            defects = self._defects(frame, image, merged[:3], names)
            results.append(FrameInspection(frame, defects, total, len(tiles), sum(t.width * t.height for t in tiles),
                                           tuple(tiles)))
        return results

    def merge(self, boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray, views: np.ndarray,
              cut: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """One box per defect from what the views saw (`merge_boxes`), then one class per defect
        (`suppress_other_classes`), and no box inside a larger one of its class where the line asks
        (`suppress_nested`): boxes, scores, labels, and each box's highest-scoring input."""
        merged = merge_boxes(boxes, scores, labels, views=views, cut=cut, best=True)
        s = self.settings
        keep = suppress_other_classes(merged[0], merged[1], merged[2], iou=s.other_class_iou,
                                      containment=s.other_class_containment)
        nested = nested_shares(s.same_class_containment, self.detector.manifest)
        if nested is not None:  # None when off: no work in the frame loop then
            keep = keep[suppress_nested(merged[0][keep], merged[2][keep], containment=nested)]
        return tuple(part[keep] for part in merged)  # type: ignore[return-value]

    def _defects(self, frame: Frame, image: np.ndarray, merged: tuple[np.ndarray, ...],
                 names: list[tuple[str, tuple[tuple[str, float], ...]]]) -> tuple[Defect, ...]:
        """Defects in strip mm; `names` holds each merged box's reported class and, for `unknown`,
        the model's best guesses (from the box's highest-scoring member)."""
        defects = []
        for box, score, (cls, guesses) in zip(merged[0], merged[1], names, strict=True):
            x1, y1, x2, y2 = (float(v) for v in box)
            length = (y2 - y1) * frame.mm_per_px_y
            width = (x2 - x1) * frame.mm_per_px_x
            score = min(1.0, max(0.0, float(score)))
            defects.append(Defect(
                cls=cls, score=score,
                severity=severity(cls, length, width, length * width, score, self.severity_rule),
                box=(x1, y1, x2, y2),
                along_mm=max(0.0, frame.position_mm + (y1 + y2) / 2 * frame.mm_per_px_y),
                across_mm=frame.offset_mm + (x1 + x2) / 2 * frame.mm_per_px_x,
                length_mm=length, width_mm=width, area_mm2=length * width,
                crop_png=(crop_png(image, (x1, y1, x2, y2), self.settings.crop_margin_px) or None
                          if self.settings.crops else None),
                guesses=guesses,
            ))
        return tuple(defects)


def new_rows_only(merged: tuple[np.ndarray, ...], image: np.ndarray, overlap_rows: int
                  ) -> tuple[tuple[np.ndarray, ...], np.ndarray]:
    """A frame with `overlap_rows` repeated from the previous frame reports what lies in its new rows:
    a box whose centre lies in the overlap is the previous frame's (which saw most of it and reported
    it); any other box is cut at the seam, as if the frame had no overlap, so the two parts of a
    defect across the seam meet exactly there and the records link them (`records.seams`). Boxes and
    image are returned in the new rows' coordinates."""
    boxes = merged[0]
    keep = (boxes[:, 1] + boxes[:, 3]) / 2 >= overlap_rows
    kept = tuple(part[keep] for part in merged)
    shifted = kept[0].copy()
    shifted[:, [1, 3]] = np.maximum(shifted[:, [1, 3]] - overlap_rows, 0.0)
    return (shifted, *kept[1:]), image[overlap_rows:]


def _reported(detections: Detections, i: int) -> tuple[str, tuple[tuple[str, float], ...]]:
    """The class detection `i` is reported as, and its best guesses when that is `unknown`."""
    name = detections.class_names[i]
    if name != UNKNOWN:
        return name, ()
    return name, tuple((c, round(p, 6)) for c, p in detections.guesses(i))


def view_boxes(tiles: list[Tile], found: list[Detections], frame_shape: tuple[int, ...], edge_px: float = 2.0
               ) -> tuple[np.ndarray, ...]:
    """Every view's detections in frame pixels: boxes, scores, labels, the view index of each box,
    whether it touches (within `edge_px`) an edge of its view that is not the frame's edge, and its
    index among its view's detections."""
    height, width = frame_shape[:2]
    boxes, scores, labels, views, cut, local = [], [], [], [], [], []
    for index, (tile, det) in enumerate(zip(tiles, found, strict=True)):
        if not len(det):
            continue
        b = det.boxes + np.array([tile.x, tile.y, tile.x, tile.y], np.float32)
        boxes.append(b)
        scores.append(det.scores)
        labels.append(det.labels)
        views.append(np.full(len(det), index))
        local.append(np.arange(len(det)))
        x1, y1, x2, y2 = tile.box
        cut.append(((b[:, 0] <= x1 + edge_px) & (x1 > 0)) | ((b[:, 1] <= y1 + edge_px) & (y1 > 0))
                   | ((b[:, 2] >= x2 - edge_px) & (x2 < width)) | ((b[:, 3] >= y2 - edge_px) & (y2 < height)))
    if not boxes:
        return (np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64), np.zeros(0, np.int64),
                np.zeros(0, bool), np.zeros(0, np.int64))
    return (np.concatenate(boxes), np.concatenate(scores), np.concatenate(labels), np.concatenate(views),
            np.concatenate(cut), np.concatenate(local))


def crop_png(image: np.ndarray, box: tuple[float, float, float, float], margin: int) -> bytes:
    """The PNG crop of `box` (frame pixels) grown by `margin` and clipped to the frame (see
    `crops.crop_origin`); b"" in the one case PNG encoding cannot happen."""
    h, w = image.shape
    x1, y1 = max(0, int(box[0]) - margin), max(0, int(box[1]) - margin)
    x2, y2 = min(w, int(np.ceil(box[2])) + margin), min(h, int(np.ceil(box[3])) + margin)
    ok, png = cv2.imencode(".png", np.ascontiguousarray(image[y1:y2, x1:x2]))
    if not ok:  # cannot happen for a non-empty uint8 array; keep the defect without a crop
        return b""
    return png.tobytes()
