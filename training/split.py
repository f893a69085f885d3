"""Reproducible train/val/test splits that keep duplicate images together.

Method (also written into each split file as ``method``):

1. Units are groups: every line of ``DUPLICATES.txt`` (byte-identical images) is one group, every
   other image a group of one, so no image content can sit in two splits.
2. A group's stratum is the file-name class of its alphabetically first member.
3. Per stratum (classes in sorted order), the groups are sorted by name and shuffled with one
   ``random.Random(seed)``; the first groups go to ``test`` until it holds
   ``round(test_fraction * images)`` images of that class, then to ``val`` likewise, the rest to
   ``train``. Same seed and same folder give the same file.

Torch-free: the simulator and evaluation read the splits through `inspection.datasets.load_split`.
Run ``python -m training.split --dataset neu-det`` to (re)write ``models/splits/neu-det.json``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
from collections import defaultdict
from pathlib import Path

from inspection.config import default_datasets_dir
from inspection.datasets import (
    DATASET_CLASSES,
    IMAGE_SUFFIXES,
    SPLITS,
    DatasetError,
    dataset_folder,
    image_class_from_name,
    read_duplicate_groups,
    split_path,
)

METHOD = ("groups = DUPLICATES.txt lines (byte-identical images) + singletons; stratum = file-name class "
          "of a group's first member; per stratum (sorted), groups sorted then shuffled by "
          "random.Random(seed); test filled to round(test_fraction*n), then val to round(val_fraction*n), "
          "rest train")


def make_split(folder: Path, dataset: str, seed: int = 0, val_fraction: float = 0.15,
               test_fraction: float = 0.15) -> dict:
    """A split of the images in `folder` (the dataset folder, holding images/), as the split-file dict."""
    if not (0 < val_fraction < 1 and 0 < test_fraction < 1 and val_fraction + test_fraction < 1):
        raise DatasetError(f"bad split fractions: val={val_fraction}, test={test_fraction}")
    classes = DATASET_CLASSES.get(dataset)
    images = sorted(p.name for p in (Path(folder) / "images").iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not images:
        raise DatasetError(f"{folder}/images: no images")
    present = set(images)
    grouped: set[str] = set()
    groups: list[tuple[str, ...]] = []
    for group in read_duplicate_groups(folder):
        members = tuple(sorted(n for n in group if n in present and n not in grouped))
        if members:
            groups.append(members)
            grouped.update(members)
    groups += [(n,) for n in images if n not in grouped]

    strata: dict[str, list[tuple[str, ...]]] = defaultdict(list)
    for group in groups:
        strata[image_class_from_name(group[0], classes)].append(group)
    rng = random.Random(seed)
    out: dict[str, list[str]] = {s: [] for s in SPLITS}
    per_class: dict[str, dict[str, int]] = {s: {} for s in SPLITS}
    for cls in sorted(strata):
        members = sorted(strata[cls])
        rng.shuffle(members)
        n = sum(len(g) for g in members)
        quota = {"test": round(test_fraction * n), "val": round(val_fraction * n)}
        taken = {s: 0 for s in SPLITS}
        for group in members:
            target = next((s for s in ("test", "val") if taken[s] < quota[s]), "train")
            out[target].extend(group)
            taken[target] += len(group)
        for s in SPLITS:
            per_class[s][cls] = taken[s]
    return {
        "dataset": dataset,
        "seed": seed,
        "method": METHOD,
        "fractions": {"train": round(1 - val_fraction - test_fraction, 6), "val": val_fraction,
                      "test": test_fraction},
        "counts": {s: {"images": len(out[s]), "per_class": per_class[s]} for s in SPLITS},
        "duplicate_groups": len([g for g in groups if len(g) > 1]),
        **{s: sorted(out[s]) for s in SPLITS},
    }


def split_hashes(split: dict) -> dict[str, str]:
    """sha256 of each split's sorted file names joined by newlines (for manifests)."""
    return {s: hashlib.sha256("\n".join(sorted(split[s])).encode("utf-8")).hexdigest() for s in SPLITS}


def write_split(split: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(split, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    tmp.replace(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="write models/splits/<dataset>.json")
    parser.add_argument("--dataset", choices=sorted(DATASET_CLASSES), required=True)
    parser.add_argument("--datasets-dir", type=Path, default=default_datasets_dir())
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    split = make_split(dataset_folder(args.datasets_dir, args.dataset), args.dataset, args.seed)
    out = args.out or split_path(args.dataset)
    write_split(split, out)
    print(f"wrote {out}: " + ", ".join(f"{s} {split['counts'][s]['images']}" for s in SPLITS))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
