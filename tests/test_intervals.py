"""The line figures' 95 % intervals (`bench e2e`, inspection.benchmarks._intervals) against published values."""

from __future__ import annotations

import pytest

from inspection.benchmarks._intervals import poisson_rate, wilson


@pytest.mark.parametrize(("successes", "trials", "expected"), [
    (0, 10, [0.0, 0.2775]),  # Wilson (1927) score interval, z = 1.96
    (5, 10, [0.2366, 0.7634]),
    (10, 10, [0.7225, 1.0]),
    (81, 263, [0.2553, 0.3662]),  # Newcombe (1998), table I, case 81/263
])
def test_wilson_interval(successes: int, trials: int, expected: list[float]) -> None:
    assert wilson(successes, trials) == pytest.approx(expected, abs=1e-4)


@pytest.mark.parametrize(("count", "expected"), [
    (0, [0.0, 3.6889]),  # exact (Garwood) Poisson limits: 0.5 * chi2 quantiles, as tabulated
    (1, [0.0253, 5.5716]),
    (10, [4.7954, 18.3904]),
    (100, [81.3640, 121.6268]),
])
def test_poisson_interval(count: int, expected: list[float]) -> None:
    assert poisson_rate(count, 1.0) == pytest.approx(expected, abs=2e-4)
    assert poisson_rate(count, 200.0) == pytest.approx([v / 200 for v in expected], abs=1e-4)  # per m, 4 decimals


def test_no_trials_no_interval_and_bad_counts_are_refused() -> None:
    assert wilson(0, 0) is None and poisson_rate(3, 0.0) is None
    with pytest.raises(ValueError, match="11 successes of 10 trials"):
        wilson(11, 10)
    with pytest.raises(ValueError, match="negative count -1"):
        poisson_rate(-1, 1.0)
