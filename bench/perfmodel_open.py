"""The performance model's open-loop, Lambda and batching parts (the closed loop, the shared
types and the fitting are in ``bench.perfmodel``). Pure functions, no I/O.

**Open loop** (Poisson arrivals at ``lambda`` per instance, ``c`` servers of rate ``mu``): Erlang
C by the Erlang B recursion ``B(0) = 1, B(k) = a B(k-1) / (k + a B(k-1))``, ``a = lambda / mu``,
``C = c B / (c - a (1 - B))``; Allen-Cunneen ``Wq = C / (c mu - lambda) * (Ca2 + Cs2) / 2``; the
wait's q-quantile from ``P(W > t) = C exp(-(c mu - lambda) t * 2 / (Ca2 + Cs2))``, so
``t_q = max(0, ln(C / (1 - q))) (Ca2 + Cs2) / (2 (c mu - lambda))``; a response quantile is
``d + service quantile + t_q`` (an upper estimate: quantiles do not add). The instances a rate
needs under a p95 objective: the fewest ``k`` with the quantile at ``rate / k`` within it.

**Lambda**: every request has its own environment, so latency is flat in concurrency up to the
concurrency limit: ``R = overhead + duration(share)``, ``share = memory / 1769`` vCPU, with
``duration(share) = a + b / share`` fitted by least squares from two or more memory sizes;
a share outside the measured range is flagged ``extrapolated``. Above the limit requests are
throttled (no latency). On a shared host the load generator's threads share one interpreter
lock: its CPU per request ``Dc`` is a one-server queue in front of every environment
(``client_waits_ms``: exact MVA of that queue and a delay of ``R - Dc``), and the local
service's one invoke front in front of every environment holds at most ``X_front`` requests/s
whatever the memory size (``ceiling_rps``: the mean of the fitted sizes' highest measured
throughputs), so ``R(n) = max(R + Wc(n), n / X_cap, n / X_front)``; without a host (AWS, whose
front end scales out) neither cap applies. Percentiles are ``R(n)`` times the largest fitted
size's measured ratios at ``n`` (``perfmodel.Tails``). Cold starts: at a burst
from ``base`` to ``peak`` requests/s each new environment is one, ``concurrency(peak) -
concurrency(base)`` with ``concurrency(rate) = ceil(rate x duration)`` (Little's law), the
burst model of ``bench.recommend``.

**Batching servers**: ``service(n) = a + b n`` ms for a batch of ``n`` requests, fitted by least
squares; throughput ``n / service(n)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from bench.perfmodel import Host, Level, Tails, lstsq
from bench.power_tune import configured_cpu

FLAT = Tails(((1.0, 1.0, 1.0),))

# -- open loop ---------------------------------------------------------------------------------

def erlang_c(servers: int, offered: float) -> float:
    """Probability that an arrival waits in M/M/c with ``offered = lambda / mu`` Erlangs."""
    if servers < 1:
        raise ValueError(f"servers must be >= 1, got {servers}")
    if not 0 <= offered < servers:
        raise ValueError(f"offered load {offered} must be in [0, {servers}) for a stable queue")
    b = 1.0
    for k in range(1, servers + 1):
        b = offered * b / (k + offered * b)
    return servers * b / (servers - offered * (1 - b))


@dataclass(frozen=True)
class Queue:
    """M/G/c at one instance: ``servers`` of ``service_ms`` mean, service SCV ``cs2``."""

    servers: int
    service_ms: float
    cs2: float = 1.0
    ca2: float = 1.0

    def _terms(self, rate_rps: float) -> tuple[float, float]:
        mu = 1.0 / self.service_ms
        lam = rate_rps / 1000.0
        return erlang_c(self.servers, lam / mu), self.servers * mu - lam

    def mean_wait_ms(self, rate_rps: float) -> float:
        """Allen-Cunneen mean wait in queue."""
        c, gap = self._terms(rate_rps)
        return c / gap * (self.ca2 + self.cs2) / 2

    def wait_quantile_ms(self, rate_rps: float, q: float) -> float:
        """The wait's ``q``-quantile from the exponential tail (module docstring)."""
        c, gap = self._terms(rate_rps)
        if c <= 0:
            return 0.0
        return max(0.0, math.log(c / (1 - q))) * (self.ca2 + self.cs2) / (2 * gap)

    def holds(self, rate_rps: float) -> bool:
        return rate_rps / 1000.0 < self.servers / self.service_ms


def response_quantile_ms(queue: Queue, rate_rps: float, q: float, service_q_ms: float,
                         delay_ms: float = 0.0) -> float:
    """``delay + service quantile + wait quantile`` at ``rate_rps`` per instance (inf when the
    instance cannot hold the rate)."""
    if not queue.holds(rate_rps):
        return math.inf
    return delay_ms + service_q_ms + queue.wait_quantile_ms(rate_rps, q)


