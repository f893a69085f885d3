"""95 % intervals for the line's figures (`bench e2e`), in closed form (no numpy, no scipy).

A line run pastes about 200 defects: a detection rate of 0.94 on them is known to a few percent only,
so a goal of 0.95 may lie inside the run's own uncertainty. Each pasted defect is drawn on its own
(class, image and place), so the detection rate and the class accuracy are binomial shares with a
Wilson score interval (good at shares near 0 or 1, where the normal one leaves [0, 1]); false
defects are counts per metre of strip, with the exact (Garwood) Poisson interval, found by bisection
on the Poisson distribution function.
"""

from __future__ import annotations

import math
from collections.abc import Callable

Z95 = 1.959963984540054  # two-sided 95 % normal quantile


def wilson(successes: int, trials: int, z: float = Z95) -> list[float] | None:
    """Wilson score interval of a binomial share; None without trials."""
    if trials <= 0:
        return None
    if not 0 <= successes <= trials:
        raise ValueError(f"wilson: {successes} successes of {trials} trials")
    p = successes / trials
    denominator = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denominator
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denominator
    return [round(max(0.0, centre - half), 4), round(min(1.0, centre + half), 4)]


def _poisson_cdf(count: int, mean: float) -> float:
    """P(X <= count) for X ~ Poisson(mean), summed in log space (stable for counts in the thousands)."""
    if mean <= 0:
        return 1.0
    log_terms = [k * math.log(mean) - mean - math.lgamma(k + 1) for k in range(count + 1)]
    top = max(log_terms)
    return min(1.0, math.exp(top) * sum(math.exp(t - top) for t in log_terms))


def _solve(f: Callable[[float], float], target: float, hi: float) -> float:
    """The mean at which the decreasing function `f` of the mean crosses `target` (bisection)."""
    lo = 0.0
    while f(hi) > target:
        hi *= 2
    for _ in range(200):
        mid = (lo + hi) / 2
        if f(mid) > target:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def poisson_rate(count: int, exposure: float, level: float = 0.95) -> list[float] | None:
    """Garwood interval of a Poisson rate: `count` events over `exposure` (e.g. metres); None
    without exposure."""
    if exposure <= 0:
        return None
    if count < 0:
        raise ValueError(f"poisson_rate: negative count {count}")
    tail = (1 - level) / 2
    # low: the mean at which `count` or more events have probability `tail`; high: at which `count` or
    # fewer have it. P(X <= k) falls as the mean grows, so both are one bisection.
    low = 0.0 if count == 0 else _solve(lambda m: _poisson_cdf(count - 1, m), 1 - tail, count + 10.0)
    high = _solve(lambda m: _poisson_cdf(count, m), tail, 2.0 * count + 10.0)
    return [round(low / exposure, 4), round(high / exposure, 4)]
