"""Which defects go to an expert, and in what order (filled per coil at grading time).

Priority (higher first) = ``severity / 3 + (1 - score)``, so a critical, uncertain detection comes
first; a defect of class ``unknown`` (the model could not name it) gets 3 more, so it is always
first in the queue: until a person names it, its coil is graded conservatively. A defect is queued when:

- ``unknown``: its class is ``unknown``;
- ``high_severity``: its severity is 3 (critical) -- it may stop or downgrade a coil;
- ``low_confidence``: its score is below ``low_confidence`` (default 0.5);
- ``sample``: it is one of ``sample_per_class`` defects drawn at random (seeded by the coil id and
  `seed`, so reproducible) from each class of the coil, whatever its score. Only reviews of
  ``sample`` items are used to estimate field precision per class (`queries.field_precision`),
  because the other two reasons are biased towards errors. Samples get +0.25 priority so they are
  not starved by a long tail of uncertain detections.

At most ``max_per_coil`` non-sample items are queued per coil (highest priority first).

A defect cut by frame seams is queued once, under the id of its head fragment, with its merged
class, best score and merged severity (`queries.coil_defects`).
"""

from __future__ import annotations

import random
import zlib

from sqlite_utils import Database

from inspection.records.queries import coil_defects
from inspection.results import UNKNOWN

UNKNOWN_PRIORITY = 3.0  # above any other item's priority (at most 2.25)


def select_for_review(
    db: Database,
    coil: str,
    *,
    low_confidence: float = 0.5,
    sample_per_class: int = 2,
    max_per_coil: int = 50,
    seed: int = 0,
) -> list[tuple[int, str, float, str]]:
    """(defect_id, class, priority, reason) of the coil's defects to queue."""
    rows = sorted((d["id"], d["class"], d["score"], d["severity"]) for d in coil_defects(db, coil))
    picked: dict[int, tuple[int, str, float, str]] = {}
    by_class: dict[str, list[int]] = {}
    urgent = []
    for defect_id, cls, score, sev in rows:
        by_class.setdefault(cls, []).append(defect_id)
        priority = sev / 3 + (1 - score)
        if cls == UNKNOWN:
            urgent.append((defect_id, cls, priority + UNKNOWN_PRIORITY, "unknown"))
        elif sev >= 3:
            urgent.append((defect_id, cls, priority, "high_severity"))
        elif score < low_confidence:
            urgent.append((defect_id, cls, priority, "low_confidence"))
    rng = random.Random(zlib.crc32(f"{coil}:{seed}".encode()))
    info = {r[0]: r for r in rows}
    for cls in sorted(by_class):
        ids = by_class[cls]
        for defect_id in rng.sample(ids, min(sample_per_class, len(ids))):
            _, _, score, sev = info[defect_id]
            picked[defect_id] = (defect_id, cls, sev / 3 + (1 - score) + 0.25, "sample")
    urgent.sort(key=lambda item: -item[2])
    for item in urgent:
        if item[3] == "unknown":  # always queued, also when drawn as a sample: the reason that matters
            picked[item[0]] = item
    for item in urgent:
        if len(picked) >= max_per_coil + sample_per_class * len(by_class):
            break
        picked.setdefault(item[0], item)
    return sorted(picked.values(), key=lambda item: -item[2])
