"""Break-even between always-on instances and Lambda as the request rate grows (seed Fig. 13).

Promises:

- ``instances_needed(rate, saturation)`` = ceil(rate / saturation), at least ``min_instances``:
  the instances that hold the p95 SLO when each holds it up to ``saturation`` requests/s.
  Instance cost is therefore a step function of the rate.
- ``LambdaOffer.cost_per_hour(rate)`` is Lambda's cost at a steady rate (``bench.cost``), which
  grows continuously with the rate.
- ``break_even(instance, lam, max_rate)`` returns the first rate at which the instances stop being
  dearer than Lambda, every rate interval on which Lambda is strictly cheaper (the step function
  can cross Lambda's curve more than once), and the rate above which instances are always at
  least as cheap within the range.
- ``plot_break_even`` writes a PNG (matplotlib Agg) of cost per hour or per month against request
  rate (USD, linear): both curves in their targets' colours, the Lambda-cheaper ranges shaded,
  the break-even rate marked and, given a workload rate, that rate with each option's cost
  there and a caption saying which is cheaper there and why.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from bench.cost import HOURS_PER_MONTH, lambda_cost_per_hour
from bench.prices import LambdaPrices
from bench.provenance import Provenance

_EPS = 1e-9


def instances_needed(rate_rps: float, saturation_rps: float, min_instances: int = 1) -> int:
    """Instances that serve ``rate_rps`` with each at most at its ``saturation_rps``."""
    if saturation_rps <= 0 or math.isnan(saturation_rps):
        raise ValueError(f"saturation_rps must be > 0, got {saturation_rps!r}; measure the "
                         "highest rate an instance holds under the SLO first")
    if rate_rps < 0:
        raise ValueError(f"rate_rps must be >= 0, got {rate_rps!r}")
    if min_instances < 0:
        raise ValueError(f"min_instances must be >= 0, got {min_instances!r}")
    # Tolerate float noise at exact multiples (e.g. 0.3 / 0.1).
    return max(min_instances, math.ceil(rate_rps / saturation_rps - _EPS))


@dataclass(frozen=True)
class InstanceOffer:
    """Always-on capacity: price per instance-hour and the rate one instance holds under the SLO."""

    label: str
    price_per_hour: float
    saturation_rps: float
    provenance: Provenance
    min_instances: int = 1

    def instances(self, rate_rps: float) -> int:
        """Instances needed at ``rate_rps``."""
        return instances_needed(rate_rps, self.saturation_rps, self.min_instances)

    def cost_per_hour(self, rate_rps: float) -> float:
        """USD per hour at ``rate_rps`` (a step function of the rate)."""
        return self.instances(rate_rps) * self.price_per_hour


@dataclass(frozen=True)
class LambdaOffer:
    """A Lambda configuration with its measured billed duration per request."""

    label: str
    duration_ms: float
    memory_mb: int
    prices: LambdaPrices
    provenance: Provenance
    architecture: str = "x86_64"
    provisioned_concurrency: int = 0

    def cost_per_hour(self, rate_rps: float) -> float:
        """USD per hour at a steady ``rate_rps``."""
        return lambda_cost_per_hour(
            rate_rps, duration_ms=self.duration_ms, memory_mb=self.memory_mb,
            prices=self.prices, architecture=self.architecture,
            provisioned_concurrency=self.provisioned_concurrency)


@dataclass(frozen=True)
class BreakEven:
    """Where instances and Lambda cost the same, within ``[0, max_rate_rps]``."""

    rate_rps: float | None
    """First rate from which instances are no dearer than Lambda (0.0 if never dearer; None if
    Lambda is cheaper over the whole range)."""
    lambda_cheaper: list[tuple[float, float]]
    """Rate intervals on which Lambda is strictly cheaper."""
    instances_cheaper_above: float | None
    """Rate above which instances are always at least as cheap (None if Lambda is cheaper at
    ``max_rate_rps``)."""
    max_rate_rps: float


def _crossing(f: Callable[[float], float], target: float, lo: float, hi: float) -> float:
    """Smallest r in [lo, hi] with f(r) >= target, for f increasing and f(lo) < target <= f(hi)."""
    for _ in range(200):
        mid = (lo + hi) / 2
        if f(mid) >= target:
            hi = mid
        else:
            lo = mid
        if hi - lo <= 1e-12 * max(1.0, hi):
            break
    return hi


def break_even(instance: InstanceOffer, lam: LambdaOffer | Callable[[float], float],
               max_rate_rps: float) -> BreakEven:
    """Compare ``instance`` (step function) with ``lam`` (increasing) over ``[0, max_rate_rps]``."""
    if max_rate_rps <= 0:
        raise ValueError(f"max_rate_rps must be > 0, got {max_rate_rps!r}")
    lam_cost = lam.cost_per_hour if isinstance(lam, LambdaOffer) else lam
    sat = instance.saturation_rps
    intervals: list[tuple[float, float]] = []
    lo = 0.0
    while lo < max_rate_rps:
        count = instance.instances(lo + 1e-6 * sat)  # the count just above ``lo``
        hi = min(max_rate_rps, count * sat)
        level = count * instance.price_per_hour
        if lam_cost(lo) < level:
            end = hi if lam_cost(hi) < level else _crossing(lam_cost, level, lo, hi)
            if intervals and abs(intervals[-1][1] - lo) <= _EPS * max(1.0, lo):
                intervals[-1] = (intervals[-1][0], end)
            else:
                intervals.append((lo, end))
        lo = hi
    if not intervals:
        return BreakEven(0.0, [], 0.0, max_rate_rps)
    first_start, first_end = intervals[0]
    first = None if first_end >= max_rate_rps else (first_end if first_start == 0.0 else 0.0)
    last_end = intervals[-1][1]
    above = None if last_end >= max_rate_rps else last_end
    return BreakEven(first, intervals, above, max_rate_rps)


def plot_break_even(
    instance: InstanceOffer, lam: LambdaOffer, max_rate_rps: float, path: str | Path,
    *, per: Literal["hour", "month"] = "hour", title: str | None = None,
    colors: Mapping[str, str] | None = None, workload_rps: float | None = None,
    note: str | None = None,
) -> Path:
    """Write a PNG of cost vs request rate for both offers, break-even marked; returns the path.

    ``colors`` maps offer labels to colours (``bench.plot_style.target_colors``); with
    ``workload_rps`` the workload's rate is marked, with what each offer costs there. The x axis
    spans ``[0, max_rate_rps]`` narrowed to where the answer is: 1.1 x the saturation rate or 3 x
    the break-even or workload rate, whichever is largest. ``note`` is added to the caption.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from bench.plot_style import FIGSIZE, finish, legend_outside
    from bench.rounding import fmt

    result = break_even(instance, lam, max_rate_rps)
    scale = HOURS_PER_MONTH if per == "month" else 1.0
    view = min(max_rate_rps, max(1.1 * instance.saturation_rps, 3 * (result.rate_rps or 0.0),
                                 3 * (workload_rps or 0.0)))
    edges = [k * instance.saturation_rps for k in
             range(1, int(view / instance.saturation_rps) + 1)]
    xs = np.unique(np.concatenate([
        np.linspace(0.0, view, 600), np.array(edges),
        np.array(edges) + instance.saturation_rps * 1e-6]))
    xs = xs[xs <= view]
    inst = np.array([instance.cost_per_hour(float(x)) for x in xs]) * scale
    lamc = np.array([lam.cost_per_hour(float(x)) for x in xs]) * scale
    color = dict(colors or {})
    ci, cl = color.get(instance.label, "tab:blue"), color.get(lam.label, "tab:orange")

    fig, ax = plt.subplots(figsize=FIGSIZE)
    ax.plot(xs, inst, label=f"{instance.label} ({instance.provenance})", color=ci)
    ax.plot(xs, lamc, label=f"{lam.label} ({lam.provenance})", color=cl)
    for i, (a, b) in enumerate(result.lambda_cheaper):
        ax.axvspan(a, min(b, view), color=cl, alpha=0.08,
                   label="Lambda cheaper" if i == 0 else None)
    if result.rate_rps is not None:
        ax.axvline(result.rate_rps, color="black", linestyle="--", linewidth=1,
                   label=f"break-even {fmt(result.rate_rps)} req/s")
    caption = None
    if workload_rps is not None and 0 <= workload_rps <= view:
        ci_w = instance.cost_per_hour(workload_rps) * scale
        cl_w = lam.cost_per_hour(workload_rps) * scale
        ax.axvline(workload_rps, color="#444444", linestyle=":", linewidth=1.4,
                   label=f"workload {fmt(workload_rps)} req/s")
        above = ci_w >= cl_w
        for y, c, up in ((ci_w, ci, above), (cl_w, cl, not above)):
            ax.plot([workload_rps], [y], "o", color=c, zorder=3)
            ax.annotate(rf"\${fmt(y)}/{per}", xy=(workload_rps, y), xytext=(8, 6 if up else -12),
                        textcoords="offset points", fontsize=8, color=c,
                        bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none"})
        cheaper = instance.label if ci_w < cl_w else lam.label
        caption = (f"At the workload's {fmt(workload_rps)} req/s, {instance.label} costs "
                   f"${fmt(ci_w)}/{per} ({instance.instances(workload_rps)} instance(s), paid "
                   f"whether busy or not) and {lam.label} ${fmt(cl_w)}/{per}: {cheaper} is "
                   "cheaper there. Instances cost a step per "
                   f"{fmt(instance.saturation_rps)} req/s (one more each time the rate passes "
                   "what one holds under the SLO); Lambda grows with the rate.")
    ax.set_xlabel("request rate (requests/s)")
    ax.set_ylabel(f"cost (USD per {per})")
    ax.set_title(title or "Cost vs request rate: instances (step) and Lambda")
    ax.set_xlim(0, view)
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    legend_outside(ax)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    finish(fig, " ".join(c for c in (caption, note) if c) or None)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out
