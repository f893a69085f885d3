"""Line views: a training defect pasted into strip texture keeps its boxes on its pixels, loses the
boxes that leave the window, and changes nothing outside its dilated boxes but the photometrics."""

from __future__ import annotations

import numpy as np
import pytest

from training.augment import AugmentConfig
from training.line_views import LineViews
from training.negatives import NegativePool

# no photometric or geometric randomness: what is left is the paste itself
PLAIN = AugmentConfig(out_size=(96, 96), scale=(1.0, 1.0), flip_h=0.0, flip_v=0.0, gain=(1.0, 1.0),
                      offset=(0.0, 0.0), blur_p=0.0, noise_p=0.0)


def _patch() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A 64 x 64 sample whose labelled defect is a black square on mid grey."""
    image = np.full((64, 64), 128, np.uint8)
    image[24:40, 20:44] = 0
    return image, np.array([[20, 24, 44, 40]], np.float32), np.array([3], np.int64)


def _views(**kwargs: float) -> LineViews:
    pool = NegativePool("hot", 1, PLAIN, rows=256, cols=320)
    return LineViews(pool, PLAIN, dilation_px=(2, 2), feather_px=(1.0, 1.0), level_jitter=0.0, **kwargs)


def test_pasted_defect_sits_under_its_box() -> None:
    views = _views(outside_share=0.0)
    image, boxes, labels = _patch()
    for seed in range(10):
        view, out_boxes, out_labels = views.item(image, boxes, labels, np.random.default_rng(seed))
        assert view.shape == (96, 96) and view.dtype == np.uint8
        assert out_labels.tolist() == [3] and out_boxes.shape == (1, 4)
        x1, y1, x2, y2 = out_boxes[0].astype(int)
        assert (x2 - x1, y2 - y1) == (24, 16)  # scale 1: the box keeps its size
        inside = view[y1 + 3:y2 - 3, x1 + 3:x2 - 3].astype(float)
        assert inside.mean() < 40  # the black defect, shifted only by the brightness match
        around = np.ones_like(view, bool)
        around[max(0, y1 - 8):y2 + 8, max(0, x1 - 8):x2 + 8] = False
        assert view[around].mean() > inside.mean() + 60  # strip texture, not the sample's grey square


def test_background_outside_the_boxes_is_strip_texture() -> None:
    views = _views(outside_share=0.0)
    image, boxes, labels = _patch()
    view, out_boxes, _ = views.item(image, boxes, labels, np.random.default_rng(0))
    x1, y1, x2, y2 = out_boxes[0].astype(int)
    around = np.ones_like(view, bool)
    around[max(0, y1 - 8):y2 + 8, max(0, x1 - 8):x2 + 8] = False
    assert view[around].std() > 3  # the texture's grain, not the flat sample background


def test_boxes_leaving_the_window_are_clipped_or_dropped() -> None:
    views = _views(outside_share=0.5)
    image, boxes, labels = _patch()
    seen_clipped = seen_dropped = False
    for seed in range(200):
        view, out_boxes, out_labels = views.item(image, boxes, labels, np.random.default_rng(seed))
        assert len(out_boxes) == len(out_labels)
        if len(out_boxes):
            assert (out_boxes >= 0).all() and (out_boxes[:, [0, 2]] <= 96).all() and (out_boxes[:, [1, 3]] <= 96).all()
            area = (out_boxes[0, 2] - out_boxes[0, 0]) * (out_boxes[0, 3] - out_boxes[0, 1])
            assert area >= 0.4 * 24 * 16 - 1e-3
            seen_clipped |= area < 24 * 16
        else:
            seen_dropped = True
    assert seen_clipped and seen_dropped


@pytest.mark.parametrize("share", [-0.1, 1.5])
def test_train_batches_refuse_a_bad_line_share(share: float) -> None:
    torch = pytest.importorskip("torch")  # noqa: F841 - TrainBatches builds torch tensors
    from training.data import TrainBatches

    with pytest.raises(ValueError, match="line_share"):
        TrainBatches([], ("a",), PLAIN, 8, 2, None, 0, _views(), share)
