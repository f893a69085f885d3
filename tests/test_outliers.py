"""Outlier exposure (`train --outliers`): the shapes, where they go, their targets and what a model
trained on them does with one (a find whose class scores are spread, beside a known class that is not)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from training.outliers import SHAPES, draw_shape, paste_outlier
from training.targets import SPREAD_MIN, make_targets


@pytest.mark.parametrize("kind", sorted(SHAPES))
def test_every_shape_covers_part_of_its_box(kind: str) -> None:
    coverage = draw_shape(np.random.default_rng(1), 40, 24, kind)
    assert coverage.shape == (24, 40) and coverage.dtype == np.float32
    assert coverage.min() >= 0.0 and coverage.max() <= 1.0
    assert 0.02 < coverage.mean() < 0.95, f"{kind}: {coverage.mean():.2f} of the box covered"


def test_an_unknown_shape_or_an_empty_box_is_refused() -> None:
    with pytest.raises(ValueError, match="'disc'"):
        draw_shape(np.random.default_rng(0), 20, 20, "disc")
    with pytest.raises(ValueError, match="0 x 20"):
        draw_shape(np.random.default_rng(0), 0, 20)


def test_the_shape_goes_where_no_box_is_and_changes_only_its_own_box() -> None:
    rng = np.random.default_rng(5)
    boxes = np.array([[0, 0, 224, 100], [0, 100, 100, 224]], np.float32)  # only the lower right is free
    for _ in range(20):
        image = np.full((224, 224), 120, np.uint8)
        out, box = paste_outlier(image, boxes, rng, margin=4.0)
        if box is None:
            assert np.array_equal(out, image)
            continue
        x1, y1, x2, y2 = box.astype(int)
        assert x1 >= 104 and y1 >= 104, box
        changed = np.abs(out.astype(int) - 120) >= 12
        assert changed.any(), "the shape is too faint to learn"
        rows, cols = np.nonzero(changed)
        # the box is the shape's own extent: what changed clearly lies in it and reaches its edges
        assert rows.min() >= y1 - 1 and rows.max() <= y2 and cols.min() >= x1 - 1 and cols.max() <= x2, box
        assert rows.min() <= y1 + 2 and cols.min() <= x1 + 2 and rows.max() >= y2 - 3 and cols.max() >= x2 - 3, box


def test_no_free_place_leaves_the_crop_alone_and_a_bad_canvas_is_named() -> None:
    image = np.full((224, 224), 90, np.uint8)
    out, box = paste_outlier(image, np.array([[0, 0, 224, 224]], np.float32), np.random.default_rng(0))
    assert box is None and out is image
    with pytest.raises(ValueError, match="float32"):
        paste_outlier(image.astype(np.float32), np.zeros((0, 4), np.float32), np.random.default_rng(0))


def test_an_outlier_has_a_spread_target_and_a_box_but_no_class() -> None:
    boxes, labels = np.array([[8, 8, 40, 40]], np.float32), np.array([1])
    outlier = np.array([[80, 80, 112, 104]], np.float32)
    t = make_targets(boxes, labels, 3, (128, 128), 4, outlier)
    cy, cx = int(92 / 4), int(96 / 4)
    assert t["spread"][cy, cx] == pytest.approx(1.0)
    assert t["heat"][:, cy, cx].max() < 1e-3, "an outlier must not raise a class peak"
    assert t["heat"][1].max() == 1.0 and t["spread"][6, 6] < SPREAD_MIN
    assert np.allclose(t["box"][:, cy, cx], outlier[0]) and t["weight"][cy, cx] > 0
    assert t["image"].tolist() == [0.0, 1.0, 0.0], "an outlier is no class of the image"
    plain = make_targets(boxes, labels, 3, (128, 128), 4)
    assert not plain["spread"].any()
    assert np.array_equal(plain["heat"], t["heat"])


def test_spread_loss_pulls_every_class_to_the_middle_and_the_focal_loss_leaves_those_cells() -> None:
    torch = pytest.importorskip("torch")
    from training.outliers import SPREAD_SCORE
    from training.targets import focal_loss, spread_loss

    t = make_targets(np.zeros((0, 4), np.float32), np.zeros(0, np.int64), 3, (64, 64), 4,
                     np.array([[20, 20, 44, 44]], np.float32))
    spread = torch.from_numpy(t["spread"])[None]
    heat = torch.from_numpy(t["heat"])[None]
    assert float(spread_loss(torch.zeros(1, 3, 16, 16), torch.zeros(1, 16, 16), SPREAD_SCORE)) == 0.0
    logits = torch.full((1, 3, 16, 16), -4.0, requires_grad=True)
    optimizer = torch.optim.SGD([logits], lr=20.0)
    for _ in range(300):
        optimizer.zero_grad()
        spread_loss(logits, spread, SPREAD_SCORE).backward()
        optimizer.step()
    centre = torch.sigmoid(logits[0, :, 8, 8]).detach().numpy()
    assert np.allclose(centre, SPREAD_SCORE, atol=0.03), centre
    # the negative term of the focal loss ignores the shape's cells, so it cannot fight the spread target
    high = torch.full((1, 3, 16, 16), -6.0)
    high[0, :, 8, 8] = 3.0
    ignore = spread > SPREAD_MIN
    low = torch.full_like(high, -6.0)
    assert float(focal_loss(high, heat, ignore)) == pytest.approx(float(focal_loss(low, heat, ignore)))
    assert float(focal_loss(high, heat)) > float(focal_loss(low, heat)) + 1.0


def test_a_model_taught_outliers_spreads_its_class_scores_on_one_and_not_on_its_class(tmp_path: Path) -> None:
    """A bright square of class 1 and a dark cross drawn as an outlier, learned together: at the
    cross the model finds something with both class scores alike; at the square, class 1 clearly."""
    torch = pytest.importorskip("torch")
    from training.augment import AugmentConfig, augment
    from training.model import Detector
    from training.outliers import SPREAD_SCORE
    from training.train import Recipe, make_optimizer, train_step

    torch.set_num_threads(1)
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    image = rng.normal(110, 6, (64, 64)).clip(0, 255).astype(np.uint8)
    square = np.array([[6, 6, 22, 22]], np.float32)
    image[6:22, 6:22] = 220
    cross = np.array([[36, 36, 56, 56]], np.float32)
    image[36:56, 36:56] = np.where(draw_shape(np.random.default_rng(2), 20, 20, "cross") > 0.5, 20, image[36:56, 36:56])
    recipe = Recipe(dataset="neu-det", stride=8, backbone="plain", window=(64, 64), epochs=1, lr=3e-3, outliers=1.0)
    model = Detector(2, stride=8, backbone="plain").to(memory_format=torch.channels_last)
    ema = Detector(2, stride=8, backbone="plain")
    optimizer = make_optimizer(model, recipe)
    cfg = AugmentConfig(out_size=(64, 64), scale=(1.0, 1.0), blur_p=0.0, noise_p=0.0)
    both = np.concatenate([square, cross])
    for step in range(150):
        items = []
        for _ in range(4):
            im, bx, lb = augment(image, both, np.array([1, 0]), cfg, rng)  # label 0 is a placeholder
            targets = make_targets(bx[:1], lb[:1], 2, (64, 64), 8, bx[1:])
            targets["image_in"] = im[None]
            items.append(targets)
        batch = {k: torch.from_numpy(np.stack([it[k] for it in items])) for k in items[0]}
        train_step(model, ema, optimizer, batch, recipe, 3e-3, step)
    model.eval()
    with torch.no_grad():
        heat = torch.sigmoid(model((torch.from_numpy(image[None, None]).float() - model.mean) / model.std)[0])[0]
    at_square, at_cross = heat[:, 14 // 8, 14 // 8].numpy(), heat[:, 46 // 8, 46 // 8].numpy()
    assert at_square[1] > 0.5 and at_square[1] / at_square.sum() > 0.8, at_square
    assert at_cross.min() > 0.15, f"the cross is not found: {at_cross}"
    assert at_cross.max() / at_cross.sum() < 0.65, f"one class claims the cross: {at_cross}"
    assert abs(float(at_cross.mean()) - SPREAD_SCORE) < 0.2, at_cross
