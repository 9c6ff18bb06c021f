"""The performance model: carry what was measured on this machine to shapes it cannot run.

Pure functions over measured figures, no I/O. Times are milliseconds and rates requests per
second unless a name says otherwise. ``bench.predict_check`` validates it on this machine.

**Closed loop** (N users, zero think time, as ``bench.closed_loop`` measures), exact mean value
analysis (MVA) with one load-dependent station per instance (Reiser and Lavenberg 1980; the
load-dependent form of Lazowska et al., *Quantitative System Performance*, 1984, ch. 8):

- An instance with ``c`` CPUs completes, with ``j`` requests present,
  ``mu(j) = min(j min(1, c) / S, X_inst(c), X_cap)`` requests per ms: ``S`` is one request's
  service time alone on a whole CPU, ``X_inst`` the instance's plateau from the scaling law
  (what concurrent requests reach together: workers, batching), ``X_cap`` the share of a host
  the load generator shares (``Host``, split evenly over the instances; infinite elsewhere).
  A server without batching and ``c`` workers has ``X_inst = c / S``: ``mu(j) = min(j, c)/S``.
- Where a fitted shape is one worker alone (one instance, one worker) with the most CPU per
  worker, a predicted worker with that much CPU takes that worker's measured curve instead, as
  its flow-equivalent server (Chandy, Herzog and Woo 1975): the rates ``mu(j)`` that make the
  MVA below reproduce the measured ``X(n)`` (``flow_equivalent``; what batching and the scoring
  server's threads give at each concurrency, which ``min(j/S, X_inst)`` only bounds).
- A request also spends a fixed ``d`` ms outside the instance (client, loopback, balancer).
- One instance (``mva``), with ``p(j | n)`` the probability of ``j`` requests at it when ``n``
  are in the system: ``r(n) = sum_{j=1..n} j / mu(j) * p(j-1 | n-1)``, ``R(n) = d + r(n)``,
  ``X(n) = n / R(n)``, ``p(j | n) = X(n) / mu(j) * p(j-1 | n-1)`` for ``j >= 1`` and
  ``p(0 | n) = 1 - sum_{j>=1} p(j | n)``, from ``p(0 | 0) = 1``.
- ``k`` identical instances behind the project's balancer (nginx, least connections or round
  robin over one keep-alive connection per user) get the closed-loop users spread evenly:
  ``n // k`` users at each instance and one more at ``n % k`` of them. Inside an instance, its
  ``w`` scoring workers share one listening socket and a connection stays with the worker that
  accepted it (here the connections the deployment's nginx keeps to the server, one per
  request in flight). Which one accepts is a race: the split is a symmetric
  Dirichlet-multinomial with concentration ``ServerModel.accept_alpha``, so each worker holds
  ``B`` of the instance's ``m`` users, ``B`` beta-binomial
  (``perfmodel_laws.share_probabilities``). Its default, ``ACCEPT_ALPHA``, is infinite, the
  fair coin per connection, ``B ~ Binomial(m, 1/w)``: what the splits measured on this
  machine's scoring server support (``scripts/bench_accept.py``). By linearity,
  ``X_inst(m) = min(w E[X_1(B)], X_inst(c), X_cap)`` with ``X_1`` the MVA of one worker as if
  alone (``c / w`` CPUs, the scaling law's plateau at ``c / w``, ``1 / w`` of the host cap):
  contention lowers what the workers reach together, not a request alone;
  ``X = sum_i X_inst(n_i)`` and ``R = n / X``
  (``ServerModel.predict``). At 2 users on 2 workers both share a worker with probability
  ``(alpha + 1) / (2 alpha + 1)``: 1/2 for the fair coin, 2/3 at ``alpha = 1``.
- Scaling across CPUs per instance, the universal scalability law (Gunther 1993):
  ``X_inst(c) = c / (a + b (c - 1) + e c (c - 1))`` requests/s, i.e. ``lambda = 1/a``,
  ``sigma = b/a``, ``kappa = e/a``, fitted by least squares on ``c / X = a + b (c-1) + e c (c-1)``
  from the measured plateaus: two shapes fit ``a, b`` (Amdahl's law, ``e = 0``), three or more
  fit all three.
- ``S`` and ``d`` by least squares on the 1-user latencies ``R(1) = d + S / min(1, c)`` of the
  fitted shapes (two values of ``min(1, c)`` needed to tell them apart, else ``d = 0``).
- Percentiles: ``p = mean x r(m)`` with ``m`` the users per worker and ``r`` the measured
  p50- and p95-to-mean ratios of the fitted shapes at each users-per-worker, interpolated
  linearly and held flat beyond the measured ends (``Tails``). Only the fitted shapes with the
  most CPU per worker (``min(1, cpus / workers)``) give ratios: a fractional CPU quota stretches
  a request that meets the end of its budget by the rest of the CFS period, a tail a worker
  with a whole CPU never has. A measured ratio is used, not an M/G/c approximation, because a
  closed loop has no Poisson arrivals and its tail comes from the service-time spread (HTTP,
  JSON, batching), which those shapes measure.
- ``Host``: on this machine the load generator and whatever else runs take CPU the stand-in
  would otherwise get: ``X_cap = (cores - background) / (client_ms + target_ms)`` per ms of CPU,
  split over the instances. Where the rest of the machine was measured per request
  (``background_ms``: it grows with the rate, the kernel's loopback TCP, a balancer),
  ``X_cap = cores / (client_ms + target_ms + background_ms)``. Where the fitted single worker's
  CPU per request was measured at each level (``Level.cpu_ms``: batching spends less per
  request as more wait), ``target_ms`` is that CPU at the users per worker of the predicted
  load (``n / (k w)``; inside a worker's MVA, at the ``j`` requests present), interpolated
  linearly and held flat beyond the measured ends: workers that share the users batch less and
  spend more CPU per request than the one worker that had them all. Predictions for AWS shapes
  run without a host (the client is elsewhere); the validation of shapes measured here runs
  with it.

Open loop, Lambda and batching: ``bench.perfmodel_open``; the fitted laws (least squares, the
scaling law, the tails, the error measure): ``bench.perfmodel_laws``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from bench.perfmodel_laws import Scaling as Scaling
from bench.perfmodel_laws import Tails as Tails
from bench.perfmodel_laws import fit_accept_alpha as fit_accept_alpha
from bench.perfmodel_laws import fit_scaling as fit_scaling
from bench.perfmodel_laws import fit_tails as fit_tails
from bench.perfmodel_laws import lstsq as lstsq
from bench.perfmodel_laws import mape as mape
from bench.perfmodel_laws import share_probabilities as share_probabilities
from bench.perfmodel_laws import split_log_likelihood as split_log_likelihood
from bench.stats import LevelStats

# The concentration of the split of connections over a server's uvicorn workers (module
# docstring): the fair coin. 56 splits of 2-16 connections over the 2 workers of 8 deployments
# on this machine fit no better with any concentration (maximum likelihood 77, the same
# log-likelihood as the coin's): `python scripts/bench_accept.py --model-uri
# models:/niser-digi/1 --dataset ../shared/data/diginetica --deployments 8`
# (benchmarks/results/accept_split.{json,txt}; BENCHMARKS.md).
ACCEPT_ALPHA = math.inf


@dataclass(frozen=True)
class Level:
    """One measured (or predicted) closed-loop level."""

    users: int
    mean_ms: float
    p50_ms: float
    p95_ms: float
    throughput_rps: float
    cpu_ms: float | None = None  # the stand-in's CPU per answered request, if measured


def levels_of(stats: Sequence[LevelStats], cpu_ms: Sequence[float | None] | None = None
              ) -> tuple[Level, ...]:
    """The levels of a sweep's statistics that answered at least once, each with the stand-in's
    CPU per answered request where ``cpu_ms`` (one per statistic) gives it."""
    cpu = list(cpu_ms) if cpu_ms is not None else [None] * len(stats)
    return tuple(Level(int(s.level), s.mean_ms, s.p50_ms, s.p95_ms, s.throughput_rps, c)
                 for s, c in zip(stats, cpu, strict=True) if s.ok > 0)


@dataclass(frozen=True)
class Shape:
    """One deployment shape: ``instances`` x (``cpus`` CPUs, ``workers`` scoring workers)."""

    cpus: float
    workers: int = 1
    instances: int = 1


@dataclass(frozen=True)
class Curve:
    """A shape and what was measured on it, level by level."""

    shape: Shape
    levels: tuple[Level, ...]

    @property
    def plateau_rps(self) -> float:
        """The highest throughput measured, per instance."""
        return max(lv.throughput_rps for lv in self.levels) / self.shape.instances


@dataclass(frozen=True)
class Host:
    """The CPU a shared host leaves the target: ``cores - background`` for the target's
    ``target_ms`` and the client's ``client_ms`` of CPU per request. Where the rest of the
    machine's CPU was measured per request (``background_ms``: the kernel's loopback TCP, a
    balancer, grow with the request rate), all ``cores`` hold ``client + target + background``
    per request instead."""

    cores: float
    background_cores: float
    client_ms: float
    target_ms: float
    background_ms: float | None = None

    @property
    def cap_rps(self) -> float:
        """Requests/s the host's CPU holds: ``(cores - background) / (client + target)``, or
        ``cores / (client + target + background_ms)`` where that was measured."""
        return self.cap_with(self.target_ms)

    def cap_with(self, target_ms: float) -> float:
        """``cap_rps`` with the target taking ``target_ms`` of CPU per request."""
        if self.background_ms is not None:
            return self.cores / ((self.client_ms + target_ms + self.background_ms) / 1000.0)
        return max(self.cores - self.background_cores, 0.0) / (
            (self.client_ms + target_ms) / 1000.0)


@dataclass(frozen=True)
class Station:
    """One instance: a request alone takes ``service_ms`` on a whole CPU; with ``j`` present
    it completes ``min(j min(1, cpus) / service_ms, plateau_rps, cap_rps)`` per second."""

    service_ms: float
    cpus: float
    plateau_rps: float
    cap_rps: float = math.inf
    curve: tuple[float, ...] = ()  # measured completions per ms with j = 1, 2, ... present
    caps: tuple[float, ...] = ()  # the host cap (req/s) with j = 1, 2, ... present, if it varies

    def rate(self, j: int) -> float:
        """Completions per ms with ``j`` requests present."""
        base = (self.curve[min(j, len(self.curve)) - 1] if self.curve
                else j * min(1.0, self.cpus) / self.service_ms)
        cap = self.caps[min(j, len(self.caps)) - 1] if self.caps else self.cap_rps
        return min(base, self.plateau_rps / 1000.0, cap / 1000.0)


def mva(station: Station, delay_ms: float, users: int) -> list[tuple[float, float]]:
    """Exact MVA of one instance (module docstring): ``(R(n) ms, X(n) req/s)`` for
    ``n = 1..users``."""
    if users < 1:
        raise ValueError(f"mva needs users >= 1, got {users}")
    p = [1.0]  # p(j | n-1), j = 0..n-1
    out = []
    for n in range(1, users + 1):
        r = sum(j / station.rate(j) * p[j - 1] for j in range(1, n + 1))
        big_r = delay_ms + r
        x = n / big_r  # per ms
        new = [0.0] * (n + 1)
        for j in range(1, n + 1):
            new[j] = x / station.rate(j) * p[j - 1]
        new[0] = max(0.0, 1.0 - sum(new[1:]))
        p = new
        out.append((big_r, 1000.0 * x))
    return out


@dataclass(frozen=True)
class ServerModel:
    """A fitted model of an HTTP scoring server (``fit_server``): the scaling law, one
    request's service time alone on a whole CPU, the delay outside the instance, the tails."""

    scaling: Scaling
    service_ms: float
    delay_ms: float
    tails: Tails
    worker_curve: tuple[float, ...] = ()  # flow-equivalent rates of a worker (fit_server)
    curve_cpus: float = 0.0  # the CPUs of the worker that curve was measured on
    worker_cpu: tuple[tuple[float, float], ...] = ()  # (users, CPU ms per request) of a worker
    accept_alpha: float = ACCEPT_ALPHA  # how unevenly workers share connections (docstring)

    def host_cap(self, host: Host | None, per_worker: float) -> float:
        """Requests/s the host holds with ``per_worker`` requests at each worker: the CPU per
        request the fitted worker took at that load (``worker_cpu``, interpolated linearly,
        held flat beyond its ends), else the host's own figure; infinite without a host."""
        if host is None:
            return math.inf
        if not self.worker_cpu:
            return host.cap_rps
        target = float(np.interp(per_worker, [u for u, _ in self.worker_cpu],
                                 [c for _, c in self.worker_cpu]))
        return host.cap_with(target)

    def station(self, shape: Shape, host: Host | None = None) -> Station:
        cap = math.inf if host is None else host.cap_rps / shape.instances
        return Station(self.service_ms, shape.cpus, self.scaling.plateau_rps(shape.cpus), cap)

    def worker_station(self, shape: Shape, host: Host | None = None, users: int = 1
                       ) -> Station:
        """One of the instance's ``workers`` as if it ran alone: ``cpus / workers`` CPUs, the
        scaling law's plateau at those CPUs (contention between workers is the instance's cap,
        ``predict``), its share of the host cap (listed for 1..``users`` requests present where
        it varies with them)."""
        st, w = self.station(shape, host), shape.workers
        same = self.worker_curve and abs(st.cpus / w - self.curve_cpus) < 1e-9
        share = shape.instances * w
        caps = (tuple(self.host_cap(host, j) / share for j in range(1, users + 1))
                if host is not None and self.worker_cpu else ())
        return Station(st.service_ms, st.cpus / w,
                       1000.0 * max(self.worker_curve) if same
                       else self.scaling.plateau_rps(st.cpus / w),
                       st.cap_rps / w, self.worker_curve if same else (), caps)

    def predict(self, shape: Shape, users: Sequence[int], host: Host | None = None
                ) -> list[Level]:
        """Predicted levels of ``shape`` at each count in ``users``."""
        k, w = shape.instances, shape.workers
        st = self.worker_station(shape, host, max(users))
        plateau = self.scaling.plateau_rps(shape.cpus)  # the instance's: workers contend
        one = mva(st, self.delay_ms, max(users))
        out = []
        for n in users:
            # An even split over the instances, then a random one over each one's workers.
            x = sum(min(plateau, self.host_cap(host, m / w) / k,
                        w * _split_mean(lambda m: one[m - 1][1] if m else 0.0, m, w,
                                        self.accept_alpha))
                    for m in _split(n, k) if m)
            r = 1000.0 * n / x
            q50, q95 = self.tails.at(n / (k * w))
            out.append(Level(n, r, r * q50, r * q95, x))
        return out


