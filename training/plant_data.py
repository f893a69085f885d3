"""Plant data for training: folders written by `steel-inspect dataset export`, split by coil.

`steel-inspect train --plant-data DIR [DIR ...]` adds what inspectors reviewed at the plant to the
public dataset of the line type. Rules, and why:

- **Only exports.** A folder must hold the export's ``manifest.json`` (its ``format``), for this line
  type: every sample then links back to its coil, defect and review, and the split below needs the coil.
- **Split by coil.** Crops of one coil share its strip, its camera settings and often one defect cut
  into several crops (neighbours labelled in each other's crop, seam fragments), so a coil's samples
  stay in one split. A coil's split depends only on its id and the seed (`coil_fraction`):
  ``test`` below `TEST_SHARE`, ``val`` below `TEST_SHARE + VAL_SHARE`, else ``train``. Adding next
  week's coils therefore never moves this week's held-out coils into training, so figures on the
  plant hold-out stay honest across retraining rounds. With few coils a split may come out empty: then
  the nearest coil (by fraction) of a split that can spare one is moved there; fewer than `MIN_COILS` coils is an error.
- **Never in the public test split.** Plant samples join the public train and val splits only; the
  public test split (and its file under ``models/splits/``) is untouched, so public test figures of a
  plant-trained model compare one to one with every earlier model.
- **New classes.** A class the inspectors relabelled to that the public set lacks (a new defect type
  at this plant) extends the model's classes, after the public ones, sorted. It must have a training
  sample: a class seen only in held-out coils could not be learned.
- **Rejected false alarms** are exported without a box of their own and train as background (a reviewed
  neighbour inside the crop keeps its box, as the export writes it).
- **Duplicates.** Two exports of one database may both hold a defect (overlapping time ranges): the
  sample carrying the later review is kept, once.

Torch-free (reads folders with `inspection.datasets`).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from inspection.datasets import DatasetError, Sample, load_samples
from inspection.errors import SteelInspectError

EXPORT_FORMAT = "steel-inspect reviewed-defects export 1"  # inspection.records.dataset_export.FORMAT
HOLDOUT_FORMAT = "steel-inspect plant hold-out 1"
SPLITS = ("train", "val", "test")
TEST_SHARE = 0.2
VAL_SHARE = 0.2
MIN_COILS = 3  # one each for train, val and the held-out test
RANGES = {"test": (0.0, TEST_SHARE), "val": (TEST_SHARE, TEST_SHARE + VAL_SHARE),
          "train": (TEST_SHARE + VAL_SHARE, 1.0)}
METHOD = (f"coil fraction u = int(sha256('<seed>/<coil>')[:16], 16) / 16**16; test if u < {TEST_SHARE}, val if "
          f"u < {TEST_SHARE + VAL_SHARE}, else train; an empty split (test, val, train in turn) takes the coil "
          "nearest to its range from a split holding more than one; every sample of a coil is in its coil's split")


class PlantDataError(SteelInspectError):
    """A --plant-data folder is not a usable export: not an export, another line type, too few coils."""


@dataclass(frozen=True)
class PlantSample:
    """One exported crop with what links it back to the plant's records."""

    sample: Sample
    coil: str
    negative: bool
    defect_id: int
    review_id: int
    database: str
    folder: Path


@dataclass(frozen=True)
class ExportFolder:
    """One export folder, read and checked."""

    path: Path
    content_sha256: str
    database: str
    reviews: int
    samples: tuple[PlantSample, ...]


