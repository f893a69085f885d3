"""Augmentations move boxes with the pixels: checked on images whose defect is a bright rectangle."""

from __future__ import annotations

import numpy as np
import pytest

from training.augment import AugmentConfig, augment, brightness_contrast, hflip, mosaic, pad_to, scale_and_crop, vflip


def _image_with_box(h: int, w: int, box: tuple[int, int, int, int]) -> np.ndarray:
    image = np.full((h, w), 60, np.uint8)
    x1, y1, x2, y2 = box
    image[y1:y2, x1:x2] = 220
    return image


def _bright_box(image: np.ndarray) -> list[float]:
    ys, xs = np.nonzero(image > 140)
    return [float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)]


@pytest.mark.parametrize(
    ("flip", "size", "box", "expected"),
    [
        (hflip, (40, 60), (10, 5, 20, 15), [40, 5, 50, 15]),
        (hflip, (40, 60), (0, 0, 60, 40), [0, 0, 60, 40]),
        (vflip, (40, 60), (10, 5, 20, 15), [10, 25, 20, 35]),
        (vflip, (40, 60), (0, 30, 5, 40), [0, 0, 5, 10]),
    ],
)
def test_flips_move_boxes_with_pixels(flip, size, box, expected) -> None:  # noqa: ANN001
    image = _image_with_box(*size, box)
    out, boxes = flip(image, np.array([box], np.float32))
    assert boxes.tolist() == [expected]
    assert _bright_box(out) == expected


@pytest.mark.parametrize(
    ("scale", "origin", "box", "expected", "kept"),
    [
        (1.0, (0, 0), (10, 10, 20, 20), [10, 10, 20, 20], 1),        # identity
        (2.0, (0, 0), (5, 5, 12, 12), [10, 10, 24, 24], 1),          # zoom in
        (1.0, (5, 8), (10, 10, 20, 20), [5, 2, 15, 12], 1),          # shift
        (1.0, (-10, -10), (2, 2, 10, 10), [12, 12, 20, 20], 1),      # window larger: padded
        (1.0, (15, 0), (10, 10, 20, 20), [0, 10, 5, 20], 1),         # half visible: kept, clipped
        (1.0, (18, 0), (10, 10, 20, 20), [], 0),                     # 20 % visible: dropped
        (0.5, (0, 0), (10, 10, 30, 30), [5, 5, 15, 15], 1),          # zoom out
    ],
)
def test_scale_and_crop(scale, origin, box, expected, kept) -> None:  # noqa: ANN001
    image = _image_with_box(40, 40, box)
    out, boxes, labels = scale_and_crop(image, np.array([box], np.float32), np.array([3]), scale, (32, 32), origin)
    assert out.shape == (32, 32)
    assert len(boxes) == len(labels) == kept
    if kept:
        np.testing.assert_allclose(boxes[0], expected, atol=0.01)
        assert labels.tolist() == [3]
        bright = _bright_box(out)
        np.testing.assert_allclose(bright, expected, atol=1.0)


def test_random_augment_keeps_boxes_on_the_bright_square() -> None:
    rng = np.random.default_rng(0)
    cfg = AugmentConfig(out_size=(64, 64), noise_p=0.0, blur_p=0.0, gain=(1.0, 1.0), offset=(0.0, 0.0))
    image = _image_with_box(64, 64, (20, 24, 36, 40))
    for _ in range(30):
        out, boxes, labels = augment(image, np.array([[20, 24, 36, 40]], np.float32), np.array([0]), cfg, rng)
        assert out.shape == (64, 64) and out.dtype == np.uint8
        if len(boxes) and (boxes[0, 2] - boxes[0, 0]) > 4:
            np.testing.assert_allclose(_bright_box(out), boxes[0], atol=1.5)


def test_mosaic_keeps_each_box_on_its_own_bright_square() -> None:
    """Four images, each with one square of its own brightness: every box the mosaic keeps lies on
    pixels of that brightness, carries that image's label, and nothing is shrunk."""
    rng = np.random.default_rng(1)
    cfg = AugmentConfig(out_size=(96, 96), noise_p=0.0, blur_p=0.0, gain=(1.0, 1.0), offset=(0.0, 0.0),
                        scale=(1.0, 1.0))
    parts = []
    for label, level in enumerate((120, 160, 200, 240)):
        image = np.full((80, 80), 40, np.uint8)
        image[30:50, 25:45] = level
        parts.append((image, np.array([[25, 30, 45, 50]], np.float32), np.array([label])))
    seen = set()
    for _ in range(40):
        out, boxes, labels = mosaic(parts, cfg, rng)
        assert out.shape == (96, 96) and out.dtype == np.uint8 and len(boxes) == len(labels)
        for box, label in zip(boxes, labels, strict=True):
            x1, y1, x2, y2 = np.round(box).astype(int)
            assert x2 - x1 <= 20 and y2 - y1 <= 20  # native scale: a box is never larger than its square
            inside = out[y1:y2, x1:x2]
            assert np.mean(inside == (120, 160, 200, 240)[label]) > 0.9
            seen.add(int(label))
    assert seen == {0, 1, 2, 3}


def test_mosaic_needs_four_samples() -> None:
    cfg = AugmentConfig(out_size=(32, 32))
    part = (np.zeros((20, 20), np.uint8), np.zeros((0, 4), np.float32), np.zeros(0, np.int64))
    with pytest.raises(ValueError, match="expected 4 samples, got 3"):
        mosaic([part] * 3, cfg, np.random.default_rng(0))


@pytest.mark.parametrize(("gain", "offset", "expected_mean"), [(1.0, 0.0, 100), (1.0, 20.0, 120), (0.5, 0.0, 100)])
def test_brightness_contrast(gain: float, offset: float, expected_mean: float) -> None:
    image = np.array([[50, 150]], np.uint8)
    out = brightness_contrast(image, gain, offset)
    assert out.dtype == np.uint8 and abs(float(out.mean()) - expected_mean) <= 0.5
    assert (int(out[0, 1]) - int(out[0, 0])) == round(100 * gain)


def test_pad_to_replicates_the_border() -> None:
    image = np.arange(12, dtype=np.uint8).reshape(3, 4)
    out = pad_to(image, (6, 5))
    assert out.shape == (5, 6)
    assert out[4, 5] == image[2, 3] and (out[:3, :4] == image).all()