def instances_for_rate(queue: Queue, rate_rps: float, p95_slo_ms: float, service_p95_ms: float,
                       delay_ms: float = 0.0, max_instances: int = 10_000) -> int | None:
    """The fewest instances whose p95 at ``rate_rps`` (spread evenly) is within the objective;
    ``None`` when even an idle instance misses it or more than ``max_instances`` are needed."""
    if rate_rps <= 0:
        return 1 if delay_ms + service_p95_ms <= p95_slo_ms else None
    for k in range(1, max_instances + 1):
        if response_quantile_ms(queue, rate_rps / k, 0.95, service_p95_ms,
                                delay_ms) <= p95_slo_ms:
            return k
        if delay_ms + service_p95_ms > p95_slo_ms:
            return None
    return None


# -- Lambda ------------------------------------------------------------------------------------

def concurrency(rate_rps: float, duration_ms: float) -> int:
    """Environments busy at ``rate_rps`` of ``duration_ms`` each (Little's law, whole ms)."""
    return math.ceil(rate_rps * math.ceil(duration_ms) / 1000.0 - 1e-9)


def cold_starts_per_burst(base_rps: float, peak_rps: float, duration_ms: float,
                          warm: int = 0) -> int:
    """New environments a burst from ``base_rps`` to ``peak_rps`` starts."""
    kept = max(warm, concurrency(base_rps, duration_ms))
    return max(0, concurrency(peak_rps, duration_ms) - kept)


@dataclass(frozen=True)
class LambdaModel:
    """``duration(share) = a + b / share`` ms, the invoke ``overhead_ms`` and the tail ratios,
    fitted on shares ``lo..hi``; ``ceiling_rps``, the rate the measuring host's invoke front
    holds (module docstring; infinite where not measured)."""

    a: float
    b: float
    overhead_ms: float
    lo: float
    hi: float
    tails: Tails = FLAT
    ceiling_rps: float = math.inf

    def duration_ms(self, memory_mb: int) -> float:
        return self.a + self.b / configured_cpu(memory_mb)

    def extrapolated(self, memory_mb: int) -> bool:
        share = configured_cpu(memory_mb)
        return not self.lo - 1e-9 <= share <= self.hi + 1e-9

    def predict(self, memory_mb: int, users: Sequence[int], limit: int = 1000,
                host: Host | None = None) -> list[Level]:
        """Flat up to ``limit`` concurrent environments (levels above it are left out); with a
        ``host`` (a prediction for the machine that measured the fit), its CPU and the invoke
        front's ``ceiling_rps`` cap the rate."""
        flat = self.overhead_ms + self.duration_ms(memory_mb)
        waits = client_waits_ms(host.client_ms if host else 0.0, flat, max(users, default=0))
        out = []
        for n in users:
            if n > limit:
                continue
            r = flat + waits[n - 1]
            if host is not None:
                r = max(r, 1000.0 * n / host.cap_rps, 1000.0 * n / self.ceiling_rps)
            q50, q95 = self.tails.at(n)
            out.append(Level(n, r, r * q50, r * q95, 1000.0 * n / r))
        return out


def client_waits_ms(client_ms: float, cycle_ms: float, users: int) -> list[float]:
    """The wait for the load generator's interpreter at ``n = 1..users``: a closed network of
    the client (one FCFS server of ``client_ms``, the generator's threads share one lock) and a
    delay of ``cycle_ms - client_ms`` (everything else, no queue). Exact MVA:
    ``Rc(n) = Dc (1 + Qc(n-1))``, ``X(n) = n / (Rc(n) + Z)``, ``Qc(n) = X(n) Rc(n)``; the wait is
    ``Rc(n) - Dc``."""
    if not client_ms > 0:
        return [0.0] * users
    z = max(cycle_ms - client_ms, 0.0)
    q, out = 0.0, []
    for n in range(1, users + 1):
        rc = client_ms * (1 + q)
        q = n / (rc + z) * rc
        out.append(rc - client_ms)
    return out


def fit_lambda(points: Sequence[tuple[int, float]], overhead_ms: float,
               tails: Tails | None = None, ceiling_rps: float = math.inf) -> LambdaModel:
    """Fit ``duration = a + b / share`` through ``(memory_mb, warm duration ms)`` points of
    two or more sizes; ``tails`` are the measured ratios against concurrency (flat 1 if not
    given), ``ceiling_rps`` the measuring host's invoke front (module docstring)."""
    sizes = sorted({m for m, _ in points})
    if len(sizes) < 2:
        raise ValueError(f"a Lambda duration model needs two or more memory sizes, got {sizes}")
    shares = [configured_cpu(m) for m, _ in points]
    a, b = lstsq([[1.0] * len(points), [1 / s for s in shares]], [d for _, d in points])
    return LambdaModel(a, b, overhead_ms, min(shares), max(shares), tails or FLAT, ceiling_rps)


# -- batching ----------------------------------------------------------------------------------

def fit_batching(points: Sequence[tuple[int, float]]) -> tuple[float, float]:
    """``(a, b)`` of ``service(n) = a + b n`` ms through ``(batch size, ms)`` points."""
    if len({n for n, _ in points}) < 2:
        raise ValueError("a batching model needs two or more batch sizes")
    a, b = lstsq([[1.0] * len(points), [float(n) for n, _ in points]], [t for _, t in points])
    return a, b


def batch_throughput_rps(a: float, b: float, n: int) -> float:
    """Requests/s of a server that runs batches of ``n``: ``n / (a + b n)``."""
    return 1000.0 * n / (a + b * n)
