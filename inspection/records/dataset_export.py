"""Training samples from inspectors' reviews: what the plant confirmed becomes data.

`export_reviewed` writes the reviewed defects of one line type as a labelled folder in the layout
of the public sets (``images/`` + ``annotations/``, Pascal VOC XML, one file per image), so
`inspection.datasets.load_samples` reads it like NEU-DET:

- a defect whose latest review confirms it is exported under its class; a relabelled defect under
  the inspector's class, also one the model has never learned (a new defect type at this plant);
- a defect rejected as a false alarm is exported as a negative: its image with no object;
- a defect confirmed as ``unknown`` is skipped (it has no class to learn), as are defects whose
  crop was never stored or has been pruned, and crops whose geometry does not match the box.

The images are the stored crops, byte for byte: the defect's box plus ``crop_margin_px`` of
context on each side (the worker's ``records.crop_margin_px``; raise it where crops are meant
for training). The box in crop coordinates follows from how the worker cuts a crop
(`crops.crop_origin`, mirroring `frame_inspector.crop_png`). Every box
is checked against the crop's real size before it is written.

Other reviewed defects of the same frame that overlap a crop are labelled in it as well (a
confirmed neighbour left unlabelled would teach the model that it is background); unreviewed
overlapping detections are counted in the sample's manifest entry (``unreviewed_overlaps``).

A defect cut by frame seams is reviewed once for all its fragments: each fragment's crop is a
sample with the group's latest review.

``manifest.json`` names the database, the reviews used (ids, time range, reviewers), the crop
margin, the classes (and which are new to the line's public set) and, per sample, the defect
and fragment ids, coil, camera, frame, the model version that found it and the review it
carries; ``MANIFEST.sha256`` lists every file like the public sets' manifests.
"""

from __future__ import annotations

import hashlib
import json
import struct
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlite_utils import Database

from inspection.records import seams
from inspection.records.crops import CropStore, crop_origin
from inspection.records.errors import StoreError
from inspection.results import UNKNOWN

FORMAT = "steel-inspect reviewed-defects export 1"
NEGATIVE = "background"  # file-name prefix of a rejected false alarm (an image with no object)


@dataclass
class ExportResult:
    """What `export_reviewed` wrote and left out."""

    out: Path
    samples: int = 0
    positives: int = 0
    negatives: int = 0
    classes: dict[str, int] = field(default_factory=dict)
    new_classes: list[str] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)
    reviews: int = 0


@dataclass(frozen=True)
class _Fragment:
    id: int
    coil: str
    camera: str
    surface: str
    frame_seq: int
    box: tuple[float, float, float, float]
    cls: str
    score: float
    crop_sha256: str | None
    model_version: str | None
    model_sha256: str | None


@dataclass(frozen=True)
class _Review:
    id: int
    defect_id: int
    reviewer: str
    action: str
    new_class: str | None
    time_ns: int


