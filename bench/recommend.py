"""The cheapest deployment that holds a p95 SLO at a given load, from measured profiles.

Promises:

- ``recommend(workload, profiles, table)`` prices every feasible option and returns them sorted
  by mean cost per hour, cheapest first: instance type x count (sized for the peak, always on),
  Lambda memory x provisioned concurrency, SageMaker serverless, and hybrids (k instances for the
  base, Lambda for the overflow above their capacity).
- A profile whose p95 SLO is stricter than the workload's cannot prove anything and is rejected
  with its reason, as is any profile the price table cannot price; nothing is dropped silently.
- Every figure is a ``Figure`` labelled with its provenance: the ``bench.provenance.combine`` of
  the profiles it rests on (``measured-local`` as soon as one of them is).
- A ``predicted`` profile carries its validated error ``e`` (percent): an option resting on it
  gets a cost band, its cost when the predicted saturation is ``(1 + e)`` and ``(1 - e)`` times
  the prediction (for instances the count that then holds the peak, a step; for a hybrid the
  overflow its instances then leave to Lambda), and its p95 ``± e``.

Model (stated so it can be checked): a workload is a base rate plus, for ``burst_fraction`` of the
time, ``burst_rps`` more. Lambda/serverless concurrency in use = rate x billed duration (Little's
law); each new environment at a burst is a cold start (INIT billed for Lambda). Cold starts are
assumed to be too rare to move the p95 unless ``allow_cold_starts`` is false, in which case
provisioned concurrency must cover the peak. Instance autoscaling is not modelled.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace

from pydantic import BaseModel, ConfigDict, Field

from bench import cost
from bench.perfmodel_open import concurrency
from bench.prices import PriceError, PriceTable, RegionPrices
from bench.provenance import Provenance, combine
from deployers.base import CostDrivers


@dataclass(frozen=True)
class Figure:
    """A number with its unit and its provenance (``bench.provenance.combine`` of its inputs)."""

    value: float
    unit: str
    provenance: Provenance
    band_pct: tuple[float, float] | None = None  # (below, above) the value, in percent

    def __str__(self) -> str:
        return f"{self.value:.4g} {self.unit}{band_text(self.band_pct)} ({self.provenance})"


def band_text(band: tuple[float, float] | None) -> str:
    """`` ± 12 %`` (or `` -0/+100 %`` when lopsided); empty without a band."""
    if band is None:
        return ""
    lo, hi = (round(v) for v in band)
    return f" ± {hi} %" if lo == hi else f" -{lo}/+{hi} %"


class Workload(BaseModel):
    """The load to serve and the latency it must get."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    base_rps: float = Field(ge=0, description="Steady request rate, requests/s.")
    burst_rps: float = Field(
        default=0.0, ge=0, description="Extra requests/s on top of base in a burst.")
    burst_fraction: float = Field(
        default=0.0, ge=0, le=1, description="Fraction of time in bursts.")
    bursts_per_hour: float = Field(
        default=1.0, ge=0, description="Burst starts per hour (cold starts).")
    p95_slo_ms: float = Field(gt=0, description="p95 latency objective, milliseconds.")
    allow_cold_starts: bool = Field(
        default=True,
        description="False: serverless options must keep the peak warm (provisioned).")

    @property
    def peak_rps(self) -> float:
        """Rate during a burst."""
        return self.base_rps + (self.burst_rps if self.burst_fraction > 0 else 0.0)

    @property
    def mean_rps(self) -> float:
        """Time-averaged rate."""
        return self.base_rps + self.burst_fraction * self.burst_rps


