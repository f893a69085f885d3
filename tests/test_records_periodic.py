"""Periodic defect (roll mark) detection on synthetic sequences, positive and negative."""

from __future__ import annotations

import itertools
import math
import random

import numpy as np
import pytest

from inspection.records.periodic import PeriodicParams, Point, find_periodic, may_have_series


def _series(
    pitch: float,
    n: int,
    *,
    start: float = 900.0,
    across: float = 640.0,
    jitter: float = 3.0,
    missing: tuple[int, ...] = (),
    cls: str = "rolled-in_scale",
    seed: int = 0,
    first_id: int = 0,
) -> list[Point]:
    rng = random.Random(seed)
    return [
        Point(first_id + k, "top", cls, start + k * pitch + rng.gauss(0, jitter), across + rng.gauss(0, 5))
        for k in range(n)
        if k not in missing
    ]


def _noise(n: int, seed: int, cls: str = "rolled-in_scale", length_mm: float = 120_000.0) -> list[Point]:
    rng = random.Random(seed)
    return [Point(10_000 + i, "top", cls, rng.uniform(0, length_mm), rng.uniform(0, 1600)) for i in range(n)]


@pytest.mark.parametrize(
    ("pitch", "jitter", "missing"),
    [
        (1884.96, 0.0, ()),  # a 600 mm work roll, clean
        (1884.96, 4.0, ()),  # position jitter
        (2513.27, 4.0, (3, 4, 9, 15)),  # an 800 mm roll, marks missing
        (471.24, 2.0, (1, 7)),  # a 150 mm roll
    ],
)
def test_series_is_found_with_pitch_and_diameter(
    pitch: float, jitter: float, missing: tuple[int, ...]
) -> None:
    points = _series(pitch, 24, jitter=jitter, missing=missing) + _noise(60, seed=1)
    findings = find_periodic(points)
    assert len(findings) == 1
    f = findings[0]
    assert f.pitch_mm == pytest.approx(pitch, rel=0.003)
    assert f.roll_diameter_mm == pytest.approx(pitch / math.pi, rel=0.003)
    assert f.count >= 24 - len(missing) - 1
    assert abs(f.across_mm - 640) < 10 and "roll diameter" in f.message()


def test_two_rolls_on_one_coil_are_two_findings() -> None:
    points = _series(1884.96, 20, across=300, seed=1) + _series(
        2827.43, 14, across=1200, seed=2, first_id=100
    )
    pitches = sorted(round(f.pitch_mm) for f in find_periodic(points))
    assert pitches == [1885, 2827]


@pytest.mark.parametrize("seed", range(8))
def test_random_defects_do_not_fire(seed: int) -> None:
    assert find_periodic(_noise(250, seed)) == []
    # the hard case: many defects of one class in one place, at irregular gaps of 1.5..2.5 m
    lined_up = [Point(k, "top", "x", along, 500) for k, along in enumerate(_irregular(14, seed=1000 + seed))]
    assert find_periodic(lined_up) == []


def _irregular(n: int, seed: int) -> list[float]:
    rng = random.Random(seed)
    return list(itertools.accumulate(rng.uniform(1500, 2500) for _ in range(n)))


@pytest.mark.parametrize(
    ("name", "points"),
    [
        ("too few marks", _series(1884.96, 7)),
        (
            "different classes",
            [
                Point(p.id, p.surface, f"c{p.id % 3}", p.along_mm, p.across_mm)
                for p in _series(1884.96, 12)
            ],
        ),
        (
            "spread across the strip",
            [Point(p.id, p.surface, p.cls, p.along_mm, 100 + 120 * p.id) for p in _series(1884.96, 12)],
        ),
        (
            "irregular gaps",
            [Point(k, "top", "x", along, 500) for k, along in enumerate(_irregular(14, seed=3))],
        ),
    ],
)
def test_negative_cases(name: str, points: list[Point]) -> None:
    assert find_periodic(points) == [], name


