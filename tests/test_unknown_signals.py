"""What the unknown rule's signals carry (`training.unknown_signals`): the AUC, which limit fires, the
rules side by side on fixed rows, and the whole measurement on the shipped hot model (a few images)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from training.unknown_signals import BUDGET_SPLITS, SCORE_FLOORS, auc, called_unknown, limits_fired, rule_table

REPO = Path(__file__).resolve().parents[1]
DATASETS = REPO.parent / "shared" / "datasets"


def _row(novelty: float, share: float, score: float = 0.5, view: bool = False) -> dict:
    return {"view": view, "score": score, "novelty": novelty, "share": share}


def test_auc_is_the_share_of_pairs_ranked_right_with_ties_half() -> None:
    assert auc(np.array([3.0, 4.0]), np.array([1.0, 2.0])) == 1.0
    assert auc(np.array([1.0, 2.0]), np.array([3.0, 4.0])) == 0.0
    assert auc(np.array([1.0, 3.0]), np.array([2.0])) == 0.5
    assert auc(np.array([2.0]), np.array([2.0, 2.0])) == 0.5
    assert auc(np.array([]), np.array([1.0])) is None


def test_limits_fired_counts_each_limit_apart_on_images_and_views() -> None:
    rule = {"novelty_max": 1.0, "class_share_min": 0.5}
    rows = [_row(2.0, 0.9), _row(0.5, 0.3), _row(2.0, 0.3), _row(0.5, 0.9), _row(2.0, 0.9, view=True)]
    assert limits_fired(rows, rule) == {
        "images": {"found": 4, "novelty_only": 1, "class_share_only": 1, "both": 1},
        "line_views": {"found": 1, "novelty_only": 1, "class_share_only": 0, "both": 0}}


def test_a_score_floor_keeps_weak_detections_out_of_unknown() -> None:
    rule = {"novelty_max": 1.0, "class_share_min": 0.5}
    rows = [_row(2.0, 0.9, score=0.2), _row(2.0, 0.9, score=0.6), _row(0.5, 0.9, score=0.6)]
    assert called_unknown(rows, rule) == round(2 / 3, 4)
    assert called_unknown(rows, rule, score_floor=0.3) == round(1 / 3, 4)
    assert called_unknown([], rule) is None


def test_rules_are_set_on_known_val_and_applied_unchanged_to_test() -> None:
    rng = np.random.default_rng(0)
    known = [_row(float(n), float(s)) for n, s in zip(rng.uniform(0, 1, 400), rng.uniform(0.6, 1, 400), strict=True)]
    # unseen types that only the class share tells apart: novelty like the known ones, share low
    unseen = [_row(float(n), float(s)) for n, s in zip(rng.uniform(0, 1, 100), rng.uniform(0.4, 0.7, 100),
                                                        strict=True)]
    parts = {"known_val": known, "unseen_val": unseen, "known_test": known[:200], "unseen_test": unseen[:50]}
    table = rule_table(parts, {"novelty_max": 0.99, "class_share_min": 0.6})
    assert [r["rule"] for r in table] == ["the model's own rule",
                                          *(f"novelty share of budget {s}" for s in BUDGET_SPLITS),
                                          *(f"the model's own rule, score floor {f}" for f in SCORE_FLOORS)]
    by_split = {r["rule"]: r for r in table}
    for split in BUDGET_SPLITS:  # every split calls about the budget of the known val defects unknown
        assert abs(by_split[f"novelty share of budget {split}"]["known_val_called_unknown"] - 0.05) <= 0.01
    # the budget spent on the class share finds more of these unseen types than the budget spent on novelty
    assert (by_split["novelty share of budget 0.0"]["unseen_val_called_unknown"]
            > by_split["novelty share of budget 0.75"]["unseen_val_called_unknown"])
    # a floor below every score (all 0.5 here) changes nothing
    assert by_split["the model's own rule, score floor 0.25"]["unseen_val_called_unknown"] == \
        by_split["the model's own rule"]["unseen_val_called_unknown"]


@pytest.mark.skipif(not (DATASETS / "neu-det").is_dir() or not (DATASETS / "cr7-det").is_dir(),
                    reason="needs ../shared/datasets with neu-det and cr7-det")
def test_the_shipped_hot_model_measured_on_a_few_images() -> None:
    pytest.importorskip("torch")  # the line views
    from inspection.detector import Detector
    from inspection.registry import Registry
    from training.unknown_signals import measure

    detector = Detector(Registry(REPO / "models").resolve("hot"), providers="cpu")
    figures = measure(detector, DATASETS, max_images=12)
    assert figures["unseen_dataset"] == "cr7-det" and figures["rule"]["novelty_max"] > 0
    assert all(figures["found"][part] > 0 for part in ("known_val", "known_test", "unseen_val", "unseen_test"))
    own = figures["rules"][0]
    assert own["rule"] == "the model's own rule"
    fired = figures["limits_fired"]["known_val"]
    called = sum(v["novelty_only"] + v["class_share_only"] + v["both"] for v in fired.values())
    assert own["known_val_called_unknown"] == round(called / figures["found"]["known_val"], 4)
    for split in ("val", "test"):
        assert all(v is None or 0.0 <= v <= 1.0 for v in figures["auc_unseen_over_known"][split].values())