@dataclass
class PlantData:
    """Plant samples of every folder, split by coil; `new_classes` extend the model's classes."""

    folders: tuple[ExportFolder, ...]
    seed: int
    coils: dict[str, list[str]]
    splits: dict[str, list[PlantSample]]
    new_classes: tuple[str, ...]
    duplicates_dropped: int = 0
    excluded_samples: int = 0
    identity: list[dict[str, str]] = field(default_factory=list)

    def samples(self, split: str) -> list[Sample]:
        """The plant part of `split` (train, val or test) as dataset samples."""
        return [p.sample for p in self.splits[split]]

    def describe(self) -> dict[str, Any]:
        """The manifest's ``data.plant``: folders, the split with its coils, counts and file hashes."""
        def counts(items: list[PlantSample]) -> dict[str, Any]:
            boxes: dict[str, int] = {}
            for p in items:
                for label in p.sample.labels:
                    boxes[label] = boxes.get(label, 0) + 1
            return {"samples": len(items), "negatives": sum(p.negative for p in items),
                    "boxes_per_class": dict(sorted(boxes.items()))}

        return {
            "folders": [{"path": str(f.path), "content_sha256": f.content_sha256, "database": f.database,
                         "samples": len(f.samples), "reviews": f.reviews} for f in self.folders],
            "split_seed": self.seed, "split_method": METHOD,
            "split": {s: {"coils": self.coils[s], **counts(self.splits[s]),
                          "files_sha256": _names_sha256(self.splits[s])} for s in SPLITS},
            "new_classes": list(self.new_classes), "duplicates_dropped": self.duplicates_dropped,
            "samples_with_excluded_classes": self.excluded_samples,
            "rejected_false_alarms": "trained as background: no box of their own (a reviewed neighbour in the "
                                     "crop keeps its box)",
        }


def coil_fraction(coil: str, seed: int) -> float:
    """A coil's place in [0, 1): depends on its id and the seed only (see the module docstring)."""
    return int(hashlib.sha256(f"{seed}/{coil}".encode()).hexdigest()[:16], 16) / 16**16


def split_coils(coils: Iterable[str], seed: int = 0) -> dict[str, list[str]]:
    """Coil ids per split (train, val, test), each sorted."""
    fractions = {c: coil_fraction(c, seed) for c in set(coils)}
    if len(fractions) < MIN_COILS:
        raise PlantDataError(f"{len(fractions)} coil(s) in the plant data: a split by coil needs at least "
                             f"{MIN_COILS} (train, val, held-out test); review defects on more coils")
    out: dict[str, list[str]] = {s: [] for s in SPLITS}
    for coil, u in fractions.items():
        out[next(s for s, (lo, hi) in RANGES.items() if lo <= u < hi)].append(coil)
    for split in ("test", "val", "train"):  # few coils: the nearest coil of a split that can spare one fills it
        if not out[split]:
            lo, hi = RANGES[split]
            spare = [c for s in SPLITS if len(out[s]) > 1 for c in out[s]]
            coil = min(spare, key=lambda c: (max(lo - fractions[c], fractions[c] - hi, 0.0), c))
            next(members for members in out.values() if coil in members).remove(coil)
            out[split].append(coil)
    return {s: sorted(out[s]) for s in SPLITS}


def read_export(folder: Path, line_type: str) -> ExportFolder:
    """One export folder of `line_type`, its samples linked to their coils."""
    folder = Path(folder)
    manifest_path = folder / "manifest.json"
    if not folder.is_dir():
        raise PlantDataError(f"{folder}: --plant-data folder not found")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        manifest = None
    if not isinstance(manifest, dict) or manifest.get("format") != EXPORT_FORMAT:
        raise PlantDataError(f"{folder}: not a folder written by `steel-inspect dataset export` (no manifest.json "
                             f"with format {EXPORT_FORMAT!r})")
    if manifest.get("line_type") != line_type:
        raise PlantDataError(f"{folder}: exported for the {manifest.get('line_type')} line type; this run trains "
                             f"{line_type}")
    try:
        samples = {s.image_path.name: s for s in load_samples(folder)}  # VOC: any class name, new ones too
    except DatasetError as exc:
        raise PlantDataError(f"{folder}: {exc}") from None
    database = str(manifest.get("database", ""))
    linked: list[PlantSample] = []
    for entry in manifest.get("samples") or []:
        name = Path(str(entry.get("file", ""))).name
        sample = samples.pop(name, None)
        if sample is None:
            raise PlantDataError(f"{folder}: {entry.get('file')} is in manifest.json but not in images/")
        linked.append(PlantSample(sample, str(entry["coil"]), bool(entry.get("negative")), int(entry["defect_id"]),
                                  int(entry.get("review_id") or 0), database, folder.resolve()))
    if samples:
        raise PlantDataError(f"{folder}: images/{sorted(samples)[0]} is not in manifest.json (no coil to split by)")
    reviews = (manifest.get("reviews") or {}).get("count", 0)
    return ExportFolder(folder.resolve(), _content_sha256(folder), database, int(reviews), tuple(linked))