def _split(n: int, k: int) -> list[int]:
    return [n // k + (1 if i < n % k else 0) for i in range(k)]


def _split_mean(f: Callable[[int], float], n: int, workers: int, alpha: float) -> float:
    """``E[f(B)]`` for ``B`` one worker's share of ``n`` connections (module docstring)."""
    return sum(p * f(m) for m, p in enumerate(share_probabilities(n, workers, alpha)))


def fit_alone(points: Sequence[tuple[float, float]]) -> tuple[float, float]:
    """``(service_ms, delay_ms)`` from ``(cpus, 1-user mean ms)`` points: least squares on
    ``R(1) = d + S / min(1, cpus)`` when the points have two or more values of
    ``min(1, cpus)``, else ``d = 0`` (the delay cannot be told from the service)."""
    xs = [1.0 / min(1.0, c) for c, _ in points]
    no_delay = sum(r / x for x, (_, r) in zip(xs, points, strict=True)) / len(points), 0.0
    if len(set(xs)) < 2:
        return no_delay
    d, s = lstsq([[1.0] * len(points), xs], [r for _, r in points])
    return no_delay if d < 0 else (s, d)  # d < 0: noise, no room for a delay


def _cpu_per_worker(shape: Shape) -> float:
    return min(1.0, shape.cpus / shape.workers)


def _tail_points(curves: Sequence[Curve]) -> list[tuple[float, float, float]]:
    """The ratios of the curves with the most CPU per worker (module docstring: a fractional
    quota stretches a request by whole CFS periods, a tail no whole-CPU worker has)."""
    most = max(_cpu_per_worker(c.shape) for c in curves)
    out = []
    for c in (c for c in curves if _cpu_per_worker(c.shape) >= most - 1e-9):
        per = c.shape.workers * c.shape.instances
        out += [(lv.users / per, lv.p50_ms / lv.mean_ms, lv.p95_ms / lv.mean_ms)
                for lv in c.levels if lv.mean_ms > 0]
    return out


def fit_server(curves: Sequence[Curve], sigma: float | None = None) -> ServerModel:
    """Scaling law from the curves' plateaus (one curve: through its plateau with contention
    ``sigma``, 0 if not given), service and delay from their 1-user latencies
    (``fit_alone``), tails from their ratios (module docstring)."""
    if len({c.shape.cpus for c in curves}) >= 2:
        scaling = fit_scaling([(c.shape.cpus, c.plateau_rps) for c in curves])
    else:
        c0 = curves[0]
        scaling = Scaling.through(c0.shape.cpus, c0.plateau_rps, sigma or 0.0)
    ones = [(c.shape.cpus, min(c.levels, key=lambda lv: lv.users).mean_ms) for c in curves]
    service, delay = fit_alone(ones)
    most = max(_cpu_per_worker(c.shape) for c in curves)
    single = [c for c in curves if c.shape.workers == c.shape.instances == 1
              and _cpu_per_worker(c.shape) >= most - 1e-9]
    cpu = tuple((float(lv.users), lv.cpu_ms) for lv in single[0].levels
                if lv.cpu_ms is not None and lv.cpu_ms > 0) if single else ()
    return ServerModel(scaling, service, delay, fit_tails(_tail_points(curves)),
                       *((flow_equivalent(single[0].levels, delay), single[0].shape.cpus)
                         if single else ((), 0.0)), cpu)


def flow_equivalent(levels: Sequence[Level], delay_ms: float) -> tuple[float, ...]:
    """A worker's completions per ms with ``j = 1..N`` requests present: the rates that make
    the exact MVA of one station and the delay ``d`` reproduce one worker's measured curve
    (``X`` interpolated linearly between measured users). Solving the MVA step for its one
    unknown, ``mu(n) = n p(n-1 | n-1) / (1000 n / X(n) - d - sum_{j<n} j / mu(j) p(j-1 | n-1))``;
    a rate below the one before (a measured dip, or no room left by the delay) is held at it."""
    pts = sorted((lv.users, lv.throughput_rps) for lv in levels if lv.throughput_rps > 0)
    if not pts:
        return ()
    mu: list[float] = []
    p = [1.0]  # p(j | n-1)
    for n in range(1, pts[-1][0] + 1):
        x = float(np.interp(n, [u for u, _ in pts], [t for _, t in pts])) / 1000.0
        known = sum(j / mu[j - 1] * p[j - 1] for j in range(1, n))
        room = n / x - delay_ms - known
        rate = n * p[n - 1] / room if room > 0 else math.inf  # no room: the delay is all
        mu.append(max(rate, mu[-1]) if mu else rate)
        r = known + n / mu[-1] * p[n - 1]
        x_n = n / (delay_ms + r)
        new = [0.0] * (n + 1)
        for j in range(1, n + 1):
            new[j] = x_n / mu[j - 1] * p[j - 1]
        new[0] = max(0.0, 1.0 - sum(new[1:]))
        p = new
    return tuple(mu)