class Profile(BaseModel):
    """What was measured for one candidate deployment."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    target: str = Field(description="Deployer name, e.g. 'sagemaker', 'lambda', 'local'.")
    name: str = Field(default="", description="The measured target's name (e.g. "
                      "'lambda-1024mb'); options and rejections are named after it.")
    drivers: CostDrivers = Field(description="What it is billed on (type, memory, ...).")
    slo_ms: float = Field(gt=0, description="p95 SLO under which saturation_rps was measured.")
    p95_ms: float = Field(gt=0, description="Measured p95 at saturation (warm p95 for serverless).")
    saturation_rps: float | None = Field(
        default=None, gt=0,
        description="Highest rate ONE instance holds with p95 <= slo_ms (instances).")
    duration_ms: float | None = Field(
        default=None, gt=0, description="Billed duration per request (Lambda / serverless).")
    init_ms: float = Field(
        default=0.0, ge=0, description="INIT duration of a cold start (Lambda).")
    bytes_per_request: float = Field(
        default=0.0, ge=0, description="Payload in + out (serverless).")
    provenance: Provenance = Field(description="Where the figures come from (bench.provenance).")
    error_pct: float | None = Field(
        default=None, ge=0, description="A predicted profile's validated error, percent: its "
        "saturation_rps and p95_ms may be off by this much (None: measured).")

    @property
    def label(self) -> str:
        """The target's name, else its deployer and cost kind."""
        return self.name or f"{self.target} ({self.drivers.kind})"


@dataclass(frozen=True)
class Option:
    """One priced way to serve the workload."""

    name: str
    drivers: tuple[CostDrivers, ...]
    cost_per_hour: Figure
    cost_per_month: Figure
    cost_per_million: Figure
    p95_ms: Figure
    provenance: Provenance
    notes: tuple[str, ...] = ()
    short_name: str = ""  # the targets it rests on, e.g. "2× sagemaker-c5-large"
    targets: tuple[str, ...] = ()  # the names (Profile.label) of the profiles it rests on

    @property
    def label(self) -> str:
        """``short_name`` when set, else ``name``."""
        return self.short_name or self.name


@dataclass(frozen=True)
class Recommendation:
    """Every feasible option (cheapest first), the best, and every candidate left out and why."""

    workload: Workload
    options: list[Option]
    rejected: list[tuple[str, str]] = field(default_factory=list)

    @property
    def best(self) -> Option | None:
        """The cheapest option meeting the SLO, or None when nothing does."""
        return self.options[0] if self.options else None


def _option(name: str, drivers: Sequence[CostDrivers], per_hour: float, wl: Workload,
            p95: float, profiles: Sequence[Profile], notes: Iterable[str],
            short: str = "", band: tuple[float, float] | None = None) -> Option:
    prov = combine(*(p.provenance for p in profiles))
    per_million = (per_hour / (wl.mean_rps * cost.SECONDS_PER_HOUR) * 1e6
                   if wl.mean_rps > 0 else math.inf)
    errors = [p.error_pct for p in profiles if p.error_pct is not None]
    p95_band = (max(errors), max(errors)) if errors else None
    return Option(
        name=name, drivers=tuple(drivers),
        cost_per_hour=Figure(per_hour, "USD/hour", prov, band),
        cost_per_month=Figure(per_hour * cost.HOURS_PER_MONTH, "USD/month", prov, band),
        cost_per_million=Figure(per_million, "USD per 1M requests", prov, band),
        p95_ms=Figure(p95, "ms p95", prov, p95_band), provenance=prov, notes=tuple(notes),
        short_name=short or name, targets=tuple(p.label for p in profiles))


def _band(p: Profile, per_hour: float, priced: Callable[[float], float]
          ) -> tuple[float, float] | None:
    """The cost's band when ``p``'s saturation is off by its error: ``priced(saturation)`` at
    ``(1 + e)`` and ``(1 - e)`` times it, as percent below and above ``per_hour``."""
    if p.error_pct is None or p.saturation_rps is None or not per_hour > 0:
        return None
    e = min(p.error_pct / 100.0, 0.99)
    low, high = priced(p.saturation_rps * (1 + e)), priced(p.saturation_rps * (1 - e))
    return 100.0 * (per_hour - low) / per_hour, 100.0 * (high - per_hour) / per_hour


