"""Dataset readers and splits: small VOC/YOLO folders built here, plus checks on the real sets."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest

from inspection.config import default_datasets_dir
from inspection.datasets import (
    DATASET_CLASSES,
    SPLITS,
    DatasetError,
    image_class_from_name,
    image_size,
    load_samples,
    load_split,
    read_duplicate_groups,
    read_image,
    read_split_file,
)
from training.split import make_split, split_hashes, write_split

CR7 = DATASET_CLASSES["cr7-det"]


def _voc(name: str, objects: list[tuple[str, list]], size: tuple[int, int] = (200, 200)) -> str:
    objs = "".join(
        f"<object><name>{n}</name><bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin>"
        f"<xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>" for n, b in objects)
    return (f"<annotation><filename>{name}</filename><size><width>{size[0]}</width>"
            f"<height>{size[1]}</height><depth>1</depth></size>{objs}</annotation>")


def _folder(tmp_path: Path, files: dict[str, str], images: dict[str, tuple[int, int, int]]) -> Path:
    """images: name -> (height, width, channels); files: annotation name -> text."""
    root = tmp_path / "set"
    (root / "images").mkdir(parents=True)
    (root / "annotations").mkdir()
    for name, (h, w, c) in images.items():
        img = np.full((h, w, c) if c > 1 else (h, w), 90, np.uint8)
        ok, buf = cv2.imencode(Path(name).suffix, img)
        buf.tofile(root / "images" / name)
    for name, text in files.items():
        (root / "annotations" / name).write_text(text, encoding="utf-8")
    return root


def test_voc_reads_boxes_labels_and_class(tmp_path: Path) -> None:
    root = _folder(
        tmp_path,
        {"crazing_1.xml": _voc("crazing_1.jpg", [("crazing", [2, 2, 193, 194]),
                                                 ("patches", [10, 20, 30, 40])]),
         "scratches_7.xml": _voc("scratches_7.jpg", [])},
        {"crazing_1.jpg": (200, 200, 3), "scratches_7.jpg": (200, 200, 1)},
    )
    samples = load_samples(root, DATASET_CLASSES["neu-det"])
    assert [s.name for s in samples] == ["crazing_1.jpg", "scratches_7.jpg"]
    first = samples[0]
    assert first.boxes.dtype == np.float32 and first.boxes.shape == (2, 4)
    np.testing.assert_array_equal(first.boxes[1], [10, 20, 30, 40])
    assert first.labels == ("crazing", "patches") and first.image_class == "crazing"
    assert samples[1].boxes.shape == (0, 4) and samples[1].image_class == "scratches"


def test_yolo_reads_space_names_and_one_and_three_channel_jpegs(tmp_path: Path) -> None:
    root = _folder(
        tmp_path,
        {"oil spots1.txt": "2 0.5 0.25 0.2 0.1\n0 0.1 0.1 0.2 0.2\n", "pits3.txt": "3 0.5 0.5 1.0 1.0\n"},
        {"oil spots1.jpg": (400, 400, 1), "pits3.jpg": (400, 200, 3)},
    )
    samples = load_samples(root, CR7)
    oil, pits = samples
    assert oil.image_class == "oil spots" and oil.labels == ("oil spots", "inclusions")
    np.testing.assert_allclose(oil.boxes[0], [160, 80, 240, 120], atol=1e-3)
    np.testing.assert_allclose(oil.boxes[1], [0, 0, 80, 80], atol=1e-3)
    np.testing.assert_allclose(pits.boxes[0], [0, 0, 200, 400], atol=1e-3)  # width 200, height 400
    for s in samples:
        img = read_image(s.image_path)
        assert img.ndim == 2 and img.dtype == np.uint8
    assert image_size(pits.image_path) == (200, 400)


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"a1.xml": "<annotation><object>"}, "not valid VOC XML"),
        ({"a1.xml": _voc("a1.jpg", [("crazing", [5, 5, 2, 9])])}, "is not x1 < x2"),
        ({"a1.xml": _voc("a1.jpg", [("crazing", [5, 5, 300, 9])])}, "outside"),
        ({"a1.xml": _voc("a1.jpg", [("rust", [1, 1, 9, 9])])}, "unknown class 'rust'"),
        ({"a1.xml": _voc("a1.jpg", [("crazing", ["x", 1, 9, 9])])}, "numeric"),
        ({"a1.xml": _voc("a1.jpg", []), "zz9.xml": _voc("zz9.jpg", [])}, "annotation without an image"),
        ({}, "no annotation files"),
        ({"a1.xml": _voc("a1.jpg", []), "a1.txt": "0 0.5 0.5 0.1 0.1"}, "mixes VOC"),
    ],
)
def test_malformed_voc_names_the_problem(tmp_path: Path, files: dict[str, str], message: str) -> None:
    root = _folder(tmp_path, files, {"a1.jpg": (200, 200, 1)})
    with pytest.raises(DatasetError, match=message):
        load_samples(root, DATASET_CLASSES["neu-det"])


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("0 0.5 0.5 0.1\n", "expected 'class_id"),
        ("9 0.5 0.5 0.1 0.1\n", "class id 9 outside"),
        ("0 0.5 0.5 a 0.1\n", "not numbers"),
        ("0 12 40 10 10\n", "normalised"),
        ("0 0.5 0.5 0 0.1\n", "is not x1 < x2"),
    ],
)
def test_malformed_yolo_names_file_and_line(tmp_path: Path, text: str, message: str) -> None:
    root = _folder(tmp_path, {"dents 2.txt": "1 0.5 0.5 0.1 0.1\n" + text}, {"dents 2.jpg": (100, 100, 1)})
    with pytest.raises(DatasetError, match=message) as info:
        load_samples(root, CR7)
    assert "dents 2.txt: line 2" in str(info.value)


def test_yolo_without_class_names_and_missing_pieces(tmp_path: Path) -> None:
    root = _folder(tmp_path, {"x1.txt": "0 0.5 0.5 0.1 0.1\n"},
                   {"x1.jpg": (50, 50, 1), "x2.jpg": (50, 50, 1)})
    with pytest.raises(DatasetError, match="need the class names"):
        load_samples(root)
    with pytest.raises(DatasetError, match=r"x2\.txt: annotation file missing"):
        load_samples(root, ["a"])
    (root / "images" / "x2.jpg").write_bytes(b"not a jpeg")
    (root / "annotations" / "x2.txt").write_text("")
    with pytest.raises(DatasetError, match="x2.jpg: not a decodable image"):
        load_samples(root, ["a"])
    with pytest.raises(DatasetError, match="expected a folder images/"):
        load_samples(tmp_path / "nowhere")


@pytest.mark.parametrize(
    ("name", "classes", "expected"),
    [("crazing_12.jpg", DATASET_CLASSES["neu-det"], "crazing"),
     ("rolled-in_scale_3.jpg", DATASET_CLASSES["neu-det"], "rolled-in_scale"),
     ("oil spots17.jpg", CR7, "oil spots"),
     ("pits480.jpg", CR7, "pits"),
     ("widget_5.png", None, "widget")],
)
def test_image_class_from_name(name: str, classes: tuple[str, ...] | None, expected: str) -> None:
    assert image_class_from_name(name, classes) == expected


def test_split_is_reproducible_stratified_and_keeps_duplicates(tmp_path: Path) -> None:
    images = {f"{c}{i}.jpg": (20, 20, 1) for c in ("dents", "pits") for i in range(1, 21)}
    root = _folder(tmp_path, {n.replace(".jpg", ".txt"): "" for n in images}, images)
    (root / "DUPLICATES.txt").write_text("# groups\ndents1.jpg\tdents2.jpg\tpits5.jpg\n")
    split = make_split(root, "cr7-det", seed=3)
    assert split == make_split(root, "cr7-det", seed=3)
    assert split != make_split(root, "cr7-det", seed=4)
    where = {n: s for s in SPLITS for n in split[s]}
    assert sorted(where) == sorted(images)
    assert where["dents1.jpg"] == where["dents2.jpg"] == where["pits5.jpg"]
    assert split["counts"]["test"]["per_class"]["pits"] == 3
    write_split(split, tmp_path / "splits" / "cr7-det.json")
    assert read_split_file("cr7-det", tmp_path / "splits")["test"] == split["test"]
    assert len(load_split(root, "cr7-det", "val", tmp_path / "splits")) == split["counts"]["val"]["images"]
    assert len(set(split_hashes(split).values())) == 3


def test_split_file_with_overlap_is_rejected(tmp_path: Path) -> None:
    (tmp_path / "neu-det.json").write_text(json.dumps({"train": ["a.jpg"], "val": ["a.jpg"], "test": []}))
    with pytest.raises(DatasetError, match="more than one split"):
        read_split_file("neu-det", tmp_path)


# ---- the real datasets (skipped where ../shared/datasets is absent) -------------------------------

REAL = default_datasets_dir()
EXPECTED = {"neu-det": (1500, 3500), "cr7-det": (3720, 9907)}


@pytest.mark.datasets
@pytest.mark.parametrize("dataset", sorted(EXPECTED))
def test_real_dataset_splits(dataset: str) -> None:
    if not (REAL / dataset / "images").is_dir():
        pytest.skip(f"{REAL / dataset} absent: the public datasets are not on this machine")
    parts = {s: load_split(REAL, dataset, s) for s in SPLITS}
    names = {s: {x.name for x in parts[s]} for s in SPLITS}
    total_images = sum(len(v) for v in parts.values())
    boxes = Counter(label for v in parts.values() for x in v for label in x.labels)
    assert (total_images, sum(boxes.values())) == EXPECTED[dataset]
    assert set(boxes) == set(DATASET_CLASSES[dataset])
    for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
        assert not names[a] & names[b]
    for group in read_duplicate_groups(REAL / dataset):
        assert len({s for s in SPLITS for n in group if n in names[s]}) == 1, group
    per_class_test = Counter(x.image_class for x in parts["test"])
    assert set(per_class_test) == set(DATASET_CLASSES[dataset])
    assert max(per_class_test.values()) - min(per_class_test.values()) <= 10  # stratified
    committed = read_split_file(dataset)
    regenerated = make_split(REAL / dataset, dataset, seed=committed["seed"])
    assert {s: regenerated[s] for s in SPLITS} == {s: committed[s] for s in SPLITS}
