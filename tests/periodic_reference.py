"""The roll-mark search as it was before its windows became array slices (commit 01f6c8b), kept
verbatim as the reference `tests/test_records_periodic.py` compares the faster search with."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from inspection.records.periodic import PeriodicFinding, PeriodicParams, Point


def find_periodic(points: Sequence[Point], params: PeriodicParams | None = None) -> list[PeriodicFinding]:
    """All periodic series among `points` (one coil), strongest first."""
    params = params or PeriodicParams()
    groups: dict[tuple[str, str], list[Point]] = {}
    for p in points:
        groups.setdefault((p.surface, p.cls), []).append(p)
    findings: list[PeriodicFinding] = []
    for (surface, cls), pts in sorted(groups.items()):
        for cluster in _across_windows(pts, params.across_tol_mm):
            found = _best_series(cluster, params)
            if found:
                pitch, members = found
                findings.append(PeriodicFinding(
                    surface=surface, cls=cls, across_mm=float(np.median([m.across_mm for m in members])),
                    pitch_mm=pitch, roll_diameter_mm=pitch / math.pi, count=len(members),
                    first_along_mm=members[0].along_mm, last_along_mm=members[-1].along_mm,
                    defect_ids=tuple(m.id for m in members)))
    kept: list[PeriodicFinding] = []
    for f in sorted(findings, key=lambda f: (-f.count, f.pitch_mm)):
        # Overlapping windows find the same series twice: keep the strongest copy.
        if all(len(set(f.defect_ids) & set(k.defect_ids)) * 2 < f.count for k in kept):
            kept.append(f)
    return kept


def _across_windows(points: list[Point], tol: float) -> list[list[Point]]:
    """Points in windows 2*tol wide, every tol across the strip (overlapping, so no series is cut)."""
    pts = sorted(points, key=lambda p: p.across_mm)
    across = np.array([p.across_mm for p in pts])
    windows = []
    start = across[0] - tol
    while start <= across[-1]:
        lo, hi = np.searchsorted(across, start), np.searchsorted(across, start + 2 * tol, side="right")
        if hi - lo > 0:
            windows.append(sorted(pts[lo:hi], key=lambda p: p.along_mm))
        start += tol
    return windows


def _best_series(cluster: list[Point], params: PeriodicParams) -> tuple[float, list[Point]] | None:
    n = len(cluster)
    if n < params.min_count or n > params.max_points:
        return None  # a band of thousands of defects is graded as such, not read as roll marks
    x = np.array([p.along_mm for p in cluster])
    gaps = np.concatenate([(x[j:] - x[:-j]) / k for j in (1, 2, 3) if j < n for k in (1, 2, 3)])
    gaps = np.sort(gaps[(gaps >= params.min_pitch_mm) & (gaps <= params.max_pitch_mm)])
    # A real pitch shows up again and again among the gaps (every pair of neighbouring marks gives
    # it); keep only candidates supported by at least min_count - 1 gaps, which prunes random ones.
    tol = params.along_tol_mm + 0.002 * gaps
    support = np.searchsorted(gaps, gaps + tol, side="right") - np.searchsorted(gaps, gaps - tol, side="left")
    best: tuple[int, float, float, np.ndarray] | None = None
    offsets = np.arange(n)
    for pitch in np.unique(np.round(gaps[support >= params.min_count - 1])):  # 1 mm steps
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
    members = [p for p, keep in zip(cluster, inliers, strict=True) if keep]
    xs = np.array([m.along_mm for m in members])
    steps = np.round((xs - xs[0]) / pitch)
    refined = float(np.polyfit(steps, xs, 1)[0]) if len(set(steps)) > 1 else pitch
    return refined, members