def _lambda_overflow_cost(p: Profile, prices: RegionPrices, base: float, peak: float,
                          wl: Workload, pc: int) -> float:
    """Mean USD/hour of Lambda serving ``base`` req/s, ``peak`` during bursts, with ``pc``."""
    d = p.drivers
    assert p.duration_ms is not None and d.memory_mb is not None
    kw = dict(duration_ms=p.duration_ms, memory_mb=d.memory_mb, prices=prices.lambda_,
              architecture=d.architecture, provisioned_concurrency=pc)
    burst = wl.burst_fraction
    per_hour = ((1 - burst) * cost.lambda_cost_per_hour(base, **kw)  # type: ignore[arg-type]
                + burst * cost.lambda_cost_per_hour(peak, **kw))  # type: ignore[arg-type]
    warm = max(pc, concurrency(base, p.duration_ms))
    colds = max(0, concurrency(peak, p.duration_ms) - warm) if burst > 0 else 0
    if colds and p.init_ms > 0:
        init = cost.lambda_bill(requests=0, duration_ms=0.0, memory_mb=d.memory_mb,
                                prices=prices.lambda_, architecture=d.architecture,
                                init_ms=[p.init_ms] * colds)
        per_hour += init.init_usd * wl.bursts_per_hour
    return per_hour


def _instances(p: Profile, wl: Workload, table: PriceTable, region: str | None) -> list[Option]:
    if p.saturation_rps is None:
        raise ValueError("an instance profile needs saturation_rps (per instance)")

    def priced(saturation: float) -> float:
        n = max(1, math.ceil(wl.peak_rps / saturation - 1e-9))
        return cost.hourly_cost(replace(p.drivers, instance_count=n), table, region)

    n = max(1, math.ceil(wl.peak_rps / p.saturation_rps - 1e-9))
    drivers = replace(p.drivers, instance_count=n)
    per_hour = cost.hourly_cost(drivers, table, region)
    label = p.drivers.instance_type or p.target
    return [_option(f"{n} x {label}", [drivers], per_hour, wl, p.p95_ms, [p],
                    [f"sized for the peak {wl.peak_rps:g} req/s at {p.saturation_rps:g} "
                     "req/s per instance; always on"], short=f"{n}× {p.label}",
                    band=_band(p, per_hour, priced))]


def _lambdas(p: Profile, wl: Workload, prices: RegionPrices) -> list[Option]:
    d = p.drivers
    if p.duration_ms is None or d.memory_mb is None:
        raise ValueError("a Lambda profile needs duration_ms and drivers.memory_mb")
    peak_c = concurrency(wl.peak_rps, p.duration_ms)
    if d.max_concurrency is not None and peak_c > d.max_concurrency:
        raise ValueError(f"needs {peak_c} concurrent environments at the peak, above "
                         f"max_concurrency={d.max_concurrency}; raise the concurrency limit")
    pcs = ([peak_c] if not wl.allow_cold_starts
           else sorted({0, concurrency(wl.base_rps, p.duration_ms)}))
    out = []
    for pc in pcs:
        per_hour = _lambda_overflow_cost(p, prices, wl.base_rps, wl.peak_rps, wl, pc)
        drivers = replace(d, provisioned_concurrency=pc)
        name = f"lambda {d.memory_mb} MB {d.architecture or 'x86_64'}, provisioned {pc}"
        short = p.label + (f", {pc} provisioned" if pc else "")
        out.append(_option(name, [drivers], per_hour, wl, p.p95_ms, [p],
                           [f"{peak_c} concurrent environments at the peak"], short))
    return out


