"""Readers for labelled defect image folders (NEU-DET Pascal VOC, CR7-DET YOLO txt) and the splits.

Torch-free on purpose: the camera simulator and the evaluation run on the runtime's dependencies
(numpy, OpenCV, the standard library's XML parser). A folder is laid out like the public sets:
``images/`` and ``annotations/`` with one annotation file per image under the same stem, either
VOC ``.xml`` or YOLO ``.txt`` (auto-detected). File names may contain spaces (``oil spots1.jpg``).

Every problem with a file raises `DatasetError` naming the file and what was wrong.
"""

from __future__ import annotations

import json
import re
import struct
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from inspection.config import REPO_DIR
from inspection.errors import SteelInspectError

DATASET_CLASSES: dict[str, tuple[str, ...]] = {
    "neu-det": ("crazing", "inclusion", "patches", "pitted_surface", "rolled-in_scale", "scratches"),
    "cr7-det": ("inclusions", "dents", "oil spots", "pits", "punching", "linear", "macular"),
}
LINE_DATASETS: dict[str, str] = {"hot": "neu-det", "cold": "cr7-det"}
SPLITS: tuple[str, ...] = ("train", "val", "test")
SPLITS_DIR = REPO_DIR / "models" / "splits"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")


class DatasetError(SteelInspectError, ValueError):
    """A dataset folder, image, annotation or split file is missing or malformed."""


@dataclass(frozen=True, eq=False)
class Sample:
    """One labelled image: boxes in pixels (x1, y1, x2, y2) and one class name per box."""

    image_path: Path
    boxes: np.ndarray  # float32 [n, 4]
    labels: tuple[str, ...]
    image_class: str

    @property
    def name(self) -> str:
        return self.image_path.name


def read_image(path: Path) -> np.ndarray:
    """Decode an image file as 2-D uint8 grayscale (1- or 3-channel files alike)."""
    path = Path(path)
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read image: {exc}") from None
    image = cv2.imdecode(data, cv2.IMREAD_GRAYSCALE) if data.size else None
    if image is None or image.ndim != 2 or image.size == 0:
        raise DatasetError(f"{path}: not a decodable image")
    return image


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) from the JPEG/PNG header without decoding the pixels; decodes otherwise."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(64 * 1024)
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read image: {exc}") from None
    size = _jpeg_size(head) if head[:2] == b"\xff\xd8" else None
    if size is None and head[:8] == b"\x89PNG\r\n\x1a\n" and len(head) >= 24:
        size = struct.unpack(">II", head[16:24])
    if size is None or min(size) <= 0:
        h, w = read_image(path).shape
        return w, h
    return int(size[0]), int(size[1])


def _jpeg_size(head: bytes) -> tuple[int, int] | None:
    i = 2
    while i + 9 < len(head):
        if head[i] != 0xFF:
            return None
        marker = head[i + 1]
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            i += 2
            continue
        length = struct.unpack(">H", head[i + 2:i + 4])[0]
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            h, w = struct.unpack(">HH", head[i + 5:i + 9])
            return w, h
        i += 2 + length
    return None


def image_class_from_name(file_name: str, classes: Sequence[str] | None = None) -> str:
    """The image-level class from the file-name prefix (``crazing_12.jpg``, ``oil spots3.jpg``)."""
    stem = Path(file_name).stem
    if classes:
        matches = [c for c in classes if stem.startswith(c) and stem[len(c):].lstrip("_ -").isdigit()]
        if matches:
            return max(matches, key=len)
    match = re.fullmatch(r"(.+?)[_ -]?\d+", stem)
    return match.group(1) if match else stem


def _images_and_annotations(folder: Path) -> tuple[Path, Path]:
    images, annotations = folder / "images", folder / "annotations"
    for sub in (images, annotations):
        if not sub.is_dir():
            raise DatasetError(f"{folder}: expected a folder {sub.name}/ (layout: images/ + annotations/)")
    return images, annotations


def _detect_format(annotations: Path) -> str:
    kinds = {p.suffix.lower() for p in annotations.iterdir() if p.suffix.lower() in (".xml", ".txt")}
    if kinds == {".xml"}:
        return "voc"
    if kinds == {".txt"}:
        return "yolo"
    if not kinds:
        raise DatasetError(f"{annotations}: no annotation files (.xml for VOC or .txt for YOLO)")
    raise DatasetError(f"{annotations}: mixes VOC .xml and YOLO .txt annotation files")


