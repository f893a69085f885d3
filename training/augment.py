"""Augmentations for grayscale strip images that move the boxes with the pixels.

Strip images have a rolling direction, so only flips (no rotations) change the geometry; scale
changes stay small because the model works at the line's native pixel scale. Photometric changes
mimic what differs between lines and cameras: gain/offset, focus blur, sensor noise.
Boxes are float32 [n, 4] (x1, y1, x2, y2) in pixels where pixel k spans [k, k + 1).
Torch-free (numpy + OpenCV), so it can be tested and reused without the training stack.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

Boxes = np.ndarray


def hflip(image: np.ndarray, boxes: Boxes) -> tuple[np.ndarray, Boxes]:
    w = image.shape[1]
    out = boxes.copy()
    out[:, 0], out[:, 2] = w - boxes[:, 2], w - boxes[:, 0]
    return np.ascontiguousarray(image[:, ::-1]), out


def vflip(image: np.ndarray, boxes: Boxes) -> tuple[np.ndarray, Boxes]:
    h = image.shape[0]
    out = boxes.copy()
    out[:, 1], out[:, 3] = h - boxes[:, 3], h - boxes[:, 1]
    return np.ascontiguousarray(image[::-1]), out


def scale_and_crop(image: np.ndarray, boxes: Boxes, labels: np.ndarray, scale: float,
                   out_size: tuple[int, int], origin: tuple[int, int], min_visible: float = 0.4,
                   min_side: float = 2.0) -> tuple[np.ndarray, Boxes, np.ndarray]:
    """Resize by `scale`, then take the `out_size` (w, h) window whose top-left is `origin` (x, y)
    in the resized image; parts outside the image are filled by replicating the border.

    A box keeps its label if at least `min_visible` of its area and `min_side` pixels per side
    remain in the window; it is clipped to the window.
    """
    h, w = image.shape
    if scale != 1.0:
        nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
        image = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_LINEAR)
        sx, sy = nw / w, nh / h
        boxes = boxes * np.array([sx, sy, sx, sy], np.float32)
        h, w = nh, nw
    ow, oh = out_size
    ox, oy = origin
    top, left = max(0, -oy), max(0, -ox)
    bottom, right = max(0, oy + oh - h), max(0, ox + ow - w)
    if top or left or bottom or right:
        image = cv2.copyMakeBorder(image, top, bottom, left, right, cv2.BORDER_REPLICATE)
    crop = image[oy + top:oy + top + oh, ox + left:ox + left + ow]
    moved = boxes - np.array([ox, oy, ox, oy], np.float32)
    clipped = np.clip(moved, 0, [ow, oh, ow, oh]).astype(np.float32)
    area = (moved[:, 2] - moved[:, 0]) * (moved[:, 3] - moved[:, 1])
    kept_area = (clipped[:, 2] - clipped[:, 0]) * (clipped[:, 3] - clipped[:, 1])
    keep = ((kept_area >= min_visible * np.maximum(area, 1e-6))
            & (clipped[:, 2] - clipped[:, 0] >= min_side) & (clipped[:, 3] - clipped[:, 1] >= min_side))
    return np.ascontiguousarray(crop), clipped[keep].reshape(-1, 4), labels[keep]


def brightness_contrast(image: np.ndarray, gain: float, offset: float) -> np.ndarray:
    """Contrast around the image mean, then an offset; saturates at 0 and 255."""
    mean = float(image.mean())
    return np.clip((image.astype(np.float32) - mean) * gain + mean + offset, 0, 255).astype(np.uint8)


def blur(image: np.ndarray, sigma: float) -> np.ndarray:
    return cv2.GaussianBlur(image, (0, 0), sigma) if sigma > 0 else image


def noise(image: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    return np.clip(image + rng.normal(0, sigma, image.shape), 0, 255).astype(np.uint8)


@dataclass(frozen=True)
class AugmentConfig:
    out_size: tuple[int, int]           # (w, h) of the training window
    scale: tuple[float, float] = (0.85, 1.2)
    flip_h: float = 0.5
    flip_v: float = 0.5
    gain: tuple[float, float] = (0.75, 1.3)
    offset: tuple[float, float] = (-25.0, 25.0)
    blur_p: float = 0.25
    blur_sigma: tuple[float, float] = (0.3, 1.2)
    noise_p: float = 0.3
    noise_sigma: tuple[float, float] = (2.0, 8.0)


def augment(image: np.ndarray, boxes: Boxes, labels: np.ndarray, cfg: AugmentConfig,
            rng: np.random.Generator) -> tuple[np.ndarray, Boxes, np.ndarray]:
    """One random training view of a sample, `cfg.out_size` large."""
    image, boxes, labels = geometric(image, boxes, labels, cfg, cfg.out_size, rng)
    return photometric(image, cfg, rng), boxes, labels


def geometric(image: np.ndarray, boxes: Boxes, labels: np.ndarray, cfg: AugmentConfig, size: tuple[int, int],
              rng: np.random.Generator) -> tuple[np.ndarray, Boxes, np.ndarray]:
    """Random flips and scale, then a random `size` (w, h) window of the result."""
    if rng.random() < cfg.flip_h:
        image, boxes = hflip(image, boxes)
    if rng.random() < cfg.flip_v:
        image, boxes = vflip(image, boxes)
    scale = float(np.exp(rng.uniform(*np.log(cfg.scale))))
    h, w = image.shape
    sw, sh = round(w * scale), round(h * scale)
    ow, oh = size
    # A window larger than the image is placed so the image lies anywhere inside it.
    ox = int(rng.integers(min(0, sw - ow), max(0, sw - ow) + 1))
    oy = int(rng.integers(min(0, sh - oh), max(0, sh - oh) + 1))
    return scale_and_crop(image, boxes, labels, scale, (ow, oh), (ox, oy))


def mosaic(parts: list[tuple[np.ndarray, Boxes, np.ndarray]], cfg: AugmentConfig,
           rng: np.random.Generator) -> tuple[np.ndarray, Boxes, np.ndarray]:
    """Four samples in the quadrants of one `cfg.out_size` window, split at a random point.

    Unlike YOLO's mosaic nothing is shrunk: each quadrant shows a random part of its (flipped,
    slightly scaled) sample at the line's pixel scale, so the model sees defects cut by a view's
    edge and beside other surfaces, as in a line's tiles, without learning a scale it never meets.
    Boxes keep `scale_and_crop`'s visibility rule; one photometric draw covers the whole window.
    """
    if len(parts) != 4:
        raise ValueError(f"mosaic: expected 4 samples, got {len(parts)}")
    ow, oh = cfg.out_size
    cx = int(rng.integers(round(0.25 * ow), round(0.75 * ow) + 1))
    cy = int(rng.integers(round(0.25 * oh), round(0.75 * oh) + 1))
    canvas = np.empty((oh, ow), np.uint8)
    all_boxes, all_labels = [], []
    for (image, boxes, labels), (x0, y0, x1, y1) in zip(
            parts, ((0, 0, cx, cy), (cx, 0, ow, cy), (0, cy, cx, oh), (cx, cy, ow, oh)), strict=True):
        crop, kept, kept_labels = geometric(image, boxes, labels, cfg, (x1 - x0, y1 - y0), rng)
        canvas[y0:y1, x0:x1] = crop
        all_boxes.append(kept + np.array([x0, y0, x0, y0], np.float32))
        all_labels.append(kept_labels)
    return (photometric(canvas, cfg, rng), np.concatenate(all_boxes).reshape(-1, 4).astype(np.float32),
            np.concatenate(all_labels))


def photometric(image: np.ndarray, cfg: AugmentConfig, rng: np.random.Generator) -> np.ndarray:
    """What differs between lines and cameras: gain / offset, then sometimes focus blur and noise."""
    image = brightness_contrast(image, rng.uniform(*cfg.gain), rng.uniform(*cfg.offset))
    if rng.random() < cfg.blur_p:
        image = blur(image, rng.uniform(*cfg.blur_sigma))
    if rng.random() < cfg.noise_p:
        image = noise(image, rng.uniform(*cfg.noise_sigma), rng)
    return image


def pad_to(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Replicate-pad (right and bottom) to (w, h), as the runtime does before inference."""
    h, w = image.shape
    return cv2.copyMakeBorder(image, 0, size[1] - h, 0, size[0] - w, cv2.BORDER_REPLICATE)