def _serverless(p: Profile, wl: Workload, prices: RegionPrices) -> list[Option]:
    d = p.drivers
    if p.duration_ms is None or d.memory_mb is None:
        raise ValueError("a serverless profile needs duration_ms and drivers.memory_mb")
    if prices.sagemaker_serverless is None:
        raise PriceError("the price table has no sagemaker_serverless prices for this region")
    if not wl.allow_cold_starts:
        raise ValueError("cold starts are not allowed and serverless provisioned concurrency "
                         "is not modelled here")
    peak_c = concurrency(wl.peak_rps, p.duration_ms)
    if d.max_concurrency is not None and peak_c > d.max_concurrency:
        raise ValueError(f"needs {peak_c} concurrent invocations at the peak, above "
                         f"max_concurrency={d.max_concurrency}")

    def hourly(rate: float) -> float:
        bill = cost.serverless_bill(
            requests=1, duration_ms=p.duration_ms or 0.0, memory_mb=d.memory_mb or 0,
            prices=prices.sagemaker_serverless,  # type: ignore[arg-type]
            bytes_in_per_request=p.bytes_per_request)
        return bill.total_usd * rate * cost.SECONDS_PER_HOUR

    per_hour = (1 - wl.burst_fraction) * hourly(wl.base_rps) + wl.burst_fraction * hourly(
        wl.peak_rps)
    return [_option(f"sagemaker serverless {d.memory_mb} MB", [d], per_hour, wl, p.p95_ms, [p],
                    [f"{peak_c} concurrent invocations at the peak"], short=p.label)]


def _hybrids(inst: Profile, lam: Profile, wl: Workload, table: PriceTable,
             region: str | None) -> list[Option]:
    assert inst.saturation_rps is not None and lam.duration_ms is not None
    n_peak = math.ceil(wl.peak_rps / inst.saturation_rps - 1e-9)
    out = []
    def priced(k: int, saturation: float) -> tuple[float, int]:  # (USD/hour, provisioned)
        cap = k * saturation
        base_over = max(0.0, wl.base_rps - cap)
        peak_over = max(0.0, wl.peak_rps - cap)
        pc = 0 if wl.allow_cold_starts else concurrency(peak_over, lam.duration_ms or 0.0)
        return cost.hourly_cost(replace(inst.drivers, instance_count=k), table, region) + (
            _lambda_overflow_cost(lam, table.region(region), base_over, peak_over, wl, pc)), pc

    def cost_at(k: int) -> Callable[[float], float]:
        return lambda saturation: priced(k, saturation)[0]

    for k in range(1, n_peak):
        cap = k * inst.saturation_rps
        drivers = replace(inst.drivers, instance_count=k)
        per_hour, pc = priced(k, inst.saturation_rps)
        lam_drivers = replace(lam.drivers, provisioned_concurrency=pc)
        label = inst.drivers.instance_type or inst.target
        name = (f"hybrid: {k} x {label} + lambda {lam.drivers.memory_mb} MB "
                f"for overflow above {cap:g} req/s")
        out.append(_option(name, [drivers, lam_drivers], per_hour, wl,
                           max(inst.p95_ms, lam.p95_ms), [inst, lam],
                           ["needs a router that spills traffic above the instances' capacity "
                            "to Lambda; the spill-over itself was not measured"],
                           short=f"{k}× {inst.label} + {lam.label} overflow",
                           band=_band(inst, per_hour, cost_at(k))))
    return out


def recommend(workload: Workload, profiles: Sequence[Profile], table: PriceTable,
              region: str | None = None) -> Recommendation:
    """Price every feasible option for ``workload``; cheapest first."""
    options: list[Option] = []
    rejected: list[tuple[str, str]] = []
    usable: list[Profile] = []
    for p in profiles:
        who = p.label
        if p.slo_ms > workload.p95_slo_ms or p.p95_ms > workload.p95_slo_ms:
            rejected.append((who, f"measured p95 {p.p95_ms:g} ms under a {p.slo_ms:g} ms SLO "
                                  f"does not show it holds {workload.p95_slo_ms:g} ms; measure "
                                  "its saturation under this SLO"))
            continue
        try:
            if cost.is_always_on(p.drivers.kind):
                options += _instances(p, workload, table, region)
            elif p.drivers.kind == "lambda":
                options += _lambdas(p, workload, table.region(region))
            else:
                options += _serverless(p, workload, table.region(region))
            usable.append(p)
        except (PriceError, ValueError) as exc:
            rejected.append((who, str(exc)))
    for inst in (p for p in usable if p.saturation_rps is not None):
        for lam in (p for p in usable if p.drivers.kind == "lambda"):
            options += _hybrids(inst, lam, workload, table, region)
    options.sort(key=lambda o: o.cost_per_hour.value)
    return Recommendation(workload, options, rejected)
