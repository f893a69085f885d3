"""The cheap first stage: find regions of a frame that may hold a defect.

Running the network on every pixel of a hot strip (40 Mpx/s per surface) does not fit two
CPU cores; most of the strip is defect-free. This stage looks at a downsampled frame, takes
away the local background (uneven brightness, slow shading) with a box filter, and marks
pixels that stand out from the frame's own noise level by `k_sigma` robust standard
deviations. Connected marks become candidate regions; only model tiles touching a candidate
go to the network. What it costs in missed defects is measured by `steel-inspect bench e2e`
(detection rate with and without this stage), never assumed.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class CandidateSettings:
    """Knobs of the first stage; the defaults suit 1 mm/px hot strip and 0.25 mm/px cold strip."""

    scale: int = 4  # downsampling factor before analysis
    background_px: int = 15  # box-filter size for the local background, in downsampled px
    k_sigma: float = 4.0  # threshold in robust noise units
    min_contrast: float = 6.0  # grey levels: never flag less than this, even on a very clean strip
    min_area_px: int = 3  # smallest blob kept, in downsampled px
    margin_px: int = 16  # grown around each region, in full-resolution px

    def __post_init__(self) -> None:
        if self.scale < 1 or self.background_px < 3 or self.background_px % 2 == 0:
            raise ValueError(
                f"candidate settings: expected scale >= 1 and an odd background_px >= 3, "
                f"got scale={self.scale}, background_px={self.background_px}"
            )


def find_candidates(image: np.ndarray, settings: CandidateSettings = CandidateSettings()) -> np.ndarray:
    """Candidate regions (x1, y1, x2, y2 rows, full-resolution px) of a 2-D grey image."""
    if image.ndim != 2:
        raise ValueError(f"find_candidates: expected a 2-D image, got shape {image.shape}")
    h, w = image.shape
    s = settings.scale
    if s > 1:
        image = cv2.resize(image, (max(1, w // s), max(1, h // s)), interpolation=cv2.INTER_AREA)
    small = image.astype(np.float32)
    background = cv2.blur(small, (settings.background_px, settings.background_px))
    diff = cv2.absdiff(small, background)
    # Median absolute deviation of a subsample: robust to the defects themselves, and cheap.
    noise = float(np.median(diff[::3, ::3])) * 1.4826
    threshold = max(settings.k_sigma * noise, settings.min_contrast)
    mask = (diff > threshold).astype(np.uint8)
    mask = cv2.dilate(mask, np.ones((3, 3), np.uint8))
    count, _, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    keep = stats[1:, cv2.CC_STAT_AREA] >= settings.min_area_px
    stats = stats[1:][keep]
    if len(stats) == 0:
        return np.zeros((0, 4), np.float32)
    x1 = stats[:, cv2.CC_STAT_LEFT] * s - settings.margin_px
    y1 = stats[:, cv2.CC_STAT_TOP] * s - settings.margin_px
    x2 = (stats[:, cv2.CC_STAT_LEFT] + stats[:, cv2.CC_STAT_WIDTH]) * s + settings.margin_px
    y2 = (stats[:, cv2.CC_STAT_TOP] + stats[:, cv2.CC_STAT_HEIGHT]) * s + settings.margin_px
    boxes = np.stack([x1, y1, x2, y2], axis=1).astype(np.float32)
    boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, w)
    boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, h)
    return boxes
