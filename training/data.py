"""Training batches: images held in memory, augmented per step, with targets on the output grid.

With a `NegativePool`, each epoch also holds `negatives` defect-free tiles (indices after the
defect images in the shuffled order); their targets are empty: no heat, no box cells, no label.
With `LineViews` and `line_share` > 0, that share of the defect images is shown as a line view
(the defects pasted into strip texture, see `training.line_views`) instead of the plain augmentation.
With `mosaic_share` > 0, that share of the other defect images is shown as a mosaic of four
(`training.augment.mosaic`: the image and three others drawn at random, at the native scale).
With `outlier_share` > 0, that share of all crops (negatives too) gets one shape of no class drawn
away from its boxes (`training.outliers`), with a ``spread`` target instead of a class peak.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch

from inspection.datasets import Sample, read_image
from training.augment import AugmentConfig, augment, mosaic, pad_to
from training.line_views import LineViews
from training.negatives import NegativePool
from training.outliers import paste_outlier
from training.targets import make_targets


def padded_size(height: int, width: int, multiple: int = 32) -> tuple[int, int]:
    """(w, h) rounded up to `multiple`, as the runtime pads before inference."""
    return -(-width // multiple) * multiple, -(-height // multiple) * multiple


class TrainBatches:
    """Shuffled, augmented batches for one epoch at a time; reproducible from (seed, epoch)."""

    def __init__(self, samples: Sequence[Sample], classes: Sequence[str], augment_cfg: AugmentConfig,
                 stride: int, batch_size: int, negative_pool: NegativePool | None = None,
                 negatives: int = 0, line_views: LineViews | None = None, line_share: float = 0.0,
                 mosaic_share: float = 0.0, outlier_share: float = 0.0) -> None:
        if not 0.0 <= outlier_share <= 1.0:
            raise ValueError(f"outlier_share: expected a share in 0..1, got {outlier_share}")
        self.outlier_share = outlier_share
        if not 0.0 <= line_share <= 1.0:
            raise ValueError(f"line_share: expected a share in 0..1, got {line_share}")
        if not 0.0 <= mosaic_share <= 1.0:
            raise ValueError(f"mosaic_share: expected a share in 0..1, got {mosaic_share}")
        self.mosaic_share = mosaic_share
        self.line_views = line_views
        self.line_share = line_share if line_views is not None else 0.0
        self.images = [read_image(s.image_path) for s in samples]
        self.negative_pool = negative_pool
        self.negatives = negatives if negative_pool is not None else 0
        index = {c: i for i, c in enumerate(classes)}
        self.boxes = [s.boxes.astype(np.float32) for s in samples]
        self.labels = [np.array([index[n] for n in s.labels], np.int64) for s in samples]
        self.num_classes, self.cfg, self.stride, self.batch_size = len(classes), augment_cfg, stride, batch_size

    def __len__(self) -> int:
        return (len(self.images) + self.negatives) // self.batch_size  # drop the ragged last batch (BatchNorm)

    def epoch(self, seed: int, epoch: int) -> Iterator[dict[str, torch.Tensor]]:
        rng = np.random.default_rng([seed, epoch])
        order = rng.permutation(len(self.images) + self.negatives)
        for b in range(len(self)):
            items = [self.item(int(i), rng) for i in order[b * self.batch_size:(b + 1) * self.batch_size]]
            yield {k: torch.from_numpy(np.stack([it[k] for it in items])) for k in items[0]}

    def item(self, i: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        if i >= len(self.images):  # a defect-free negative
            image = self.negative_pool.item(rng)  # type: ignore[union-attr]
            boxes, labels = np.zeros((0, 4), np.float32), np.zeros(0, np.int64)
        elif self.line_share and rng.random() < self.line_share:
            image, boxes, labels = self.line_views.item(  # type: ignore[union-attr]
                self.images[i], self.boxes[i], self.labels[i], rng)
        elif self.mosaic_share and len(self.images) >= 4 and rng.random() < self.mosaic_share:
            others = rng.choice(len(self.images) - 1, 3, replace=False)
            picks = [i, *(int(j) + (j >= i) for j in others)]  # three distinct images other than i
            image, boxes, labels = mosaic([(self.images[j], self.boxes[j], self.labels[j]) for j in picks],
                                          self.cfg, rng)
        else:
            image, boxes, labels = augment(self.images[i], self.boxes[i], self.labels[i], self.cfg, rng)
        outlier = None
        if self.outlier_share and rng.random() < self.outlier_share:  # no draw when off: old runs replay
            image, outlier = paste_outlier(image, boxes, rng)
        targets = make_targets(boxes, labels, self.num_classes, self.cfg.out_size, self.stride,
                               None if outlier is None else outlier[None])
        targets["image_in"] = image[None]
        return targets


def eval_batches(images: Sequence[np.ndarray], batch_size: int,
                 multiple: int = 32) -> Iterator[tuple[list[int], torch.Tensor]]:
    """(indices, uint8 [n, 1, H, W]) of same-size images, replicate-padded like the runtime."""
    by_shape: dict[tuple[int, int], list[int]] = {}
    for i, im in enumerate(images):
        by_shape.setdefault(im.shape, []).append(i)
    for (h, w), idx in by_shape.items():
        size = padded_size(h, w, multiple)
        for start in range(0, len(idx), batch_size):
            chunk = idx[start:start + batch_size]
            batch = np.stack([pad_to(images[i], size) for i in chunk])[:, None]
            yield chunk, torch.from_numpy(batch)