def export_reviewed(
    db: Database,
    crops: CropStore,
    out: Path,
    *,
    line_type: str,
    known_classes: Iterable[str],
    crop_margin_px: int,
    database_name: str,
    since_ns: int | None = None,
    until_ns: int | None = None,
    progress: Callable[[Iterable[Any], int], Iterable[Any]] | None = None,
) -> ExportResult:
    """Write the reviewed defects of `line_type` (reviews in [since_ns, until_ns)) to `out`.

    `out` must not exist or be empty: an export never overwrites another. `known_classes` are
    the classes of the line's public set; the manifest lists the exported classes outside them.
    """
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise StoreError(f"{out}: exists and is not an empty folder (an export never overwrites another)")
    if crop_margin_px < 0:
        raise StoreError(f"crop_margin_px: expected >= 0, got {crop_margin_px}")
    reviews = _latest_reviews(db, line_type, since_ns, until_ns)
    if not reviews:
        where = "in the given time range" if since_ns is not None or until_ns is not None else "in the database"
        raise StoreError(f"no reviewed {line_type} defects {where}")
    coils = sorted({c for (c,) in db.execute(
        "SELECT DISTINCT r.coil FROM reviews r JOIN coils c ON c.id = r.coil WHERE c.line_type = ?", (line_type,))})
    groups = _seam_groups(db, {r.defect_id for r in reviews.values()}, coils)
    members = {fid for ids in groups.values() for fid in ids} | set(reviews)
    fragments = _fragments(db, members)
    # A group's review is the latest review of any of its fragments (as the console applies them).
    group_review: dict[int, _Review] = {}
    for head, ids in groups.items():
        latest = max((reviews[i] for i in ids if i in reviews), key=lambda r: r.id, default=None)
        if latest is not None:
            group_review[head] = latest
    fragment_review = {fid: group_review[head] for head, ids in groups.items() if head in group_review
                       for fid in ids}
    group_of = {fid: sorted(ids) for ids in groups.values() for fid in ids}
    neighbours = _frame_neighbours(db, fragments.values())

    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "annotations").mkdir(exist_ok=True)
    result = ExportResult(out=out, reviews=len({r.id for r in fragment_review.values()}))
    known = set(known_classes)
    entries: list[dict[str, Any]] = []
    skipped: list[dict[str, Any]] = []
    ordered = sorted(fragment_review.items())
    for fid, review in (progress(ordered, len(ordered)) if progress else ordered):
        fragment = fragments.get(fid)
        if fragment is None:
            skipped.append({"defect_id": fid, "reason": "defect row missing"})
            continue
        label = _label(fragment, review)
        if label is None:
            skipped.append({"defect_id": fid, "reason": "confirmed as unknown: relabel it to export it"})
            continue
        png = crops.get(fragment.crop_sha256) if fragment.crop_sha256 else None
        if png is None:
            reason = "no crop stored" if fragment.crop_sha256 is None else "crop pruned or missing"
            skipped.append({"defect_id": fid, "reason": reason})
            continue
        size = _png_size(png)
        origin = crop_origin(fragment.box, *size, margin=crop_margin_px) if size else None
        own = _in_crop(fragment.box, origin, size) if origin else None
        if own is None:
            skipped.append({"defect_id": fid, "reason": f"crop geometry does not fit the box with a "
                                                        f"{crop_margin_px} px margin"})
            continue
        objects: list[tuple[str, tuple[float, float, float, float]]] = []
        if label != NEGATIVE:
            objects.append((label, own))
        unreviewed = 0
        for other in neighbours.get((fragment.coil, fragment.camera, fragment.frame_seq), ()):
            if other.id == fid:
                continue
            inside = _in_crop(other.box, origin, size, clip=True)
            if inside is None:
                continue
            other_review = fragment_review.get(other.id)
            other_label = _label(other, other_review) if other_review else None
            if other_review is None:
                unreviewed += 1
            elif other_label not in (None, NEGATIVE):
                objects.append((other_label, inside))
        stem = f"{label}_{fid}"
        (out / "images" / f"{stem}.png").write_bytes(png)
        _write_voc(out / "annotations" / f"{stem}.xml", f"{stem}.png", size, objects)
        result.samples += 1
        if label == NEGATIVE:
            result.negatives += 1
        else:
            result.positives += 1
            result.classes[label] = result.classes.get(label, 0) + 1
        entries.append({
            "file": f"images/{stem}.png", "defect_id": fid, "coil": fragment.coil, "camera": fragment.camera,
            "surface": fragment.surface, "frame_seq": fragment.frame_seq, "detected_as": fragment.cls,
            "score": fragment.score, "label": label, "negative": label == NEGATIVE,
            "seam_group": group_of.get(fid, [fid]),
            "model_version": fragment.model_version, "model_sha256": fragment.model_sha256,
            "review_id": review.id, "reviewed_defect_id": review.defect_id, "reviewer": review.reviewer,
            "action": review.action, "reviewed_ns": review.time_ns,
            "box_in_crop": list(own), "objects": len(objects), "unreviewed_overlaps": unreviewed})
    for item in skipped:
        result.skipped[item["reason"]] = result.skipped.get(item["reason"], 0) + 1
    result.new_classes = sorted(c for c in result.classes if c not in known)
    used = list(fragment_review.values())
    manifest = {
        "format": FORMAT, "database": database_name, "line_type": line_type,
        "exported_ns": time.time_ns(), "crop_margin_px": crop_margin_px,
        "reviews": {"count": result.reviews, "ids": sorted({r.id for r in used}),
                    "first_ns": min(r.time_ns for r in used) if used else None,
                    "last_ns": max(r.time_ns for r in used) if used else None,
                    "since_ns": since_ns, "until_ns": until_ns},
        "reviewers": sorted({r.reviewer for r in used}),
        "classes": dict(sorted(result.classes.items())), "known_classes": sorted(known),
        "new_classes": result.new_classes, "negatives": result.negatives,
        "samples": entries, "skipped": skipped,
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    _write_sha256_manifest(out)
    return result


def _label(fragment: _Fragment, review: _Review) -> str | None:
    """The sample's class, NEGATIVE for a rejected false alarm, None when there is nothing to learn."""
    if review.action == "reject":
        return NEGATIVE
    cls = review.new_class if review.action == "relabel" else fragment.cls
    return None if cls == UNKNOWN else cls


def _latest_reviews(db: Database, line_type: str, since_ns: int | None, until_ns: int | None) -> dict[int, _Review]:
    """defect id -> its latest review (reviews are append-only; the last one stands)."""
    sql = ("SELECT r.id, r.defect_id, r.reviewer, r.action, r.new_class, r.time_ns FROM reviews r "
           "JOIN coils c ON c.id = r.coil WHERE c.line_type = ?")
    params: list[Any] = [line_type]
    if since_ns is not None:
        sql += " AND r.time_ns >= ?"
        params.append(since_ns)
    if until_ns is not None:
        sql += " AND r.time_ns < ?"
        params.append(until_ns)
    latest: dict[int, _Review] = {}
    for row in db.execute(sql + " ORDER BY r.id", params):
        review = _Review(*row)
        latest[review.defect_id] = review
    return latest


def _seam_groups(db: Database, reviewed: set[int], coils: list[str]) -> dict[int, set[int]]:
    """Group id (smallest fragment id) -> fragment ids, for every group holding a reviewed defect."""
    parent: dict[int, int] = {}

    def find(x: int) -> int:
        while parent.get(x, x) != x:
            x = parent[x]
        return x

    for coil in coils:
        for a, b, _severity in seams.coil_links(db, coil):
            ra, rb = find(a), find(b)
            if ra != rb:
                parent[max(ra, rb)] = min(ra, rb)
    groups: dict[int, set[int]] = {}
    for x in set(parent) | {p for p in parent.values()} | reviewed:
        groups.setdefault(find(x), set()).add(x)
    return {head: ids for head, ids in groups.items() if ids & reviewed}


_FRAGMENT_SQL = ("SELECT d.id, d.coil, d.camera, d.surface, d.frame_seq, d.x1, d.y1, d.x2, d.y2, d.class, d.score, "
                 "d.crop_sha256, m.version, m.sha256 FROM defects d LEFT JOIN models m ON m.id = d.model_id ")


def _fragment(row: Any) -> _Fragment:
    return _Fragment(row[0], row[1], row[2], row[3], row[4], tuple(row[5:9]), row[9], row[10], row[11], row[12],
                     row[13])


def _fragments(db: Database, ids: set[int]) -> dict[int, _Fragment]:
    ordered, out = sorted(ids), {}
    for start in range(0, len(ordered), 500):  # SQLite bounds the number of parameters per statement
        chunk = ordered[start:start + 500]
        for row in db.execute(_FRAGMENT_SQL + f"WHERE d.id IN ({','.join('?' * len(chunk))})", chunk):
            out[row[0]] = _fragment(row)
    return out


def _frame_neighbours(db: Database, fragments: Iterable[_Fragment]) -> dict[tuple[str, str, int], list[_Fragment]]:
    """Every defect of the frames the exported fragments come from."""
    return {(coil, camera, seq): [_fragment(row) for row in db.execute(
                _FRAGMENT_SQL + "WHERE d.coil=? AND d.camera=? AND d.frame_seq=?", (coil, camera, seq))]
            for coil, camera, seq in {(f.coil, f.camera, f.frame_seq) for f in fragments}}


def _in_crop(box: tuple[float, float, float, float], origin: tuple[int, int], size: tuple[int, int],
             *, clip: bool = False) -> tuple[float, float, float, float] | None:
    """`box` in crop pixels; None when it does not lie in the crop (or, with `clip`, misses it)."""
    w, h = size
    x1, y1, x2, y2 = (box[0] - origin[0], box[1] - origin[1], box[2] - origin[0], box[3] - origin[1])
    if clip:
        x1, y1, x2, y2 = max(0.0, x1), max(0.0, y1), min(float(w), x2), min(float(h), y2)
        if x2 - x1 < 1 or y2 - y1 < 1:
            return None
    elif x1 < -0.5 or y1 < -0.5 or x2 > w + 1 or y2 > h + 1 or x2 <= x1 or y2 <= y1:
        return None
    return (round(max(0.0, x1), 1), round(max(0.0, y1), 1), round(min(float(w), x2), 1),
            round(min(float(h), y2), 1))


def _png_size(png: bytes) -> tuple[int, int] | None:
    """(width, height) from the PNG's IHDR chunk, None when the bytes are not a PNG."""
    if len(png) < 24 or png[:8] != b"\x89PNG\r\n\x1a\n" or png[12:16] != b"IHDR":
        return None
    width, height = struct.unpack(">II", png[16:24])
    return (width, height) if width and height else None


def _write_voc(path: Path, filename: str, size: tuple[int, int],
               objects: list[tuple[str, tuple[float, float, float, float]]]) -> None:
    root = ET.Element("annotation")
    ET.SubElement(root, "filename").text = filename
    size_el = ET.SubElement(root, "size")
    ET.SubElement(size_el, "width").text = str(size[0])
    ET.SubElement(size_el, "height").text = str(size[1])
    ET.SubElement(size_el, "depth").text = "1"
    for name, box in objects:
        obj = ET.SubElement(root, "object")
        ET.SubElement(obj, "name").text = name
        bb = ET.SubElement(obj, "bndbox")
        for key, value in zip(("xmin", "ymin", "xmax", "ymax"), box, strict=True):
            ET.SubElement(bb, key).text = f"{value:g}"
    ET.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)


def _write_sha256_manifest(out: Path) -> None:
    lines = []
    for path in sorted(p for p in out.rglob("*") if p.is_file() and p.name != "MANIFEST.sha256"):
        lines.append(f"{hashlib.sha256(path.read_bytes()).hexdigest()}  {path.relative_to(out).as_posix()}")
    (out / "MANIFEST.sha256").write_text("\n".join(lines) + "\n")
