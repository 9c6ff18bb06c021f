"""Lambda Power Tuning of the project's own Lambda package: figures per memory size and picks.

``niser-mlops power-tune`` deploys the registered model once per memory size with the Lambda
deployer (``bench.power_tune_measure``), sends a fixed payload mix of real test sessions
(``bench.power_tune_mix``), and turns what the REPORT lines and the deployment's CPU usage say
into one ``SizeProfile`` per size (here), the picks, a table, and MLflow runs
(``bench.power_tune_report``). The same code runs against real AWS and against the local
stand-ins (the deployer chooses by ``AWS_ENDPOINT_URL``); the provenance says which.

Figures of one size (memory ``M`` MB, architecture ``a``):

- CPU share configured = ``M / 1769`` vCPU (Lambda gives one vCPU of time per 1,769 MB).
- CPU share measured = ``used_cpu_s / wall_s`` over a probe of back-to-back invocations of the
  heaviest payload lasting at least ``probe_s`` (``Deployer.usage`` before and after: the CPU
  time of the deployment's cgroups). It is what the function used, so it reaches the
  configured share only when the handler runs for the whole probe and the quota binds; the
  client's side of each round trip leaves it idle for a while (``CpuProbe.busy_fraction`` =
  sum of the probe's REPORT Duration / wall s says how long), so it reads low for a light
  model. Where ``usage`` is ``None`` (real AWS, an unshaped stand-in) it is not measured: NaN,
  shown as ``n/a``.
- Why not CPU per second of the handler running (``used_cpu_s / busy_s``): the quota is per
  100 ms of wall time, so a period with an idle gap still grants the whole quota to the time
  the handler ran, and that figure over-states the share (measured at 1,024 MB: 0.665 per busy
  second against 0.585 per wall second with every period throttled, quota 0.579).
- Init = mean Init Duration (REPORT ``init_ms``) over the cold starts, each the first
  invocation of a freshly deployed function (``bench.power_tune_measure`` says why).
- Warm p50 / p95 / mean = of the Billed Duration of the mix's invocations, after warm-up.
- Cost per 1M invocations, without INIT = ``bench.cost.lambda_bill`` over the warm invocations,
  per 1M: ``requests_per_million + 1e6 * duration_gb_second[a] * (M / 1024) * mean(ceil(billed_ms))
  / 1000``. INIT is billed since 2025-08-01, but how many invocations start cold depends on the
  traffic (arrival rate, idle gaps, concurrency), not on the function, so it is left out here.
- Cost of one cold start = its INIT line alone: ``duration_gb_second[a] * (M / 1024) *
  ceil(init_ms) / 1000``. A workload with a fraction ``f`` of cold invocations pays
  ``cost per 1M + 1e6 * f * cold start cost``.

Picks, as AWS Lambda Power Tuning defines its strategies (``strategy`` and ``balancedWeight``
in README-EXECUTE.md; ``findCheapest``, ``findFastest`` and ``findBalanced`` in
``lambda/analyzer.js`` of alexcasalboni/aws-lambda-power-tuning):

- ``cost``: lowest average cost (ties: the faster);
- ``speed``: lowest average duration (ties: the cheaper);
- ``balanced``: lowest ``w * cost / max(cost) + (1 - w) * duration / max(duration)``, maxima over
  the measured sizes, ``w`` = balancedWeight in [0, 1] (0: speed, 1: cost; default 0.5); ties:
  the smaller size (Power Tuning's stable sort keeps the order of its power values, here
  ascending).

"Cost" is Power Tuning's ``averagePrice``: the duration charge alone, ``duration_gb_second[a] *
(M / 1024) * mean(ceil(billed_ms)) / 1000`` (here per 1M invocations). The request charge is
the same at every size and left out, as Power Tuning leaves it out: added, it would pull every
normalised cost towards 1 and the balanced pick towards speed. "Duration" is the mean Billed
Duration. Power Tuning averages with a trimmed mean (``discardTopBottom``, default 0.2) and
counts a cold invocation's Init in its duration; here warm invocations only (cold starts are
their own column) and the plain mean, so a quota's throttling tail is not trimmed away. Power
Tuning clamps a weight outside [0, 1]; here it is refused.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from bench.cost import lambda_bill
from bench.level_usage import LevelUsage
from bench.prices import LambdaPrices
from bench.provenance import Provenance

MB_PER_VCPU = 1769
DEFAULT_MEMORY_MB: tuple[int, ...] = (512, 1024, 1769, 3008)
DEFAULT_BALANCED_WEIGHT = 0.5


@dataclass(frozen=True)
class CpuProbe:
    """The CPU probe of one size: what the deployment's groups used during it (``usage``:
    share = CPU s / wall s) and how long the handler ran in it (``busy_s``: the sum of the
    probe invocations' REPORT Duration)."""

    usage: LevelUsage
    busy_s: float
    invocations: int

    @property
    def busy_fraction(self) -> float:
        """Share of the probe's wall time the handler was running: ``busy_s / wall_s``."""
        return self.busy_s / self.usage.wall_s if self.usage.wall_s > 0 else math.nan


@dataclass(frozen=True)
class SizeMeasurement:
    """The raw figures of one memory size (``bench.power_tune_measure.measure_size``)."""

    memory_mb: int
    architecture: str
    init_ms: tuple[float, ...]  # one per cold start; NaN where the REPORT had no Init Duration
    billed_ms: tuple[float, ...]  # warm, one per mix invocation, in sending order
    duration_ms: tuple[float, ...]
    classes: tuple[str, ...]  # the session class of each warm invocation
    fallback_sessions: int  # sessions the model answered with its popularity fallback
    sessions: int  # sessions in the warm invocations
    probe: CpuProbe | None  # None: usage() is None (unshaped, real AWS)
    provenance: Provenance
    deployments: tuple[str, ...] = ()


@dataclass(frozen=True)
class SizeProfile:
    """The figures of one memory size (the module docstring has each formula)."""

    memory_mb: int
    architecture: str
    cpu_configured: float
    cpu_measured: float  # NaN: not measured
    init_ms: float  # NaN: no cold start reported an Init Duration
    cold_starts: int
    p50_ms: float
    p95_ms: float
    mean_ms: float
    cost_per_1m_usd: float  # requests + duration, without INIT
    duration_cost_per_1m_usd: float  # the duration line alone (what the picks compare)
    cold_start_usd: float
    provenance: Provenance
    shaping: str


@dataclass(frozen=True)
class SizeOutcome:
    """One size's measurement, or why it could not be measured."""

    memory_mb: int
    measurement: SizeMeasurement | None
    error: str | None = None


def configured_cpu(memory_mb: int) -> float:
    """vCPU of time Lambda gives ``memory_mb``: ``memory_mb / 1769``."""
    return memory_mb / MB_PER_VCPU


def cost_per_million(billed_ms: Sequence[float], memory_mb: int, prices: LambdaPrices,
                     architecture: str) -> tuple[float, float]:
    """USD per 1M invocations billed ``billed_ms`` each on average, without INIT: (requests +
    duration, duration alone)."""
    bill = lambda_bill(requests=len(billed_ms), duration_ms=list(billed_ms),
                       memory_mb=memory_mb, prices=prices, architecture=architecture)
    return bill.per_million_usd, bill.duration_usd / bill.requests * 1e6


def cold_start_cost(init_ms: float, memory_mb: int, prices: LambdaPrices,
                    architecture: str) -> float:
    """USD of one cold start's INIT line (NaN when ``init_ms`` is NaN)."""
    if math.isnan(init_ms):
        return math.nan
    return lambda_bill(requests=0, duration_ms=[], memory_mb=memory_mb, prices=prices,
                       architecture=architecture, init_ms=[init_ms]).init_usd


def profile(m: SizeMeasurement, prices: LambdaPrices) -> SizeProfile:
    """The figures of ``m`` priced with ``prices``; ``ValueError`` without warm invocations."""
    if not m.billed_ms:
        raise ValueError(f"{m.memory_mb} MB: no warm invocation was measured")
    billed = np.asarray(m.billed_ms, dtype=float)
    inits = [x for x in m.init_ms if not math.isnan(x)]
    init = float(np.mean(inits)) if inits else math.nan
    p = m.probe
    measured = p.usage.cpu_share if p is not None else math.nan
    p50, p95 = (float(v) for v in np.percentile(billed, [50, 95]))
    total, duration = cost_per_million(m.billed_ms, m.memory_mb, prices, m.architecture)
    return SizeProfile(
        memory_mb=m.memory_mb, architecture=m.architecture,
        cpu_configured=configured_cpu(m.memory_mb), cpu_measured=measured, init_ms=init,
        cold_starts=len(inits), p50_ms=p50, p95_ms=p95, mean_ms=float(billed.mean()),
        cost_per_1m_usd=total, duration_cost_per_1m_usd=duration,
        cold_start_usd=cold_start_cost(init, m.memory_mb, prices, m.architecture),
        provenance=m.provenance, shaping=p.usage.shaping if p is not None else "none")


@dataclass(frozen=True)
class Picks:
    """The memory size each strategy picks (MB)."""

    cost: int
    speed: int
    balanced: int
    balanced_weight: float


def balanced_value(cost: float, duration: float, max_cost: float, max_duration: float,
                   weight: float) -> float:
    """Power Tuning's balanced value: ``w * cost / max_cost + (1 - w) * duration / max_duration``
    (a term whose maximum is 0 counts 0)."""
    return (weight * (cost / max_cost if max_cost else 0.0)
            + (1 - weight) * (duration / max_duration if max_duration else 0.0))


def pick(profiles: Sequence[SizeProfile], balanced_weight: float = DEFAULT_BALANCED_WEIGHT
         ) -> Picks:
    """The cost, speed and balanced picks over ``profiles`` (cost: ``duration_cost_per_1m_usd``,
    duration: ``mean_ms``; ties: the smaller size); ``ValueError`` on no profile or a weight
    outside [0, 1]."""
    if not profiles:
        raise ValueError("no memory size was measured: nothing to pick from")
    if not 0.0 <= balanced_weight <= 1.0:
        raise ValueError(f"balanced_weight must be within [0, 1] (0: speed, 1: cost), "
                         f"got {balanced_weight!r}")
    sizes = sorted(profiles, key=lambda p: p.memory_mb)
    cheapest = min(sizes, key=lambda p: (p.duration_cost_per_1m_usd, p.mean_ms))
    fastest = min(sizes, key=lambda p: (p.mean_ms, p.duration_cost_per_1m_usd))
    max_cost = max(p.duration_cost_per_1m_usd for p in sizes)
    max_duration = max(p.mean_ms for p in sizes)
    balanced = min(sizes, key=lambda p: balanced_value(
        p.duration_cost_per_1m_usd, p.mean_ms, max_cost, max_duration, balanced_weight))
    return Picks(cheapest.memory_mb, fastest.memory_mb, balanced.memory_mb, balanced_weight)


def _num(value: float, fmt: str) -> str:
    return "n/a" if math.isnan(value) else format(value, fmt)


COLUMNS = ("memory MB", "CPU conf.", "CPU meas.", "Init ms", "p50 billed ms", "p95 billed ms",
           "cost/1M USD", "cold start USD", "provenance")


def table_rows(profiles: Sequence[SizeProfile], failed: dict[int, str]) -> list[list[str]]:
    """One row of strings per size, failed sizes (memory -> error) included, by memory."""
    rows = {p.memory_mb: [str(p.memory_mb), f"{p.cpu_configured:.3f}",
                          _num(p.cpu_measured, ".3f"), _num(p.init_ms, ".1f"),
                          f"{p.p50_ms:.1f}", f"{p.p95_ms:.1f}", f"{p.cost_per_1m_usd:.4g}",
                          _num(p.cold_start_usd, ".4g"), p.provenance] for p in profiles}
    for memory, error in failed.items():
        rows[memory] = [str(memory), f"{configured_cpu(memory):.3f}", f"failed: {error}"[:120]]
    return [rows[m] for m in sorted(rows)]


def picks_line(picks: Picks | None) -> str:
    """The table's last line: the size each strategy picks."""
    if picks is None:
        return "picks: none (no memory size was measured)"
    return (f"picks: cost {picks.cost} MB, speed {picks.speed} MB, balanced "
            f"(weight {picks.balanced_weight:g}) {picks.balanced} MB")


def format_table(profiles: Sequence[SizeProfile], picks: Picks | None, header: str,
                 failed: dict[int, str] | None = None) -> str:
    """``header``, the aligned table (one row per size) and, last, the picks line."""
    rows = table_rows(profiles, failed or {})
    widths = [max([len(c)] + [len(r[i]) for r in rows if i < len(r)])
              for i, c in enumerate(COLUMNS)]

    def line(cells: Sequence[str]) -> str:
        if len(cells) < len(COLUMNS):  # a failed size: the error spans the remaining columns
            head = [c.rjust(w) for c, w in zip(cells[:-1], widths, strict=False)]
            return "  ".join([*head, cells[-1]])
        return "  ".join(c.rjust(w) for c, w in zip(cells, widths, strict=True))

    return "\n".join([header, line(COLUMNS), *(line(r) for r in rows), picks_line(picks)])


@dataclass(frozen=True)
class Summary:
    """Everything a power-tuning run reports: priced sizes, failed sizes, picks, the table."""

    measured: list[tuple[SizeProfile, SizeMeasurement]]
    failed: dict[int, str]  # memory size -> error
    picks: Picks | None  # None: no size was measured
    table: str


def summarize(outcomes: Sequence[SizeOutcome], prices: LambdaPrices, balanced_weight: float,
              header: str) -> Summary:
    """Price every measured size, pick over them and lay out the table (picks on its last
    line)."""
    measured = [(profile(o.measurement, prices), o.measurement) for o in outcomes
                if o.measurement is not None]
    failed = {o.memory_mb: o.error or "unknown error" for o in outcomes if o.measurement is None}
    profiles = [p for p, _ in measured]
    picks = pick(profiles, balanced_weight) if profiles else None
    return Summary(measured, failed, picks, format_table(profiles, picks, header, failed))
