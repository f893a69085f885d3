"""Cause tables shared by `bench e2e --explain` (`_e2e_explain`, on the line) and `evaluate --explain`
(`training.explain`, on dataset images): counts per class and cause, how much of a box lies inside
labelled areas, and the plain-text tables both print."""

from __future__ import annotations

from collections import Counter
from typing import Any, TextIO

import numpy as np

AREA_SHARE = 0.5  # a near-defect detection this much inside its class's labelled boxes is a piece of that area
AREA_SAMPLES = 16  # the share is measured on a 16 x 16 grid of points over the detection's box


def cause_table(counts: dict[str, Counter], causes: tuple[str, ...], total: int | None) -> dict[str, Any]:
    """Counts per class and cause (every cause listed, 0 where none), their sums, and `total` (the
    ground-truth count the causes are a part of) when given."""
    by_cause: Counter = Counter()
    for c in counts.values():
        by_cause.update(c)
    out: dict[str, Any] = {"total": sum(by_cause.values()), "by_cause": {c: by_cause.get(c, 0) for c in causes},
                           "per_class": {k: {c: v.get(c, 0) for c in causes} for k, v in sorted(counts.items())}}
    if total is not None:
        out["of_ground_truth"] = total
    return out


def share_inside(box: np.ndarray, areas: list[np.ndarray]) -> float:
    """Share of `box` lying inside the union of `areas` (boxes of the same form), measured on a grid of
    `AREA_SAMPLES` x `AREA_SAMPLES` points at the centres of the box's cells."""
    if not areas:
        return 0.0
    steps = (np.arange(AREA_SAMPLES) + 0.5) / AREA_SAMPLES
    a, b = np.meshgrid(box[0] + steps * (box[2] - box[0]), box[1] + steps * (box[3] - box[1]), indexing="ij")
    inside_any = np.zeros(a.shape, dtype=bool)
    for area in areas:
        inside_any |= (a >= area[0]) & (a <= area[2]) & (b >= area[1]) & (b <= area[3])
    return float(inside_any.mean())


def print_cause_tables(figures: dict[str, Any], tables: dict[str, tuple[tuple[str, ...], str]], out: TextIO) -> None:
    """`figures[name]` (a `cause_table`) for each name in `tables`, one row per class; `tables[name]` holds
    its causes and the noun its heading counts ("defects", "boxes", "detections")."""
    for name, (causes, noun) in tables.items():
        table = figures[name]
        print(f"\n{name} {noun} by cause ({table['total']}"
              + (f" of {table['of_ground_truth']} ground-truth {noun}" if "of_ground_truth" in table else "")
              + ")", file=out)
        width = max([len("class"), *(len(k) for k in table["per_class"])])
        print("  ".join(["class".ljust(width), *causes]), file=out)
        for cls, row in table["per_class"].items():
            print("  ".join([cls.ljust(width), *(str(row[c]).rjust(len(c)) for c in causes)]), file=out)
        print("  ".join(["all".ljust(width), *(str(table["by_cause"][c]).rjust(len(c)) for c in causes)]), file=out)
