"""Cost figures for a benchmark report: measured statistics priced with ``bench.cost``.

``cost_hook(table, region)`` is a ``bench.hooks.BenchmarkHook``. Promises:

- Per target and level, ``cost_per_1m_usd`` = ``bench.cost.cost_per_million_at_load`` at the
  throughput that level actually served. Lambda and SageMaker serverless bill duration: the
  mean billed duration of the target's REPORT lines when it reported them (Lambda), else the
  client-side mean latency of the level, an upper bound (it includes the invoke path).
- Per target, ``cost_per_1m_usd_at_saturation`` (at its saturation throughput) and, for always-on
  capacity, ``cost_per_hour_usd``.
- On the parent run: ``plots/cost_per_1m_vs_concurrency.png``, and for every pair of an always-on
  target that has a saturation throughput and a Lambda target, the break-even plot of
  ``bench.breakeven.plot_break_even`` (``plots/breakeven_<instance>_vs_<lambda>.png``), with
  ``breakeven_rps.<lambda>`` logged on the instance's run when a break-even exists.
- A target that cannot be priced (no description, or a price the table lacks, e.g. local
  machines, whose price is unset until the user sets one) gets no cost figure; the reason is in
  the parent's ``cost_notes.json``. No price is ever made up.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd

from bench import prices as price_tables
from bench.breakeven import InstanceOffer, LambdaOffer, break_even, plot_break_even
from bench.cost import cost_per_million_at_load, hourly_cost, is_always_on
from bench.hooks import BenchmarkHook, HookOutput, TargetSummary
from bench.prices import PriceError, PriceTable


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name)


def cost_hook(table: PriceTable | None = None, region: str | None = None) -> BenchmarkHook:
    """A hook pricing every target with ``table`` (default: the packaged ``prices.json``)."""

    def hook(summaries: list[TargetSummary], slo_ms: float, workdir: Path) -> HookOutput:
        tbl = table if table is not None else price_tables.load()
        out = HookOutput()
        notes: list[dict[str, str]] = []
        priced: dict[str, list[tuple[float, float]]] = {}
        for s in summaries:
            if s.description is None:
                notes.append({"target": s.name, "note": "no deployment description: not priced"})
                continue
            drivers = s.description.cost
            try:
                series = [
                    (st.level, cost_per_million_at_load(
                        drivers, tbl, served_rps=st.throughput_rps,
                        duration_ms=s.billed_ms(st.mean_ms),
                        region=region))
                    for st in s.stats if st.throughput_rps > 0 and not math.isnan(st.mean_ms)
                ]
                summary: dict[str, float] = {}
                if is_always_on(drivers.kind):
                    summary["cost_per_hour_usd"] = hourly_cost(drivers, tbl, region)
                if s.saturation_rps:
                    at_sat = max((st for st in s.stats if st.throughput_rps == s.saturation_rps),
                                 key=lambda st: st.level)
                    summary["cost_per_1m_usd_at_saturation"] = cost_per_million_at_load(
                        drivers, tbl, served_rps=s.saturation_rps,
                        duration_ms=s.billed_ms(at_sat.mean_ms),
                        region=region)
            except (PriceError, ValueError) as exc:
                notes.append({"target": s.name, "note": f"not priced: {exc}"})
                continue
            priced[s.name] = series
            out.step_metrics[s.name] = {"cost_per_1m_usd": series}
            out.summary_metrics[s.name] = summary
        if priced:
            out.figures["plots/cost_per_1m_vs_concurrency.png"] = _plot_cost(summaries, priced)
        notes += _break_evens(summaries, tbl, region, workdir, out)
        if notes:
            out.tables["cost_notes.json"] = pd.DataFrame(notes, columns=["target", "note"])
        return out

    return hook


def _plot_cost(
    summaries: list[TargetSummary], priced: dict[str, list[tuple[float, float]]]
) -> plt.Figure:
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, s in enumerate(summaries):
        if s.name not in priced:
            continue
        xs, ys = zip(*priced[s.name], strict=True) if priced[s.name] else ((), ())
        ax.plot(xs, ys, "o-", color=f"C{i % 10}", label=f"{s.name} ({s.provenance})")
    ax.set_yscale("log")
    ax.set_xlabel("concurrent users" if summaries[0].mode == "closed" else "arrival rate (req/s)")
    ax.set_ylabel("USD per 1M inferences at the served load")
    ax.set_title("Cost per 1M inferences vs. load")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def _break_evens(
    summaries: list[TargetSummary], tbl: PriceTable, region: str | None, workdir: Path,
    out: HookOutput,
) -> list[dict[str, str]]:
    notes: list[dict[str, str]] = []
    instances = [s for s in summaries if s.description and is_always_on(s.description.cost.kind)]
    lambdas = [s for s in summaries if s.description and s.description.cost.kind == "lambda"]
    for inst in instances:
        for lam in lambdas:
            assert inst.description is not None and lam.description is not None
            if not inst.saturation_rps:
                notes.append({"target": inst.name, "note": "no level met the SLO: no "
                              f"break-even against {lam.name}"})
                continue
            base = [st for st in lam.stats if not math.isnan(st.mean_ms)]
            if not base or lam.description.cost.memory_mb is None:
                notes.append({"target": lam.name, "note": "no successful level or no memory "
                              "size: no break-even"})
                continue
            try:
                offer_i = InstanceOffer(inst.name, hourly_cost(inst.description.cost, tbl, region),
                                        inst.saturation_rps, inst.provenance)
                offer_l = LambdaOffer(
                    lam.name, base[0].mean_ms, lam.description.cost.memory_mb,
                    tbl.region(region).lambda_, lam.provenance,
                    lam.description.cost.architecture or "x86_64",
                    lam.description.cost.provisioned_concurrency or 0,
                )
                max_rate = 4 * inst.saturation_rps
                result = break_even(offer_i, offer_l, max_rate)
                png = workdir / f"breakeven_{_safe(inst.name)}_vs_{_safe(lam.name)}.png"
                plot_break_even(offer_i, offer_l, max_rate, png)
            except (PriceError, ValueError) as exc:
                notes.append({"target": inst.name, "note": f"no break-even vs {lam.name}: {exc}"})
                continue
            out.files.append(("plots", png))
            if result.rate_rps is not None:
                out.summary_metrics.setdefault(inst.name, {})[f"breakeven_rps.{lam.name}"] = (
                    result.rate_rps)
    return notes
