"""Matching recorded defects with the simulator's ground truth, in strip millimetres: shared by
`bench e2e` and its `--explain` attribution (`_e2e_explain`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def ground_truth_defects(truth: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One ground-truth defect per labelled box: the fragments of a box cut by seams (same ``group``)
    become one box in strip mm; ``seam`` says whether it was cut, ``rows`` holds its fragments."""
    out: list[dict[str, Any]] = []
    groups: dict[str, dict[str, Any]] = {}
    for t in truth:
        box = np.array([t["along_mm"][0], t["across_mm"][0], t["along_mm"][1], t["across_mm"][1]], float)
        group = t.get("group")
        if group in groups:
            g = groups[group]
            g["box"] = np.concatenate([np.minimum(g["box"][:2], box[:2]), np.maximum(g["box"][2:], box[2:])])
            g["rows"].append(t)
            continue
        item = {"coil": t["coil"], "camera": t["camera"], "class": t["class"], "box": box, "seam": bool(group),
                "rows": [t]}
        out.append(item)
        if group:
            groups[group] = item
    return out


Records = dict[tuple[str, str], list[tuple[str, np.ndarray]]]  # (coil, camera) -> [(class, mm box)]


def read_records(db: Path, *, merge_seams: bool = True) -> tuple[Records, int, float]:
    """Recorded defects per (coil, camera) as (class, [along1, across1, along2, across2] mm), the
    number of fragments in the database and the strip length inspected (mm, all cameras)."""
    rows, fragments, inspected_mm = read_rows(db, merge_seams=merge_seams)
    return by_coil_camera(rows), fragments, inspected_mm


def read_rows(db: Path, *, merge_seams: bool = True) -> tuple[list[dict[str, Any]], int, float]:
    """Every recorded defect as `queries.coil_defects` gives it, with its ``coil``; the number of
    fragments in the database and the strip length inspected (mm, all cameras)."""
    from inspection.records import line_reads, queries
    from inspection.records.db import open_db

    con = open_db(db, readonly=True)
    try:
        rows = [{**d, "coil": coil} for coil in line_reads.coil_ids(con)
                for d in queries.coil_defects(con, coil, merge_seams=merge_seams)]
        fragments = line_reads.defect_count(con)
        inspected_mm = line_reads.inspected_length_mm(con)
    finally:
        con.close()
    return rows, fragments, inspected_mm


def by_coil_camera(rows: list[dict[str, Any]]) -> Records:
    """`read_rows`' defects as `Records`: (class, strip mm box) per (coil, camera), in the rows' order."""
    out: Records = {}
    for d in rows:
        along, across, length, width = d["along_mm"], d["across_mm"], d["length_mm"], d["width_mm"]
        box = np.array([along - length / 2, across - width / 2, along + length / 2, across + width / 2])
        out.setdefault((d["coil"], d["camera"]), []).append((d["class"], box))
    return out


def best_matches(gts: list[dict[str, Any]], records: Records) -> list[tuple[int | None, float]]:
    """For each ground-truth defect, the index of the recorded defect of its coil and camera that
    overlaps it most (any class) and that IoU; (None, 0.0) when none overlaps."""
    out = []
    for t in gts:
        best, best_iou = None, 0.0
        for i, (_, box) in enumerate(records.get((t["coil"], t["camera"]), [])):
            overlap = iou(t["box"], box)
            if overlap > best_iou:
                best, best_iou = i, overlap
        out.append((best, best_iou))
    return out


def inside(inner: np.ndarray, outer: np.ndarray) -> float:
    """Share of `inner`'s area that lies inside `outer`."""
    w = min(inner[2], outer[2]) - max(inner[0], outer[0])
    h = min(inner[3], outer[3]) - max(inner[1], outer[1])
    area = (inner[2] - inner[0]) * (inner[3] - inner[1])
    return float(w * h / area) if w > 0 and h > 0 and area > 0 else 0.0


def iou(a: np.ndarray, b: np.ndarray) -> float:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    if w <= 0 or h <= 0:
        return 0.0
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0
