"""Periodic defects (roll marks): one class at about the same place across the strip, repeating
at a constant pitch along it. The pitch is the circumference of the roll that printed them, so the
roll diameter is ``pitch / pi``.

Method, per coil, surface and (effective) class:
1. look at windows ``2 * across_tol_mm`` wide across the strip, every ``across_tol_mm`` (overlapping);
2. in each group, try candidate pitches from the gaps between nearby occurrences (and their
   halves / thirds, for missing marks) within [``min_pitch_mm``, ``max_pitch_mm``] that recur
   among those gaps at least ``min_count - 1`` times;
3. for a pitch p, the lattice phase is the densest window of width ``2 tol`` among the
   occurrences' positions modulo p (``tol = along_tol_mm + 0.2% p``); the inliers are the
   occurrences within ``tol`` of that lattice ``a + n p``; the best pitch has the most inliers, then
   the highest fill (inliers / lattice slots between the first and last inlier);
4. report it when there are >= ``min_count`` inliers and fill >= ``min_fill`` (so a few marks may
   be missing, but random defects do not line up); the pitch is refined by least squares.
   A window with more than ``max_points`` defects of one class is a band, not roll marks: skipped.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np


@dataclass(frozen=True)
class PeriodicParams:
    across_tol_mm: float = 25.0
    along_tol_mm: float = 15.0
    min_pitch_mm: float = 150.0
    max_pitch_mm: float = 15_000.0
    min_count: int = 8
    min_fill: float = 0.6
    max_points: int = 2000


@dataclass(frozen=True)
class PeriodicFinding:
    surface: str
    cls: str
    across_mm: float
    pitch_mm: float
    roll_diameter_mm: float
    count: int
    first_along_mm: float
    last_along_mm: float
    defect_ids: tuple[int, ...]

    def message(self) -> str:
        return (f"periodic {self.cls} on {self.surface} at {self.across_mm:.0f} mm across: "
                f"{self.count} marks, "
                f"pitch {self.pitch_mm:.0f} mm -> roll diameter {self.roll_diameter_mm:.0f} mm")


class Point(NamedTuple):  # 10,000 per coil at every finalisation: a tuple is 5x cheaper to build
    id: int
    surface: str
    cls: str
    along_mm: float
    across_mm: float


# A `Point`, or the plain tuple of its fields (the recorder's, built in C by `operator.itemgetter`)
PointFields = tuple[int, str, str, float, float]


def find_periodic(points: Sequence[PointFields], params: PeriodicParams | None = None) -> list[PeriodicFinding]:
    """All periodic series among `points` (one coil; `Point`s or tuples of their fields), strongest first."""
    params = params or PeriodicParams()
    # Per point only C-level passes (`map`, `fromiter`): a coil has 10,000 points, and grouping them
    # one by one in Python cost as much as the search itself.
    keys = list(map(_GROUP_KEY, points))
    groups = sorted(set(keys))
    code_of = {key: i for i, key in enumerate(groups)}
    codes = np.fromiter(map(code_of.__getitem__, keys), dtype=np.intp, count=len(keys))
    across = np.fromiter(map(_ACROSS, points), dtype=float, count=len(keys))
    along = np.fromiter(map(_ALONG, points), dtype=float, count=len(keys))
    findings: list[PeriodicFinding] = []
    for code, (surface, cls) in enumerate(groups):
        members_of = np.flatnonzero(codes == code)  # the group's points, in the order given
        by_across = members_of[np.argsort(across[members_of], kind="stable")]
        for series, pitch in _group_series(across[by_across], along[by_across], params):
            members = [points[i] for i in by_across[series].tolist()]
            findings.append(PeriodicFinding(
                surface=surface, cls=cls, across_mm=float(np.median([m[4] for m in members])),
                pitch_mm=pitch, roll_diameter_mm=pitch / math.pi, count=len(members),
                first_along_mm=members[0][3], last_along_mm=members[-1][3],
                defect_ids=tuple(m[0] for m in members)))
    kept: list[PeriodicFinding] = []
    for f in sorted(findings, key=lambda f: (-f.count, f.pitch_mm)):
        # Overlapping windows find the same series twice: keep the strongest copy.
        if all(len(set(f.defect_ids) & set(k.defect_ids)) * 2 < f.count for k in kept):
            kept.append(f)
    return kept


_GROUP_KEY = operator.itemgetter(1, 2)  # (surface, cls) of a `Point`
_ALONG, _ACROSS = operator.itemgetter(3), operator.itemgetter(4)


def _group_series(across: np.ndarray, along: np.ndarray, params: PeriodicParams) -> list[tuple[np.ndarray, float]]:
    """The series of one surface and class, whose points' positions are given in across order
    (ties in the order the points came): (the members' indexes in along order, pitch) per window
    that has one.

    Windows are ``2 * across_tol_mm`` wide, every ``across_tol_mm`` across the strip (overlapping,
    so no series is cut). The points are put in arrays once per group and each window is a slice of
    them: a coil has hundreds of windows, nearly all without a series, and building a list of
    points for each cost half the search. The order within a window is the points' along order,
    ties kept in across order (a stable sort), as the search has always seen them."""
    tol = params.across_tol_mm
    starts = []
    start = across[0] - tol
    while start <= across[-1]:  # the same float steps as ever: the same windows
        starts.append(start)
        start += tol
    first = np.array(starts)
    los = np.searchsorted(across, first)
    his = np.searchsorted(across, first + 2 * tol, side="right")
    # too few for a series, or a band of thousands graded as such, not roll marks
    windows = [(lo, hi) for lo, hi in zip(los.tolist(), his.tolist(), strict=True)
               if params.min_count <= hi - lo <= params.max_points]
    out = []
    for (lo, hi), maybe in zip(windows, may_have_series(along, windows, params), strict=True):
        if not maybe:
            continue  # no candidate pitch: `_best_series` would find none
        order = lo + np.argsort(along[lo:hi], kind="stable")
        found = _best_series(along[order], params)
        if found:
            pitch, inliers = found
            out.append((order[inliers], pitch))
    return out


# Relative and absolute slack of `may_have_series` over `_best_series`' own float comparisons: the
# filter may let a window through that has no candidate, never the other way round.
_SLACK = 1e-9


def may_have_series(along: np.ndarray, windows: Sequence[tuple[int, int]], params: PeriodicParams) -> np.ndarray:
    """For each window (``along[lo:hi]``), False when `_best_series` surely finds no candidate pitch
    in it, for all windows at once: a coil has hundreds of windows, nearly all without a series, and
    taking them one by one through `_best_series`' first steps was most of the roll-mark search.

    A candidate is a gap g with at least ``min_count - 1`` gaps (g itself among them) within
    ``tol(g) = along_tol + 0.002 g`` of it; those are consecutive among the window's sorted gaps, so
    some run of ``min_count - 1`` consecutive gaps containing g spans at most ``2 tol(g)``, and
    ``g <=`` the run's last gap. The test here is that, on the same gaps (differences of the sorted
    positions of the next three occurrences and their halves and thirds, within the pitch range)."""
    run = params.min_count - 1
    if not windows or run < 2:
        return np.ones(len(windows), dtype=bool)  # a single gap is a candidate: nothing to rule out
    lo = np.array([w[0] for w in windows])
    n = np.array([w[1] - w[0] for w in windows])
    cols = np.arange(int(n.max()))
    inside = cols[None, :] < n[:, None]
    x = np.where(inside, along[np.minimum(lo[:, None] + cols[None, :], len(along) - 1)], np.inf)
    x.sort(axis=1)  # each window's positions in along order, padded with inf
    with np.errstate(invalid="ignore"):  # inf - inf in the padding: nan, never a gap
        near = np.concatenate([x[:, j:] - x[:, :-j] for j in (1, 2, 3) if j < x.shape[1]], axis=1)
        gaps = np.concatenate([near / k for k in (1, 2, 3)], axis=1)
        gaps[~((gaps >= params.min_pitch_mm) & (gaps <= params.max_pitch_mm))] = np.inf
        gaps.sort(axis=1)
        if gaps.shape[1] < run:
            return np.zeros(len(windows), dtype=bool)
        last = gaps[:, run - 1:]
        span = last - gaps[:, :gaps.shape[1] - run + 1]
        limit = 2 * (params.along_tol_mm + 0.002 * last) * (1 + _SLACK) + _SLACK
        return np.asarray(((span <= limit) & np.isfinite(last)).any(axis=1))  # a run into the padding is none


def _best_series(x: np.ndarray, params: PeriodicParams) -> tuple[float, np.ndarray] | None:
    """The best pitch among the along positions `x` (sorted) of one window, refined, and its inliers."""
    n = len(x)
    # the gaps to the next three occurrences, and their halves and thirds (missing marks)
    near = np.concatenate([x[j:] - x[:-j] for j in (1, 2, 3) if j < n])
    gaps = np.concatenate([near / k for k in (1, 2, 3)])
    gaps = np.sort(gaps[(gaps >= params.min_pitch_mm) & (gaps <= params.max_pitch_mm)])
    # A real pitch shows up again and again among the gaps (every pair of neighbouring marks gives
    # it); keep only candidates supported by at least min_count - 1 gaps, which prunes random ones.
    tol = params.along_tol_mm + 0.002 * gaps
    support = np.searchsorted(gaps, gaps + tol, side="right") - np.searchsorted(gaps, gaps - tol, side="left")
    candidates = gaps[support >= params.min_count - 1]
    if not len(candidates):
        return None
    best: tuple[int, float, float, np.ndarray] | None = None
    offsets = np.arange(n)
    for pitch in np.unique(np.round(candidates)):  # 1 mm steps
        tol = params.along_tol_mm + 0.002 * pitch
        # Densest phase window (x mod pitch, circular) in O(n log n) instead of trying every anchor.
        phases = np.sort(np.mod(x, pitch))
        ends = np.searchsorted(np.concatenate([phases, phases + pitch]), phases + 2 * tol, side="right")
        start = int(np.argmax(ends - offsets))
        if ends[start] - start < params.min_count:
            continue
        phase = (x - (phases[start] + tol)) / pitch
        steps = np.round(phase)
        inliers = np.abs(phase - steps) * pitch <= tol
        count = int(inliers.sum())
        slots_used = steps[inliers]
        if count < params.min_count or len(np.unique(slots_used)) != count:
            continue  # two occurrences in one slot: not a clean series at this pitch
        fill = count / (int(slots_used.max() - slots_used.min()) + 1)
        if fill >= params.min_fill and (best is None or (count, fill) > (best[0], best[1])):
            best = (count, fill, float(pitch), inliers)
    if best is None:
        return None
    _, _, pitch, inliers = best
    xs = x[inliers]
    steps = np.round((xs - xs[0]) / pitch)
    refined = float(np.polyfit(steps, xs, 1)[0]) if len(set(steps.tolist())) > 1 else pitch
    return refined, inliers
