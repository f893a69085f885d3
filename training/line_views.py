"""Line views: training defects pasted into strip background, the way the running line shows them.

A dataset image is a defect with a little of its own strip around it. On the line the model sees
the same defect inside a model window (256 to 512 px) of whatever strip surrounds it, often cut by
the window's edge. `steel-inspect bench e2e --explain` measured what that costs (hot-20261123-3,
150 frames per camera, test-split defects): of 258 whole pasted defects the model found 0.868 in
their dataset images, 0.798 when the pasted patch was cut back out of the simulated strip, and
the line 0.667; inclusions (0.82 -> 0.62 -> 0.44) and rolled-in scale (0.88 -> 0.74 -> 0.55) fell
most, and most of what the line missed was detected, but below the operating threshold.

A line view is one training sample built the line's way: the sample's geometric augmentation
(flips, scale), then its labelled boxes, dilated and feathered, blended into a window of
defect-free strip texture after matching brightness to the local background, at a position that
may put part of the defect outside the window (boxes clipped, or dropped when too little of them
remains, as in `training.augment.scale_and_crop`), then the photometric augmentation.

The blend follows the simulator's (`cameras.defects.paste`) but with a random dilation, feather
and brightness offset per view, so the model cannot learn one blend's edge. The backgrounds are
the negative pool's textures (seed family `training.negatives.TRAIN_FAMILY`), never the
simulator's runtime streams, and the defects are train-split images only.

Torch-free (numpy + OpenCV).
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from training.augment import AugmentConfig, Boxes, hflip, photometric, vflip
from training.negatives import NegativePool

MIN_VISIBLE = 0.4  # share of a box's area that must stay in the window for it to keep its label
MIN_SIDE = 2.0


class LineViews:
    """Paste augmented training defects into strip-texture windows (see the module docstring)."""

    def __init__(self, pool: NegativePool, cfg: AugmentConfig, dilation_px: tuple[int, int] = (4, 16),
                 feather_px: tuple[float, float] = (2.0, 8.0), level_jitter: float = 6.0,
                 outside_share: float = 0.25) -> None:
        self.pool, self.cfg = pool, cfg
        self.dilation_px, self.feather_px = dilation_px, feather_px
        self.level_jitter, self.outside_share = level_jitter, outside_share

    def describe(self) -> dict[str, Any]:
        return {"background": self.pool.describe()["source"], "dilation_px": list(self.dilation_px),
                "feather_px": list(self.feather_px), "level_jitter": self.level_jitter,
                "outside_share": self.outside_share}

    def item(self, image: np.ndarray, boxes: Boxes, labels: np.ndarray,
             rng: np.random.Generator) -> tuple[np.ndarray, Boxes, np.ndarray]:
        """One `cfg.out_size` view of the sample pasted into strip texture; boxes in view pixels."""
        cfg = self.cfg
        if rng.random() < cfg.flip_h:
            image, boxes = hflip(image, boxes)
        if rng.random() < cfg.flip_v:
            image, boxes = vflip(image, boxes)
        scale = float(np.exp(rng.uniform(*np.log(cfg.scale))))
        if scale != 1.0:
            h, w = image.shape
            nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
            image = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_LINEAR)
            boxes = boxes * np.array([nw / w, nh / h, nw / w, nh / h], np.float32)
        view = self._background(rng)
        x, y = self._position(image.shape, view.shape, rng)
        self._blend(view, image, boxes, x, y, rng)
        out_boxes, out_labels = _visible(boxes + np.array([x, y, x, y], np.float32), labels, view.shape)
        return photometric(view, cfg, rng), out_boxes, out_labels

    def _background(self, rng: np.random.Generator) -> np.ndarray:
        ow, oh = self.cfg.out_size
        tile = self.pool.tile(rng)
        if tile.shape[0] < oh or tile.shape[1] < ow:  # the pool's textures are frame-sized: never for real sizes
            tile = cv2.resize(tile, (max(ow, tile.shape[1]), max(oh, tile.shape[0])))
        x = int(rng.integers(0, tile.shape[1] - ow + 1))
        y = int(rng.integers(0, tile.shape[0] - oh + 1))
        return np.array(tile[y:y + oh, x:x + ow], dtype=np.uint8)

    def _position(self, patch_shape: tuple[int, ...], view_shape: tuple[int, ...],
                  rng: np.random.Generator) -> tuple[int, int]:
        """Top-left of the patch in the view; up to `outside_share` of the patch may lie outside."""
        out = []
        for patch_side, view_side in ((patch_shape[1], view_shape[1]), (patch_shape[0], view_shape[0])):
            slack = int(patch_side * self.outside_share)
            low, high = min(0, view_side - patch_side) - slack, max(0, view_side - patch_side) + slack
            out.append(int(rng.integers(low, high + 1)))
        return out[0], out[1]

    def _blend(self, view: np.ndarray, patch: np.ndarray, boxes: Boxes, x: int, y: int,
               rng: np.random.Generator) -> None:
        ph, pw = patch.shape
        vh, vw = view.shape
        x1, y1, x2, y2 = max(0, x), max(0, y), min(vw, x + pw), min(vh, y + ph)
        if x2 <= x1 or y2 <= y1:
            return
        alpha = _alpha(ph, pw, boxes, int(rng.integers(self.dilation_px[0], self.dilation_px[1] + 1)),
                       float(rng.uniform(*self.feather_px)))
        src = patch[y1 - y:y2 - y, x1 - x:x2 - x].astype(np.float32)
        a = alpha[y1 - y:y2 - y, x1 - x:x2 - x]
        region = view[y1:y2, x1:x2].astype(np.float32)
        shift = float(np.median(region)) - float(np.median(patch)) + float(rng.normal(0, self.level_jitter))
        view[y1:y2, x1:x2] = np.clip(region + a * (src + shift - region) + 0.5, 0, 255).astype(np.uint8)


def _alpha(h: int, w: int, boxes: Boxes, dilation: int, feather: float) -> np.ndarray:
    """1 over the dilated boxes, Gaussian-feathered, faded at the patch's own border."""
    mask = np.zeros((h, w), np.float32)
    for bx1, by1, bx2, by2 in boxes.tolist():
        mask[max(0, int(by1) - dilation):int(np.ceil(by2)) + dilation,
             max(0, int(bx1) - dilation):int(np.ceil(bx2)) + dilation] = 1.0
    alpha = cv2.GaussianBlur(mask, (0, 0), feather)
    ramp_x = np.minimum(np.arange(1, w + 1), np.arange(w, 0, -1))[None, :].astype(np.float32)
    ramp_y = np.minimum(np.arange(1, h + 1), np.arange(h, 0, -1))[:, None].astype(np.float32)
    return alpha * np.clip(np.minimum(ramp_x, ramp_y) / (2 * feather), 0, 1)


def _visible(boxes: Boxes, labels: np.ndarray, view_shape: tuple[int, ...]) -> tuple[Boxes, np.ndarray]:
    """Boxes clipped to the view; those with too little left inside are dropped with their labels."""
    vh, vw = view_shape
    clipped = np.clip(boxes, 0, [vw, vh, vw, vh]).astype(np.float32)
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    kept = (clipped[:, 2] - clipped[:, 0]) * (clipped[:, 3] - clipped[:, 1])
    keep = ((kept >= MIN_VISIBLE * np.maximum(area, 1e-6)) & (clipped[:, 2] - clipped[:, 0] >= MIN_SIDE)
            & (clipped[:, 3] - clipped[:, 1] >= MIN_SIDE))
    return clipped[keep].reshape(-1, 4), labels[keep]