def _classes_for(folder: Path, classes: Sequence[str] | None) -> tuple[str, ...] | None:
    if classes is not None:
        return tuple(classes)
    return DATASET_CLASSES.get(folder.name)


def load_samples(folder: Path, classes: Sequence[str] | None = None,
                 names: Sequence[str] | None = None) -> list[Sample]:
    """All labelled images of `folder` (or only the image file `names`), sorted by file name.

    YOLO annotations need `classes` (ids index into it), or a folder named like a known dataset.
    For VOC, when `classes` is given, a box with an unknown class name is an error.
    """
    folder = Path(folder)
    images_dir, ann_dir = _images_and_annotations(folder)
    fmt = _detect_format(ann_dir)
    known = _classes_for(folder, classes)
    if fmt == "yolo" and not known:
        raise DatasetError(f"{folder}: YOLO annotations need the class names (pass classes=...)")
    if names is None:
        image_paths = sorted(p for p in images_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not image_paths:
            raise DatasetError(f"{images_dir}: no images ({', '.join(IMAGE_SUFFIXES)})")
        stems = {p.stem for p in image_paths}
        suffix = ".xml" if fmt == "voc" else ".txt"
        orphans = sorted(p.name for p in ann_dir.glob(f"*{suffix}") if p.stem not in stems)
        if orphans:
            raise DatasetError(f"{ann_dir / orphans[0]}: annotation without an image in {images_dir}")
    else:
        image_paths = [images_dir / n for n in names]
        missing = [p for p in image_paths if not p.is_file()]
        if missing:
            raise DatasetError(f"{missing[0]}: image listed in the split is missing")
    samples = []
    for path in image_paths:
        if fmt == "voc":
            boxes, labels = _read_voc(ann_dir / f"{path.stem}.xml", known)
        else:
            boxes, labels = _read_yolo(ann_dir / f"{path.stem}.txt", path, known)
        samples.append(Sample(path, boxes, labels, image_class_from_name(path.name, known)))
    return samples


def _check_box(ann: Path, where: str, box: list[float], size: tuple[int, int] | None) -> None:
    x1, y1, x2, y2 = box
    if not all(np.isfinite(box)) or x2 <= x1 or y2 <= y1:
        raise DatasetError(f"{ann}: {where}: box {box} is not x1 < x2, y1 < y2")
    if size is not None:
        w, h = size
        slack = 1.0  # VOC corners are 1-based pixel indices: xmax == width is legal
        if x1 < -slack or y1 < -slack or x2 > w + slack or y2 > h + slack:
            raise DatasetError(f"{ann}: {where}: box {box} lies outside the {w}x{h} image")


def _read_voc(ann: Path, classes: tuple[str, ...] | None) -> tuple[np.ndarray, tuple[str, ...]]:
    if not ann.is_file():
        raise DatasetError(f"{ann}: annotation file missing for the image")
    try:
        root = ET.parse(ann).getroot()
    except (ET.ParseError, OSError) as exc:
        raise DatasetError(f"{ann}: not valid VOC XML: {exc}") from None
    size = None
    size_el = root.find("size")
    if size_el is not None:
        try:
            size = (int(size_el.findtext("width", "")), int(size_el.findtext("height", "")))
        except ValueError:
            raise DatasetError(f"{ann}: <size> needs integer <width> and <height>") from None
    boxes, labels = [], []
    for i, obj in enumerate(root.iter("object")):
        name = (obj.findtext("name") or "").strip()
        if not name:
            raise DatasetError(f"{ann}: object {i}: missing <name>")
        if classes is not None and name not in classes:
            raise DatasetError(f"{ann}: object {i}: unknown class {name!r} (known: {', '.join(classes)})")
        bb = obj.find("bndbox")
        try:
            box = [float(bb.findtext(k, "")) for k in ("xmin", "ymin", "xmax", "ymax")]
        except (AttributeError, ValueError):
            raise DatasetError(f"{ann}: object {i}: <bndbox> needs numeric xmin/ymin/xmax/ymax") from None
        _check_box(ann, f"object {i}", box, size)
        boxes.append(box)
        labels.append(name)
    return np.asarray(boxes, np.float32).reshape(-1, 4), tuple(labels)


def _read_yolo(ann: Path, image: Path, classes: tuple[str, ...]) -> tuple[np.ndarray, tuple[str, ...]]:
    if not ann.is_file():
        raise DatasetError(f"{ann}: annotation file missing for the image")
    try:
        text = ann.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{ann}: cannot read: {exc}") from None
    w, h = image_size(image)
    boxes, labels = [], []
    for lineno, line in enumerate(text.splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        where = f"line {lineno}"
        if len(parts) != 5:
            raise DatasetError(f"{ann}: {where}: expected 'class_id xc yc w h', got {line.strip()!r}")
        try:
            cls = int(parts[0])
            xc, yc, bw, bh = (float(v) for v in parts[1:])
        except ValueError:
            raise DatasetError(f"{ann}: {where}: not numbers: {line.strip()!r}") from None
        if not 0 <= cls < len(classes):
            raise DatasetError(f"{ann}: {where}: class id {cls} outside 0..{len(classes) - 1}")
        if not all(0.0 <= v <= 1.0 for v in (xc, yc, bw, bh)):
            raise DatasetError(f"{ann}: {where}: YOLO values must be normalised to [0, 1]: {line.strip()!r}")
        box = [(xc - bw / 2) * w, (yc - bh / 2) * h, (xc + bw / 2) * w, (yc + bh / 2) * h]
        _check_box(ann, where, box, (w, h))
        boxes.append([min(max(box[0], 0.0), w), min(max(box[1], 0.0), h),
                      min(max(box[2], 0.0), w), min(max(box[3], 0.0), h)])
        labels.append(classes[cls])
    return np.asarray(boxes, np.float32).reshape(-1, 4), tuple(labels)


def split_path(dataset: str, splits_dir: Path | None = None) -> Path:
    """Where the committed split file of `dataset` lives."""
    return Path(splits_dir or SPLITS_DIR) / f"{dataset}.json"


def read_split_file(dataset: str, splits_dir: Path | None = None) -> dict:
    """The split file of `dataset` as a dict, validated (three disjoint lists of file names)."""
    path = split_path(dataset, splits_dir)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DatasetError(f"{path}: no split file for dataset {dataset!r}") from None
    except (OSError, ValueError) as exc:
        raise DatasetError(f"{path}: not a readable JSON split file: {exc}") from None
    seen: set[str] = set()
    for split in SPLITS:
        names = data.get(split)
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise DatasetError(f"{path}: {split!r} must be a list of file names")
        overlap = seen.intersection(names)
        if overlap:
            raise DatasetError(f"{path}: {sorted(overlap)[0]!r} appears in more than one split")
        seen.update(names)
    return data


def dataset_folder(dataset_dir: Path, dataset: str) -> Path:
    """`dataset_dir/dataset` when `dataset_dir` is the datasets root, else `dataset_dir` itself."""
    dataset_dir = Path(dataset_dir)
    if (dataset_dir / dataset / "images").is_dir():
        return dataset_dir / dataset
    if (dataset_dir / "images").is_dir():
        return dataset_dir
    raise DatasetError(f"{dataset_dir}: neither it nor {dataset_dir / dataset} holds an images/ folder")


def load_split(dataset_dir: Path, dataset: str, split: str, splits_dir: Path | None = None) -> list[Sample]:
    """The samples of one split (train|val|test) of a known dataset, per the committed split file.

    `dataset_dir` may be the datasets root (holding ``neu-det/``) or the dataset folder itself.
    """
    if dataset not in DATASET_CLASSES:
        raise DatasetError(f"unknown dataset {dataset!r} (known: {', '.join(DATASET_CLASSES)})")
    if split not in SPLITS:
        raise DatasetError(f"unknown split {split!r} (expected one of {', '.join(SPLITS)})")
    names = read_split_file(dataset, splits_dir)[split]
    return load_samples(dataset_folder(dataset_dir, dataset), DATASET_CLASSES[dataset], names=names)


def read_duplicate_groups(folder: Path) -> list[tuple[str, ...]]:
    """Groups of byte-identical image file names from ``DUPLICATES.txt`` (tab-separated; # comments)."""
    path = Path(folder) / "DUPLICATES.txt"
    if not path.is_file():
        return []
    groups = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            groups.append(tuple(n.strip() for n in line.split("\t") if n.strip()))
    return groups
