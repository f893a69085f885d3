"""Training targets (numpy) and losses (torch) for the TTFNet-style heads of `training.model`.

Targets per image, on the output grid (cell (i, j) sits at pixel ((j + 0.5) * s, (i + 0.5) * s)):
- ``heat`` [C, h, w]: an elliptical Gaussian per box around the cell holding its centre, peak 1,
  sigma = ALPHA * box side / 6 (TTFNet), max over boxes of one class;
- ``box`` [4, h, w] and ``weight`` [h, w]: every cell inside a box's (narrower) Gaussian regresses
  that box, weighted by the Gaussian, normalised per box and scaled by log(area) so large boxes
  do not drown small ones; where boxes overlap the smaller box wins;
- ``spread`` [h, w]: the Gaussians of outlier shapes (`training.outliers`), which regress their box
  like a defect but teach every class the same middling score (`spread_loss`) instead of a peak.
"""

from __future__ import annotations

import numpy as np

ALPHA = 0.54
BETA = 0.54
SPREAD_MIN = 0.05  # an outlier shape's cells: its Gaussian above this (left out of the focal loss's negatives)


def _gaussian(h: int, w: int, cx: int, cy: int, sx: float, sy: float) -> np.ndarray:
    ys = np.arange(h, dtype=np.float32)[:, None] - cy
    xs = np.arange(w, dtype=np.float32)[None, :] - cx
    return np.exp(-(xs * xs) / (2 * sx * sx) - (ys * ys) / (2 * sy * sy))


def make_targets(boxes: np.ndarray, labels: np.ndarray, num_classes: int, size: tuple[int, int],
                 stride: int, outliers: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """boxes float [n, 4] in pixels, labels int [n]; size (w, h) of the input (multiple of stride);
    outliers float [m, 4]: boxes of drawn shapes of no class (`training.outliers`)."""
    w, h = size[0] // stride, size[1] // stride
    heat = np.zeros((num_classes, h, w), np.float32)
    box = np.zeros((4, h, w), np.float32)
    weight = np.zeros((h, w), np.float32)
    spread = np.zeros((h, w), np.float32)
    image = np.zeros(num_classes, np.float32)
    if outliers is not None and len(outliers):
        boxes = np.concatenate([np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(outliers, np.float32)])
        labels = np.concatenate([np.asarray(labels, np.int64), np.full(len(outliers), -1, np.int64)])
    if len(boxes):
        areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        for k in np.argsort(-areas):  # large first, so smaller boxes overwrite shared cells
            x1, y1, x2, y2 = boxes[k]
            bw, bh = (x2 - x1) / stride, (y2 - y1) / stride
            cx = min(int((x1 + x2) / 2 / stride), w - 1)
            cy = min(int((y1 + y2) / 2 / stride), h - 1)
            g = _gaussian(h, w, cx, cy, max(ALPHA * bw / 6, 0.3), max(ALPHA * bh / 6, 0.3))
            if labels[k] < 0:  # an outlier shape: no class's peak, one spread target
                spread = np.maximum(spread, g)
            else:
                heat[labels[k]] = np.maximum(heat[labels[k]], g)
                heat[labels[k], cy, cx] = 1.0
            gb = _gaussian(h, w, cx, cy, max(BETA * bw / 6, 0.3), max(BETA * bh / 6, 0.3))
            # only cells whose centre lies inside the box may regress it
            jx = (np.arange(w) + 0.5) * stride
            iy = (np.arange(h) + 0.5) * stride
            inside = ((iy[:, None] > y1) & (iy[:, None] < y2)) & ((jx[None, :] > x1) & (jx[None, :] < x2))
            gb = np.where(inside, gb, 0.0)
            gb[cy, cx] = max(gb[cy, cx], 1.0)
            cells = gb > 0.01
            gb = gb / gb[cells].sum() * np.log(max(areas[k], 2.0))
            box[:, cells] = np.array([x1, y1, x2, y2], np.float32)[:, None]
            weight[cells] = gb[cells]
            if labels[k] >= 0:
                image[labels[k]] = 1.0
    return {"heat": heat, "box": box, "weight": weight, "spread": spread, "image": image}


def focal_loss(logits, target, ignore=None):  # noqa: ANN001, ANN201 - torch tensors
    """CenterNet's penalty-reduced focal loss on heatmap logits, normalised by the object count.

    `ignore` [N, h, w] (bool): cells left out of the negative term (an outlier shape's, which
    `spread_loss` trains instead)."""
    import torch
    import torch.nn.functional as F

    pred = torch.sigmoid(logits).clamp(1e-4, 1 - 1e-4)
    pos = target.eq(1).float()
    neg = 1 - pos
    if ignore is not None:
        neg = neg * (~ignore)[:, None].float()
    pos_loss = -F.logsigmoid(logits) * (1 - pred) ** 2 * pos
    neg_loss = -F.logsigmoid(-logits) * pred ** 2 * (1 - target) ** 4 * neg
    return (pos_loss.sum() + neg_loss.sum()) / pos.sum().clamp(min=1.0)


def spread_loss(logits, spread, score: float):  # noqa: ANN001, ANN201 - torch tensors
    """At an outlier shape's cells (`spread` > SPREAD_MIN), every class's score towards `score`
    times the shape's Gaussian (binary cross-entropy, weighted by the Gaussian): a peak the decoder
    finds, whose class share is 1 / C. Zero (with a graph) when the batch has no shape."""
    import torch.nn.functional as F

    cells = spread > SPREAD_MIN
    if not bool(cells.any()):
        return logits.sum() * 0.0
    target = (score * spread)[:, None].expand_as(logits)
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none").mean(dim=1)
    wts = spread * cells.float()
    return (bce * wts).sum() / wts.sum()


def giou_loss(dist, box_target, weight, stride: int):  # noqa: ANN001, ANN201 - torch tensors
    """Weighted GIoU loss of boxes decoded from the distances [N, 4, h, w] at weighted cells."""
    import torch

    n, _, h, w = dist.shape
    mask = weight > 0
    if not bool(mask.any()):
        return dist.sum() * 0.0
    ys = (torch.arange(h, dtype=torch.float32) + 0.5) * stride
    xs = (torch.arange(w, dtype=torch.float32) + 0.5) * stride
    cy, cx = torch.meshgrid(ys, xs, indexing="ij")
    cx, cy = cx.expand(n, h, w)[mask], cy.expand(n, h, w)[mask]
    d = dist.permute(0, 2, 3, 1)[mask]  # [m, 4]
    pred = torch.stack([cx - d[:, 0], cy - d[:, 1], cx + d[:, 2], cy + d[:, 3]], dim=1)
    gt = box_target.permute(0, 2, 3, 1)[mask]
    wts = weight[mask]
    lt = torch.max(pred[:, :2], gt[:, :2])
    rb = torch.min(pred[:, 2:], gt[:, 2:])
    inter = (rb - lt).clamp(min=0).prod(dim=1)
    area_p = (pred[:, 2:] - pred[:, :2]).prod(dim=1)
    area_g = (gt[:, 2:] - gt[:, :2]).prod(dim=1)
    union = area_p + area_g - inter
    iou = inter / union.clamp(min=1e-6)
    hull = (torch.max(pred[:, 2:], gt[:, 2:]) - torch.min(pred[:, :2], gt[:, :2])).prod(dim=1)
    giou = iou - (hull - union) / hull.clamp(min=1e-6)
    return ((1 - giou) * wts).sum() / wts.sum().clamp(min=1e-4)
