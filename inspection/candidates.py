"""The cheap first stage: find regions of a frame that may hold a defect.

Running the network on every pixel of a hot strip (40 Mpx/s per surface) does not fit two
CPU cores, and most of the strip is defect-free. This stage works on a 4x downsampled frame:
it removes the slow background (uneven brightness, shading) with a box filter, then cuts the
frame into cells (64 x 64 px of the frame by default) and describes each cell by three cheap
statistics: mean and standard deviation of the residual, and mean gradient magnitude. A cell
is a candidate when any statistic lies more than `k_sigma` robust standard deviations (median
absolute deviation over all cells of the frame) from the median: the strip's own texture sets
the scale, so a grainy hot strip and a smooth cold strip need no retuning. The residual's mean
is not judged in the cells along the frame's border: where the brightness has a trend, the box
filter leaves a bias there that would flag the border of every frame; the other two statistics
still cover those cells.
Neighbouring candidate cells become one region; only model tiles touching a region go to the
network. What it costs in missed defects is measured by `steel-inspect bench e2e` (detection
rate with and without this stage), never assumed.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class CandidateSettings:
    """Knobs of the first stage."""

    scale: int = 4  # downsampling factor before analysis
    cell_px: int = 16  # cell side, in downsampled px (64 px of the frame at scale 4)
    background_px: int = 31  # box-filter size for the slow background, in downsampled px
    k_sigma: float = 2.5  # threshold in robust standard deviations of the frame's cells (see `bench first_stage`)
    margin_px: int = 16  # grown around each region, in frame px

    def __post_init__(self) -> None:
        if self.scale < 1 or self.cell_px < 2 or self.background_px < 3 or self.background_px % 2 == 0:
            raise ValueError(
                f"candidate settings: expected scale >= 1, cell_px >= 2 and an odd background_px >= 3, "
                f"got scale={self.scale}, cell_px={self.cell_px}, background_px={self.background_px}"
            )


def _pool(values: np.ndarray, rows: int, cols: int, cell: int) -> np.ndarray:
    return cv2.resize(values[: rows * cell, : cols * cell], (cols, rows), interpolation=cv2.INTER_AREA)


def cell_scores(image: np.ndarray, settings: CandidateSettings = CandidateSettings()) -> np.ndarray:
    """Per cell, the largest robust z-score of its three statistics (rows x cols of cells)."""
    if image.ndim != 2:
        raise ValueError(f"find_candidates: expected a 2-D image, got shape {image.shape}")
    h, w = image.shape
    s, cell = settings.scale, settings.cell_px
    small = cv2.resize(image, (max(1, w // s), max(1, h // s)), interpolation=cv2.INTER_AREA) if s > 1 else image
    small = small.astype(np.float32)
    rows, cols = small.shape[0] // cell, small.shape[1] // cell
    if rows == 0 or cols == 0:
        return np.zeros((0, 0), np.float32)
    residual = small - cv2.blur(small, (settings.background_px, settings.background_px))
    gradient = np.abs(cv2.Sobel(small, cv2.CV_32F, 1, 0, ksize=3)) + np.abs(cv2.Sobel(small, cv2.CV_32F, 0, 1, ksize=3))
    mean = _pool(residual, rows, cols, cell)
    spread = np.sqrt(np.maximum(_pool(residual * residual, rows, cols, cell) - mean * mean, 0.0))
    edges = _pool(gradient, rows, cols, cell)
    score = np.zeros((rows, cols), np.float32)
    inner = np.zeros((rows, cols), bool)
    band = -(-(settings.background_px // 2) // cell)  # cells the filter's half-width reaches into
    inner[band:rows - band, band:cols - band] = True
    for stat, where in ((mean, inner), (spread, None), (edges, None)):
        median = float(np.median(stat))
        mad = float(np.median(np.abs(stat - median))) * 1.4826 + 1e-3
        z = np.abs(stat - median) / mad
        score = np.maximum(score, z if where is None else np.where(where, z, 0.0))
    return score


def find_candidates(image: np.ndarray, settings: CandidateSettings = CandidateSettings()) -> np.ndarray:
    """Candidate regions (x1, y1, x2, y2 rows, frame px) of a 2-D grey image."""
    score = cell_scores(image, settings)
    if score.size == 0:
        return np.zeros((0, 4), np.float32)
    flagged = (score > settings.k_sigma).astype(np.uint8)
    count, _, stats, _ = cv2.connectedComponentsWithStats(flagged, connectivity=8)
    if count <= 1:
        return np.zeros((0, 4), np.float32)
    stats = stats[1:]
    size = settings.scale * settings.cell_px
    h, w = image.shape
    boxes = np.stack([
        stats[:, cv2.CC_STAT_LEFT] * size - settings.margin_px,
        stats[:, cv2.CC_STAT_TOP] * size - settings.margin_px,
        (stats[:, cv2.CC_STAT_LEFT] + stats[:, cv2.CC_STAT_WIDTH]) * size + settings.margin_px,
        (stats[:, cv2.CC_STAT_TOP] + stats[:, cv2.CC_STAT_HEIGHT]) * size + settings.margin_px,
    ], axis=1).astype(np.float32)
    # Cells cover the frame but for a remainder at the right and bottom: a region touching the last
    # cell is extended to the frame border so that remainder is never skipped.
    last_x, last_y = (w // size) * size, (h // size) * size
    boxes[boxes[:, 2] >= last_x + settings.margin_px, 2] = w
    boxes[boxes[:, 3] >= last_y + settings.margin_px, 3] = h
    boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, w)
    boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, h)
    return boxes
