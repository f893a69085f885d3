"""Plant data for training (`train --plant-data`): exports read and checked, split by coil, new classes.

The folders are real exports: defects recorded in a real line database, reviewed through the records
API and written by `export_reviewed` (tests/plant_exports.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from inspection.cli import main
from tests.plant_exports import NEU, export, record_reviews
from training.plant_data import (
    MIN_COILS,
    PlantDataError,
    coil_fraction,
    load_plant_data,
    split_coils,
    write_holdout,
)

SPLITS = ("train", "val", "test")


def _coils(n: int, prefix: str = "H26-") -> list[str]:
    return [f"{prefix}{100000 + i}" for i in range(n)]


def _first_coil_in(split: str, seed: int = 0, prefix: str = "H26-") -> str:
    """A coil id whose fraction puts it in `split` by the rule alone."""
    lo, hi = {"test": (0.0, 0.2), "val": (0.2, 0.4), "train": (0.4, 1.0)}[split]
    return next(c for c in _coils(200, prefix) if lo <= coil_fraction(c, seed) < hi)


def test_a_coil_keeps_its_split_when_more_coils_come() -> None:
    week1 = _coils(60)
    week2 = week1 + _coils(60, prefix="H27-")
    first, second = split_coils(week1), split_coils(week2)
    assert split_coils(list(reversed(week1))) == first  # order of arrival does not matter
    for split in SPLITS:
        assert set(first[split]) <= set(second[split])  # a held-out coil never moves into training
    assert sorted(sum(second.values(), [])) == sorted(week2)
    assert 0.1 < len(second["test"]) / len(week2) < 0.3 and 0.1 < len(second["val"]) / len(week2) < 0.3
    assert split_coils(week2, seed=1) != second


@pytest.mark.parametrize("n", [MIN_COILS, 4, 5, 7])
@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_few_coils_still_fill_every_split(n: int, seed: int) -> None:
    split = split_coils(_coils(n), seed)
    assert all(split[s] for s in SPLITS), split
    assert sorted(sum(split.values(), [])) == _coils(n)


def test_fewer_coils_than_splits_is_one_clear_error() -> None:
    with pytest.raises(PlantDataError, match=r"2 coil\(s\) in the plant data: a split by coil needs at least 3"):
        split_coils(_coils(2))


def test_exports_are_split_by_coil_with_new_classes_negatives_and_no_duplicates(tmp_path: Path) -> None:
    reviews = [("relabel", "scale_pickup"), ("reject", None), ("confirm", None)]
    coils = {c: reviews for c in _coils(6)}
    db = record_reviews(tmp_path / "line", coils)
    first = export(db, tmp_path / "export-1")
    both = export(db, tmp_path / "export-2")  # the same reviews again (overlapping time ranges)
    plant = load_plant_data([first, both], "hot", NEU, seed=0)

    assert plant.new_classes == ("scale_pickup",)
    assert plant.duplicates_dropped == 6 * 3  # every sample of the second export was already in the first
    assert sorted(sum(plant.coils.values(), [])) == sorted(coils)
    for split in SPLITS:
        assert {p.coil for p in plant.splits[split]} == set(plant.coils[split])
        assert len(plant.splits[split]) == 3 * len(plant.coils[split])  # every crop of a coil in its split
    negatives = [p for split in SPLITS for p in plant.splits[split] if p.negative]
    assert len(negatives) == 6 and all(len(p.sample.boxes) == 0 for p in negatives)  # background images
    described = plant.describe()
    assert described["split"]["test"]["coils"] == plant.coils["test"]
    assert described["split"]["train"]["boxes_per_class"]["scale_pickup"] == len(plant.coils["train"])
    assert [f["content_sha256"] for f in described["folders"]] == [i["content_sha256"] for i in plant.identity]

    holdout = write_holdout(plant, plant.samples("test"), tmp_path / "holdout")
    manifest = json.loads((holdout / "manifest.json").read_text())
    assert manifest["coils"] == plant.coils["test"]
    assert len(list((holdout / "images").iterdir())) == len(plant.splits["test"])


def test_a_later_review_of_the_same_defect_wins(tmp_path: Path) -> None:
    db = record_reviews(tmp_path / "line", {c: [("confirm", None)] for c in _coils(4)})
    early = export(db, tmp_path / "early")
    from inspection.records.store import Store

    with Store(db) as store:
        store.add_review(1, "ben", "relabel", new_class="patches")
    late = export(db, tmp_path / "late")
    plant = load_plant_data([late, early], "hot", NEU)
    [sample] = [p for split in SPLITS for p in plant.splits[split] if p.defect_id == 1]
    assert sample.sample.labels == ("patches",) and sample.folder == late.resolve()


def test_a_new_class_only_on_held_out_coils_cannot_be_learned(tmp_path: Path) -> None:
    held_out = _first_coil_in("test")
    coils = {c: [("confirm", None)] for c in _coils(5) if c != held_out}
    coils[held_out] = [("relabel", "scale_pickup")]
    db = record_reviews(tmp_path / "line", coils)
    with pytest.raises(PlantDataError, match=f"class 'scale_pickup' \\(new at this plant\\) is only on held-out "
                                             f"coils \\({held_out}\\)"):
        load_plant_data([export(db, tmp_path / "export")], "hot", NEU)


def _train_error(tmp_path: Path, capsys: pytest.CaptureFixture[str], *plant: Path) -> str:
    pytest.importorskip("torch")
    (tmp_path / "datasets").mkdir(exist_ok=True)
    assert main(["train", "--line-type", "hot", "--datasets", str(tmp_path / "datasets"), "--out",
                 str(tmp_path / "run"), "--models", str(tmp_path / "models"), "--plant-data", *map(str, plant)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err  # one line, no traceback
    return err


def test_train_refuses_bad_plant_folders_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    not_an_export = tmp_path / "photos"
    (not_an_export / "images").mkdir(parents=True)
    assert "not a folder written by `steel-inspect dataset export`" in _train_error(tmp_path, capsys, not_an_export)
    assert "--plant-data folder not found" in _train_error(tmp_path, capsys, tmp_path / "nowhere")

    cold = export(record_reviews(tmp_path / "cold-line", {c: [("confirm", None)] for c in _coils(3)},
                                 line_type="cold", detected_as="pits"), tmp_path / "cold", line_type="cold")
    assert "exported for the cold line type; this run trains hot" in _train_error(tmp_path, capsys, cold)

    two = export(record_reviews(tmp_path / "two", {c: [("confirm", None)] for c in _coils(2)}), tmp_path / "two-out")
    assert "a split by coil needs at least 3" in _train_error(tmp_path, capsys, two)
