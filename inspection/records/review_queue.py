"""Which defects go to an expert, and in what order (filled per coil at grading time).

One inspector cannot look at every detection, so each coil gets what must be seen plus a budget:

- ``unknown``: every defect of class ``unknown`` (the model could not name it; until a person names
  it, its coil is graded conservatively);
- ``high_severity``: every critical defect (severity 3): it may stop or downgrade a coil;
- within the coil's budget (``records.review_budget_per_hour`` times the coil's duration, at least
  one item): a ``sample`` drawn uniformly at random within each class, classes taken in turn
  (stratified; seeded by the coil id and `seed`, so reproducible), and, for active learning, what
  the models are least sure of: first ``disagreement`` (defects a shadow model missed or named
  otherwise, `shadow.disputed_defects`), then ``low_confidence`` detections (score below
  ``low_confidence``), each least sure (lowest score) first. Half the budget (rounded up) goes to the
  sample, the rest to those, then to more sample if none is left. The sample stays uniform on
  purpose: only reviews of ``sample`` items estimate field precision per class
  (`analytics.field_precision`); the other reasons are biased towards errors, which is what makes
  them worth a label. A critical defect drawn in the sample is queued as a sample.

Everything else is not queued (sampled out); `queries.review_coverage` counts it per coil.

Order: priority bands by what the defect is, never by why it was queued, so a random sample can
never jump ahead of a critical defect: unknown 3, critical 2, uncertain 1 (a score below
``low_confidence``, or two models that disagree on it), other 0; within a band,
``severity / 3 + (1 - score)`` (scaled below 1), so a critical, uncertain detection comes first.
Without disagreements the picks and priorities are exactly those of the rule before shadow mode, so
`audit verify` rebuilds queues filled before it unchanged.

A defect cut by frame seams is queued once, under the id of its head fragment, with its merged
class, best score and merged severity (`queries.coil_defects`).
"""

from __future__ import annotations

import operator
import random
import zlib
from collections.abc import Collection, Iterable
from typing import Any

from sqlite_utils import Database

from inspection.records.queries import coil_defects
from inspection.records.shadow import disputed_defects
from inspection.results import UNKNOWN

UNKNOWN_PRIORITY = 3.0  # the unknown band: above any other item's priority (< 3)


def priority(cls: str, score: float, severity: int, low_confidence: float = 0.5, disputed: bool = False) -> float:
    """Band (unknown 3, critical 2, uncertain or disputed 1, other 0) plus a within-band order below 1."""
    uncertain = score < low_confidence or disputed
    band = UNKNOWN_PRIORITY if cls == UNKNOWN else 2.0 if severity >= 3 else 1.0 if uncertain else 0.0
    return band + (severity / 3 + (1 - score)) / 2.01


def select_for_review(
    db: Database,
    coil: str,
    *,
    budget: int,
    low_confidence: float = 0.5,
    seed: int = 0,
    defects: list[dict[str, Any]] | None = None,
) -> list[tuple[int, str, float, str]]:
    """(defect_id, class, priority, reason) of the coil's defects to queue; `budget` bounds the
    sample, disputed and uncertain items (unknown and critical defects are always queued). `defects`:
    the coil's `coil_defects` rows (rejected ones included), when the caller has read them already."""
    rows = coil_defects(db, coil) if defects is None else defects
    fragments = disputed_defects(db, coil)
    picked = list(map(_PICKED, rows))  # (id, class, score, severity), built in C: 10,000 a coil
    # a defect cut by frame seams is queued under its head: disputed when any fragment is
    disputed = {d["id"] for d in rows if fragments.intersection(d["parts"])} if fragments else set()
    return pick_for_review(coil, picked, budget=budget, low_confidence=low_confidence, seed=seed,
                           disputed=disputed)


def pick_for_review(
    coil: str,
    defects: Iterable[tuple[int, str, float, int]],
    *,
    budget: int,
    low_confidence: float = 0.5,
    seed: int = 0,
    disputed: Collection[int] = (),
) -> list[tuple[int, str, float, str]]:
    """`select_for_review` on given defects, (id, class, score, severity) each, merged across seams;
    `disputed`: ids among them a shadow model disagreed on. `audit verify` rebuilds the queue with it
    from the evidence of the time."""
    rows = sorted(defects)
    disputed = frozenset(disputed)

    def prio(defect_id: int, cls: str, score: float, sev: int) -> float:
        return priority(cls, score, sev, low_confidence, defect_id in disputed)

    picked: dict[int, tuple[int, str, float, str]] = {}
    for defect_id, cls, score, sev in rows:
        if cls == UNKNOWN:
            picked[defect_id] = (defect_id, cls, prio(defect_id, cls, score, sev), "unknown")
    rng = random.Random(zlib.crc32(f"{coil}:{seed}".encode()))
    draws = _stratified_draws([r for r in rows if r[1] != UNKNOWN], rng)
    # critical defects are queued anyway (below): a disputed one does not spend the budget
    disagreed = (sorted((r for r in rows if r[1] != UNKNOWN and r[3] < 3 and r[0] in disputed), key=_least_sure)
                 if disputed else [])
    uncertain = sorted((r for r in rows if r[1] != UNKNOWN and r[2] < low_confidence), key=_least_sure)
    spent = 0

    def take(row: tuple[int, str, float, int], reason: str) -> None:
        nonlocal spent
        if row[0] in picked:
            return
        picked[row[0]] = (row[0], row[1], prio(*row), reason)
        spent += 1

    for row in draws[:(budget + 1) // 2 if disagreed or uncertain else budget]:
        take(row, "sample")
    for reason, group in (("disagreement", disagreed), ("low_confidence", uncertain)):
        for row in group:
            if spent >= budget:
                break
            take(row, reason)
    for row in draws:
        if spent >= budget:
            break
        take(row, "sample")
    for defect_id, cls, score, sev in rows:  # critical defects: always, whatever the budget
        if sev >= 3 and defect_id not in picked:
            picked[defect_id] = (defect_id, cls, prio(defect_id, cls, score, sev), "high_severity")
    return sorted(picked.values(), key=lambda item: (-item[2], item[0]))


# Lowest score first (ties by id): the order of both active-learning lists (in C: a few thousand a coil)
_least_sure = operator.itemgetter(2, 0)
_PICKED = operator.itemgetter("id", "class", "score", "severity")


def _stratified_draws(rows: list[tuple[int, str, float, int]], rng: random.Random) -> list[tuple[int, str, float, int]]:
    """Every row once, in the order a stratified sample draws them: classes in turn (their order
    shuffled), uniformly at random within each class."""
    by_class: dict[str, list[tuple[int, str, float, int]]] = {}
    for row in rows:
        by_class.setdefault(row[1], []).append(row)
    classes = sorted(by_class)
    rng.shuffle(classes)
    for cls in classes:
        rng.shuffle(by_class[cls])
    out = []
    for turn in range(max((len(v) for v in by_class.values()), default=0)):
        out += [by_class[cls][turn] for cls in classes if turn < len(by_class[cls])]
    return out
