"""Background negatives: defect-free tiles get empty targets, epochs hold the requested share, the
threshold choice honours the background cap, the promotion gate, and a tiny train -> finalize run
with negatives records them and the background figure in the manifest."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

from inspection.datasets import DATASET_CLASSES, load_samples  # noqa: E402
from tests.tiny_datasets import write_tiny_neu  # noqa: E402
from training import negatives as neg  # noqa: E402
from training.augment import AugmentConfig  # noqa: E402
from training.data import TrainBatches  # noqa: E402
from training.metrics import ImageResult  # noqa: E402

torch.set_num_threads(1)
CFG = AugmentConfig(out_size=(64, 64), scale=(0.9, 1.1))


def test_negative_items_have_empty_targets_and_positives_do_not(tmp_path: Path) -> None:
    folder = write_tiny_neu(tmp_path, np.random.default_rng(0), count=8, min_xy=14)
    samples = load_samples(folder, DATASET_CLASSES["neu-det"])
    pool = neg.NegativePool("hot", 2, CFG, rows=256, cols=320)
    batches = TrainBatches(samples, DATASET_CLASSES["neu-det"], CFG, 8, 4, pool, negatives=4)
    assert len(batches) == 3  # (8 images + 4 negatives) // batch 4
    rng = np.random.default_rng(1)
    for i in range(8, 12):  # indices after the defect images are negatives
        item = batches.item(i, rng)
        assert item["image_in"].shape == (1, 64, 64) and item["image_in"].dtype == np.uint8
        assert item["image_in"].std() > 3  # real texture, not a blank tile
        assert not item["heat"].any() and not item["weight"].any() and not item["image"].any()
    positive = batches.item(0, rng)  # the boxes sit in the middle: the crop always keeps them
    assert positive["heat"].max() == 1.0 and positive["weight"].sum() > 0 and positive["image"].sum() == 1
    epoch = list(batches.epoch(0, 0))
    empty = sum(int(not b["image"][k].any()) for b in epoch for k in range(len(b["image"])))
    assert empty == 4  # every negative of the epoch, and no positive, has an all-zero label


def test_pool_is_reproducible_and_its_seeds_are_not_the_report_frames() -> None:
    a = neg.NegativePool("hot", 1, CFG, rows=128, cols=160)
    b = neg.NegativePool("hot", 1, CFG, rows=128, cols=160)
    assert np.array_equal(a.textures[0], b.textures[0])
    report = neg.hot_texture(np.random.default_rng([neg.REPORT_FAMILY, 0]), 128, 160)
    assert not np.array_equal(a.textures[0], report)
    assert len({neg.TRAIN_FAMILY, neg.REPORT_FAMILY, neg.CHOICE_FAMILY}) == 3
    assert "987654" in a.describe()["seeds"]


def test_background_tiles_and_rate() -> None:
    tiles = neg.background_tiles("hot", 1, neg.REPORT_FAMILY)
    assert len(tiles) == 6 and all(t.shape == (512, 512) for t in tiles)  # 1024 x 1600 -> 2 x 3 tiles
    scores = [np.array([0.9, 0.5, 0.1])] + [np.zeros(3)] * 5
    assert neg.per_mpx(scores, tiles, 0.4) == pytest.approx(2 / (6 * 512 * 512 / 1e6))
    report = neg.background_report(scores, tiles, 0.4, 1, neg.REPORT_FAMILY, max_detections=2)
    assert report["detections"] == 2 and report["tiles_at_detection_cap"] == 1
    with pytest.raises(neg.NegativesError, match="line_type"):
        neg.background_tiles("warm", 1, neg.REPORT_FAMILY)
    with pytest.raises(neg.NegativesError, match="0..4"):
        neg.negatives_per_epoch(5.0, 100)


def _results() -> list[ImageResult]:
    # one defect found at 0.9; two false alarms at 0.12 and 0.22
    boxes = [[0, 0, 10, 10], [50, 50, 60, 60], [80, 80, 90, 90]]
    return [ImageResult(np.array([[0, 0, 10, 10]]), [0], np.array(boxes), [0.9, 0.12, 0.22], [0, 0, 0], 0)]


def test_threshold_choice_respects_the_background_cap() -> None:
    from training.finalize import choose_threshold

    assert choose_threshold(_results())[0] == 0.25  # the first threshold above both false alarms
    t, info = choose_threshold(_results(), lambda t: 100.0 if t < 0.5 else 0.0, cap=1.0)
    assert t == 0.5 and info["background_cap_met"] and info["background_per_mpx"] == 0.0
    t, info = choose_threshold(_results(), lambda t: 10 * (1 - t), cap=1.0)  # no threshold meets it
    assert t == 0.8 and info["background_cap_met"] is False


class _FakeRegistry:
    def __init__(self, active: str | None, map50: float) -> None:
        self._active, self._map50 = active, map50

    def active(self, line_type: str) -> str | None:
        return self._active

    def resolve(self, version: str) -> object:
        return type("M", (), {"data": {"metrics": {"val": {"map50": self._map50}, "test": {"map50": 1.0}}}})()


def test_promotion_gate() -> None:
    from training.finalize import promotion_decision

    assert promotion_decision(_FakeRegistry(None, 0.0), "hot", 0.5)[0] is True
    assert promotion_decision(_FakeRegistry("hot-1", 0.669), "hot", 0.645)[0] is True
    activate, reason = promotion_decision(_FakeRegistry("hot-1", 0.669), "hot", 0.63)
    assert activate is False and "not activated" in reason and "0.6690" in reason


def test_tiny_training_run_with_negatives(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from inspection.registry import Registry
    from training import finalize as finalize_module
    from training import train as train_module
    from training.split import make_split, write_split

    folder = write_tiny_neu(tmp_path / "data", np.random.default_rng(5), min_xy=14)
    split = make_split(folder, "neu-det", seed=0, val_fraction=0.25, test_fraction=0.25)
    write_split(split, tmp_path / "splits" / "neu-det.json")
    tiny = train_module.Recipe(dataset="neu-det", stride=8, backbone="plain", window=(64, 64), epochs=1,
                               batch_size=4, negatives=0.5, negative_textures=1, background_cap=50.0,
                               line_views=0.5)
    monkeypatch.setitem(train_module.RECIPES, "hot", tiny)
    monkeypatch.setattr(finalize_module, "CHOICE_FRAMES", 1)
    monkeypatch.setattr(finalize_module, "REPORT_FRAMES", 1)
    opts = train_module.Options(line_type="hot", datasets_dir=tmp_path / "data", out_dir=tmp_path / "run",
                                splits_dir=tmp_path / "splits", speed_check=False, command="test")
    state = train_module.run(opts)
    train_count = len(split["train"])
    assert state["negatives"]["per_epoch"] == round(0.5 * train_count)
    assert state["history"][0]["epoch"] == 1
    finalize_module.finalize(opts, state, models_dir=tmp_path / "models")
    manifest = Registry(tmp_path / "models").resolve("hot")
    data = json.loads(manifest.manifest_path.read_text())
    assert data["training"]["negatives"]["share"] == 0.5
    assert data["training"]["recipe"]["negatives"] == 0.5
    assert data["training"]["line_views"]["share"] == 0.5 and data["training"]["recipe"]["line_views"] == 0.5
    # per-class thresholds chosen on val + line views, never below the background floor
    assert set(data["operating_thresholds"]) == set(data["classes"])
    assert min(data["operating_thresholds"].values()) >= data["operating_point_val"]["per_class_floor"]
    # the two outputs the unknown rule needs; this barely trained model finds no val defect to
    # calibrate the rule on, which the manifest says (tests/test_unknown.py checks the rule itself)
    assert data["unknown"]["prototypes"]["split"] == "train"
    assert data["unknown"]["rule"] is None and "no val detection" in data["unknown"]["why"]
    from inspection.detector import Detector
    detector = Detector(manifest, providers="cpu")
    assert detector.outputs[3:] == ["class_scores", "novelty"] and detector.unknown_rule is None
    assert "background_per_mpx" in data["operating_point_val"]
    background = data["metrics"]["background"]
    assert background["frames"] == 1 and background["tiles"] == 6
    assert background["threshold"] == data["operating_threshold"]
    assert str(neg.REPORT_FAMILY) in background["seeds"]
    assert data["promotion"]["activated"] is True
