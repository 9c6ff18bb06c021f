"""The fitted laws the performance model (``bench.perfmodel``, whose module docstring gives
every formula) is built from: least squares, the scaling law across CPUs, the percentile-to-mean
ratios, how workers share connections, and the error measure the validation reports. Pure
functions, no I/O."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


def lstsq(columns: Sequence[Sequence[float]], y: Sequence[float]) -> list[float]:
    a = np.column_stack([np.asarray(c, dtype=float) for c in columns])
    coef, *_ = np.linalg.lstsq(a, np.asarray(y, dtype=float), rcond=None)
    return [float(v) for v in coef]


@dataclass(frozen=True)
class Scaling:
    """``X(c) = c / (a + b (c - 1) + e c (c - 1))`` requests/s per instance; a, b, e in s."""

    a: float
    b: float
    e: float = 0.0

    @property
    def sigma(self) -> float:
        """Contention ``b / a`` of the fitted law."""
        return self.b / self.a

    @classmethod
    def through(cls, cpus: float, plateau_rps: float, sigma: float) -> Scaling:
        """Amdahl's law with contention ``sigma`` through one measured plateau."""
        a = cpus / (plateau_rps * (1 + sigma * (cpus - 1)))
        return cls(a, sigma * a)

    def plateau_rps(self, cpus: float) -> float:
        denom = self.a + self.b * (cpus - 1) + self.e * cpus * (cpus - 1)
        if denom <= 0:
            raise ValueError(f"the scaling law fitted has no finite plateau at {cpus} CPUs "
                             f"(a={self.a:.3g}, b={self.b:.3g}, e={self.e:.3g})")
        return cpus / denom


def fit_scaling(points: Sequence[tuple[float, float]]) -> Scaling:
    """The scaling law through ``(cpus, plateau_rps)`` points: two distinct CPU counts fit
    Amdahl's law (``e = 0``), three or more the universal scalability law."""
    cpus = sorted({c for c, _ in points})
    if len(cpus) < 2:
        raise ValueError(f"a scaling law needs plateaus at two or more CPU counts, got {cpus}")
    if any(x <= 0 for _, x in points):
        raise ValueError(f"plateaus must be > 0 requests/s, got {[x for _, x in points]}")
    y = [c / x for c, x in points]
    ones = [1.0] * len(points)
    cm1 = [c - 1 for c, _ in points]
    if len(cpus) == 2:
        a, b = lstsq([ones, cm1], y)
        return Scaling(a, b)
    a, b, e = lstsq([ones, cm1, [c * (c - 1) for c, _ in points]], y)
    return Scaling(a, b, e)


@dataclass(frozen=True)
class Tails:
    """Percentile-to-mean ratios against the users per worker ``m``: measured
    ``(m, p50/mean, p95/mean)`` points, interpolated linearly and held flat beyond the ends."""

    points: tuple[tuple[float, float, float], ...]

    def at(self, per_worker: float) -> tuple[float, float]:
        ms = [p[0] for p in self.points]
        return (float(np.interp(per_worker, ms, [p[1] for p in self.points])),
                float(np.interp(per_worker, ms, [p[2] for p in self.points])))


def fit_tails(points: Sequence[tuple[float, float, float]]) -> Tails:
    """The ratios of ``(users per worker, p50/mean, p95/mean)`` points, averaged where several
    share a load."""
    if not points:
        raise ValueError("fit_tails needs at least one measured level")
    by: dict[float, list[tuple[float, float, float]]] = {}
    for pt in points:
        by.setdefault(pt[0], []).append(pt)
    return Tails(tuple((m, sum(p[1] for p in g) / len(g), sum(p[2] for p in g) / len(g))
                       for m, g in sorted(by.items())))


def share_probabilities(users: int, workers: int, alpha: float) -> list[float]:
    """``P(B = b)``, ``b = 0..users``: the connections one of ``workers`` workers holds when
    ``users`` are split by a symmetric Dirichlet-multinomial with concentration ``alpha``; its
    marginal is beta-binomial, ``C(n, b) B(b + alpha, n - b + (w - 1) alpha) / B(alpha,
    (w - 1) alpha)``. ``alpha`` infinite is the fair coin per connection, Binomial(n, 1/w);
    smaller ``alpha`` splits more unevenly (1 with two workers: every split equally likely)."""
    if workers < 1 or users < 0 or not alpha > 0:
        raise ValueError(f"share_probabilities needs workers >= 1, users >= 0, alpha > 0, got "
                         f"{workers}, {users}, {alpha}")
    if workers == 1:
        return [0.0] * users + [1.0]
    if math.isinf(alpha):
        p = 1.0 / workers
        return [math.comb(users, b) * p ** b * (1 - p) ** (users - b) for b in range(users + 1)]
    a, rest = alpha, alpha * (workers - 1)
    return [math.exp(math.log(math.comb(users, b)) + _lbeta(b + a, users - b + rest)
                     - _lbeta(a, rest)) for b in range(users + 1)]


def _lbeta(a: float, b: float) -> float:
    return math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)


def split_log_likelihood(splits: Sequence[Sequence[int]], workers: int, alpha: float) -> float:
    """Log-likelihood of measured splits (connections per worker, any order, workers holding
    none left out) under the symmetric Dirichlet-multinomial of ``share_probabilities``."""
    total = 0.0
    for split in splits:
        counts = [*split, *([0] * (workers - len(split)))]
        if len(counts) != workers or any(c < 0 for c in counts):
            raise ValueError(f"a split of {workers} workers cannot be {list(split)}")
        n = sum(counts)
        orders = math.factorial(workers)
        for c in set(counts):
            orders //= math.factorial(counts.count(c))
        log_p = math.lgamma(n + 1) - sum(math.lgamma(c + 1) for c in counts) + math.log(orders)
        if math.isinf(alpha):
            log_p -= n * math.log(workers)
        else:
            log_p += (math.lgamma(workers * alpha) - math.lgamma(n + workers * alpha)
                      + sum(math.lgamma(c + alpha) - math.lgamma(alpha) for c in counts))
        total += log_p
    return total


def fit_accept_alpha(splits: Sequence[Sequence[int]], workers: int) -> float:
    """The maximum-likelihood concentration of measured splits (``split_log_likelihood``),
    searched over ``10^-2 .. 10^3`` on a log grid, then refined; ``inf`` when the fair coin is
    at least as likely as the best of them."""
    if not splits:
        raise ValueError("fit_accept_alpha needs at least one measured split")
    def ll(log_a: float) -> float:
        return split_log_likelihood(splits, workers, 10.0 ** log_a)
    grid = [-2.0 + 5.0 * i / 250 for i in range(251)]
    best = max(grid, key=ll)
    step = 5.0 / 250
    for _ in range(30):  # shrink a bracket around the best grid point, keeping the better end
        lo, hi = best - step, best + step
        m1, m2 = hi - 0.618 * (hi - lo), lo + 0.618 * (hi - lo)
        best = m1 if ll(m1) > ll(m2) else m2
        step *= 0.618
    if split_log_likelihood(splits, workers, math.inf) >= ll(best):
        return math.inf
    return 10.0 ** best


def mape(predicted: Sequence[float], measured: Sequence[float]) -> float:
    """Mean absolute percentage error, in percent, over pairs with a measured value > 0."""
    pairs = [(p, m) for p, m in zip(predicted, measured, strict=True)
             if m > 0 and math.isfinite(m)]
    if not pairs:
        return math.nan
    return 100.0 * sum(abs(p - m) / m for p, m in pairs) / len(pairs)