def load_plant_data(folders: Sequence[Path], line_type: str, public_classes: Sequence[str], *, seed: int = 0,
                    excluded: Sequence[str] = ()) -> PlantData:
    """Every folder read, de-duplicated, split by coil; new classes checked to have training samples."""
    exports = tuple(read_export(f, line_type) for f in folders)
    seen: dict[tuple[str, int], PlantSample] = {}
    for export in exports:
        for p in export.samples:
            key = (p.database, p.defect_id)
            if key not in seen or p.review_id > seen[key].review_id:
                seen[key] = p
    total = sum(len(e.samples) for e in exports)
    kept = [p for p in seen.values() if not set(p.sample.labels) & set(excluded)]
    if not kept:
        raise PlantDataError(f"{', '.join(str(f) for f in folders)}: no plant samples to train on")
    coils = split_coils({p.coil for p in kept}, seed)
    split_of = {c: s for s, members in coils.items() for c in members}
    splits: dict[str, list[PlantSample]] = {s: [] for s in SPLITS}
    for p in sorted(kept, key=lambda p: (p.database, p.defect_id)):
        splits[split_of[p.coil]].append(p)
    # from every sample, so that --exclude-class can name a new class too (the model's classes leave it out)
    new = sorted({label for p in seen.values() for label in p.sample.labels} - set(public_classes))
    trained = {label for p in splits["train"] for label in p.sample.labels}
    for cls in new:
        if cls not in trained and cls not in excluded:
            held = sorted({p.coil for p in kept if cls in p.sample.labels})
            raise PlantDataError(f"class {cls!r} (new at this plant) is only on held-out coils ({', '.join(held)}): "
                                 "the model could not learn it; review it on more coils")
    return PlantData(exports, seed, coils, splits, tuple(new), duplicates_dropped=total - len(seen),
                     excluded_samples=len(seen) - len(kept),
                     identity=[{"path": str(e.path), "content_sha256": e.content_sha256} for e in exports])


def write_holdout(plant: PlantData, samples: Sequence[Sample], out: Path) -> Path:
    """`samples` of the held-out plant coils as a dataset folder (images/ + VOC annotations/ +
    manifest.json) for `models compare` and `evaluate`; copies, so the folder outlives a moved
    export. Replaces `out`."""
    held_out = {p.sample.image_path: p for p in plant.splits["test"]}
    strays = [s.image_path for s in samples if s.image_path not in held_out]
    if strays:
        raise ValueError(f"write_holdout: {strays[0]} is not a held-out plant sample")
    shutil.rmtree(out, ignore_errors=True)
    (out / "images").mkdir(parents=True)
    (out / "annotations").mkdir()
    entries = []
    for k, p in enumerate(held_out[s.image_path] for s in samples):
        # names stay "<label>_<n>" (the image-level class is read from the file name) and unique even when
        # two exports hold files of the same name (defect ids of two databases)
        label = p.sample.image_class
        stem = f"{label}_{k}"
        image = out / "images" / f"{stem}{p.sample.image_path.suffix}"
        shutil.copyfile(p.sample.image_path, image)
        source_xml = p.sample.image_path.parent.parent / "annotations" / f"{p.sample.image_path.stem}.xml"
        (out / "annotations" / f"{stem}.xml").write_text(
            source_xml.read_text(encoding="utf-8").replace(p.sample.image_path.name, image.name), encoding="utf-8")
        entries.append({"file": f"images/{image.name}", "source": str(p.sample.image_path), "coil": p.coil,
                        "defect_id": p.defect_id, "review_id": p.review_id, "database": p.database,
                        "negative": p.negative})
    (out / "manifest.json").write_text(json.dumps(
        {"format": HOLDOUT_FORMAT, "coils": plant.coils["test"], "split_seed": plant.seed,
         "split_method": METHOD, "folders": plant.identity, "samples": entries}, indent=1) + "\n", encoding="utf-8")
    return out


def _content_sha256(folder: Path) -> str:
    """sha256 over every image, annotation and the manifest (relative path + content): the folder's identity."""
    digest = hashlib.sha256()
    files = [folder / "manifest.json", *sorted((folder / "images").iterdir()),
             *sorted((folder / "annotations").iterdir())]
    for path in files:
        digest.update(path.relative_to(folder).as_posix().encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def _names_sha256(items: list[PlantSample]) -> str:
    names = sorted(f"{p.database}#{p.defect_id}" for p in items)
    return hashlib.sha256("\n".join(names).encode()).hexdigest()