def _coil(seed: int, series: int, ints: bool) -> list[Point]:
    """A coil's worth of defects: noise of several classes and surfaces, `series` planted roll marks
    (some with marks missing, some two in one slot), positions as floats or as whole mm."""
    rng = random.Random(seed)
    points = [Point(i, rng.choice(("top", "bottom")), rng.choice(("a", "b", "c")), rng.uniform(0, 60_000),
                    rng.uniform(0, 1600)) for i in range(rng.randrange(0, 3000))]
    for s in range(series):
        pitch = rng.uniform(160, 5000)
        points += _series(pitch, rng.randrange(6, 30), start=rng.uniform(0, 5000), across=rng.uniform(0, 1600),
                          jitter=rng.choice((0.0, 2.0, 8.0)), missing=tuple(rng.sample(range(30), 4)),
                          cls=rng.choice(("a", "b")), seed=seed * 100 + s, first_id=100_000 * (s + 1))
    points += points[:: rng.randrange(5, 50)][:20]  # exact duplicates: equal positions, ties in every sort
    if ints:
        points = [p._replace(along_mm=round(p.along_mm), across_mm=round(p.across_mm)) for p in points]
    rng.shuffle(points)
    return points


@pytest.mark.parametrize("seed", range(12))
def test_the_search_finds_exactly_what_the_reference_search_found(seed: int) -> None:
    from tests import periodic_reference

    for ints in (False, True):
        points = _coil(seed, series=seed % 4, ints=ints)
        assert find_periodic(points) == periodic_reference.find_periodic(points)


def _has_candidate(x: np.ndarray, params: PeriodicParams) -> bool:
    """`_best_series`' first steps: is there any candidate pitch among the along positions `x`?"""
    near = np.concatenate([x[j:] - x[:-j] for j in (1, 2, 3) if j < len(x)])
    gaps = np.concatenate([near / k for k in (1, 2, 3)])
    gaps = np.sort(gaps[(gaps >= params.min_pitch_mm) & (gaps <= params.max_pitch_mm)])
    tol = params.along_tol_mm + 0.002 * gaps
    support = np.searchsorted(gaps, gaps + tol, side="right") - np.searchsorted(gaps, gaps - tol, side="left")
    return bool((support >= params.min_count - 1).any())


@pytest.mark.parametrize("seed", range(6))
def test_the_window_filter_never_drops_a_window_with_a_candidate_pitch(seed: int) -> None:
    """`may_have_series` rules windows out for all of them at once; it may keep one without a
    candidate pitch, never drop one with: near series (gaps just inside and outside the tolerance),
    ints, repeated positions and random windows."""
    rng = np.random.default_rng(seed)
    params = PeriodicParams()
    windows, along, kept = [], [], 0
    for _ in range(400):
        n = int(rng.integers(params.min_count, 40))
        pitch = float(rng.choice([150.0, 151.0, rng.uniform(150, 3000), rng.uniform(3000, 15_000), 15_000.0]))
        kind = rng.integers(4)
        if kind == 0:  # a series whose gaps wander by about the tolerance
            x = np.arange(n) * pitch + rng.uniform(-1, 1, n) * (params.along_tol_mm + 0.002 * pitch) / 2
        elif kind == 1:
            x = rng.uniform(0, 200_000, n)
        elif kind == 2:
            x = np.round(rng.uniform(0, n * pitch, n))
        else:
            x = np.repeat(rng.uniform(0, 40_000, n // 2 + 1), 2)[:n]
        windows.append((len(along), len(along) + n))
        along.extend(x.tolist())
    maybe = may_have_series(np.array(along), windows, params)
    for (lo, hi), m in zip(windows, maybe, strict=True):
        has = _has_candidate(np.sort(np.array(along[lo:hi])), params)
        assert m or not has, (lo, hi)
        kept += has
    assert kept > 50 and not maybe.all()  # both kinds of window were there
