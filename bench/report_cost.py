"""Cost figures for a benchmark report: measured statistics priced with ``bench.cost``.

``cost_hook(table, region, workload_rps)`` is a ``bench.hooks.BenchmarkHook``. Promises:

- Per target and level, ``cost_per_1m_usd`` = ``bench.cost.cost_per_million_at_load`` at the
  throughput that level actually served. Lambda and SageMaker serverless bill duration: the
  mean billed duration of the target's REPORT lines when it reported them (Lambda), else the
  client-side mean latency of the level, an upper bound (it includes the invoke path).
- Per target, ``cost_per_1m_usd_at_saturation`` (at its saturation throughput) and, for always-on
  capacity, ``cost_per_hour_usd``. With ``workload_rps``, also ``cost_per_hour_usd_at_workload``
  and ``cost_per_1m_usd_at_workload``: what serving that steady rate costs (always-on: the
  instances that hold the SLO at it, whether busy or not; Lambda: requests and duration).
- On the parent run: ``plots/cost_per_1m_vs_concurrency.png`` (USD on a linear axis), and for
  every pair of an always-on target that has a saturation throughput and a Lambda target, the
  break-even plot of ``bench.breakeven.plot_break_even``
  (``plots/breakeven_<instance>_vs_<lambda>.png``, the workload's rate marked with each
  option's cost there), with ``breakeven_rps.<lambda>`` logged on the instance's run when a
  break-even exists. Colours are the targets' (``bench.plot_style``) in every plot.
- With a ``predict-check`` validation, the shapes predicted from the SageMaker target
  (``bench.report_predict.predicted_targets``) get break-even plots against every Lambda target
  too, captioned as predicted, with ``breakeven_rps.<shape>.<lambda>`` on the parent run and
  ``..._low`` / ``..._high``: the break-even when the predicted throughput is off by the
  validated error either way.
- When the target that is cheapest per request at saturation is not the cheapest at the
  workload's rate, the cost plot carries a caption saying why, and so does the run description.
- A target that cannot be priced (no description, or a price the table lacks, e.g. local
  machines, whose price is unset until the user sets one) gets no cost figure; the reason is in
  the parent's ``cost_notes.json``. No price is ever made up.
"""

from __future__ import annotations

import math
import re
from dataclasses import replace
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd

from bench import prices as price_tables
from bench.breakeven import InstanceOffer, LambdaOffer, break_even, plot_break_even
from bench.cost import SECONDS_PER_HOUR, cost_per_million_at_load, hourly_cost, is_always_on
from bench.hooks import BenchmarkHook, HookOutput, TargetSummary
from bench.plot_style import FIGSIZE, finish, legend_outside, target_colors
from bench.prices import PriceError, PriceTable
from bench.report_predict import Validation, predicted_targets
from bench.rounding import fmt

Offer = InstanceOffer | LambdaOffer


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name)


def offer(s: TargetSummary, tbl: PriceTable, region: str | None = None) -> Offer | None:
    """The target as a cost curve over the request rate, or None (not priced, no SLO level)."""
    if s.description is None:
        return None
    d = s.description.cost
    if is_always_on(d.kind):
        if not s.saturation_rps:
            return None
        return InstanceOffer(s.name, hourly_cost(d, tbl, region), s.saturation_rps, s.provenance)
    base = [st for st in s.stats if not math.isnan(st.mean_ms)]
    if d.kind != "lambda" or not base or d.memory_mb is None:
        return None
    return LambdaOffer(s.name, s.billed_ms(base[0].mean_ms), d.memory_mb,
                       tbl.region(region).lambda_, s.provenance, d.architecture or "x86_64",
                       d.provisioned_concurrency or 0)


def _predicted_offers(summaries: list[TargetSummary], slo_ms: float, tbl: PriceTable,
                      region: str | None, validation: Validation | None
                      ) -> list[tuple[InstanceOffer, float | None]]:
    """The validated predicted shapes as offers (one instance's price and saturation, at least
    the predicted count) with their throughput error in percent."""
    if validation is None:
        return []
    out = []
    for t in predicted_targets(summaries, validation):
        at = t.at_saturation(slo_ms)
        count = t.drivers.instance_count or 1
        if at is None:
            continue
        try:
            price = hourly_cost(replace(t.drivers, instance_count=1), tbl, region)
        except PriceError:
            continue
        out.append((InstanceOffer(t.name, price, at.throughput_rps / count, "predicted",
                                  min_instances=count), validation.throughput_error_pct))
    return out


def cost_hook(table: PriceTable | None = None, region: str | None = None,
              workload_rps: float | None = None, validation: Validation | None = None
              ) -> BenchmarkHook:
    """A hook pricing every target with ``table`` (default: the packaged ``prices.json``);
    with ``validation``, the shapes predicted from the measured ones enter the break-evens."""

    def hook(summaries: list[TargetSummary], slo_ms: float, workdir: Path) -> HookOutput:
        tbl = table if table is not None else price_tables.load()
        out = HookOutput()
        notes: list[dict[str, str]] = []
        priced: dict[str, list[tuple[float, float]]] = {}
        offers: dict[str, Offer] = {}
        for s in summaries:
            if s.description is None:
                notes.append({"target": s.name, "note": "no deployment description: not priced"})
                continue
            try:
                series, summary = _price(s, tbl, region)
                target_offer = offer(s, tbl, region)
            except (PriceError, ValueError) as exc:
                notes.append({"target": s.name, "note": f"not priced: {exc}"})
                continue
            priced[s.name], out.summary_metrics[s.name] = series, summary
            out.step_metrics[s.name] = {"cost_per_1m_usd": series}
            if target_offer is not None:
                offers[s.name] = target_offer
                if workload_rps:
                    per_hour = target_offer.cost_per_hour(workload_rps)
                    out.summary_metrics[s.name] |= {
                        "cost_per_hour_usd_at_workload": per_hour,
                        "cost_per_1m_usd_at_workload":
                            per_hour / (workload_rps * SECONDS_PER_HOUR) * 1e6}
        why = _why(summaries, out, workload_rps) if workload_rps else None
        if why:
            out.note.append(why)
        if priced:
            out.figures["plots/cost_per_1m_vs_concurrency.png"] = _plot_cost(
                summaries, priced, why)
        notes += _break_evens(summaries, offers, workdir, out, workload_rps)
        _predicted_break_evens(summaries, offers, _predicted_offers(
            summaries, slo_ms, tbl, region, validation), workdir, out, workload_rps)
        if notes:
            out.tables["cost_notes.json"] = pd.DataFrame(notes, columns=["target", "note"])
        return out

    return hook


def _price(s: TargetSummary, tbl: PriceTable, region: str | None
           ) -> tuple[list[tuple[float, float]], dict[str, float]]:
    """Cost per 1M at each level's served load, and the target's summary cost metrics."""
    assert s.description is not None
    drivers = s.description.cost
    series = [
        (st.level, cost_per_million_at_load(drivers, tbl, served_rps=st.throughput_rps,
                                            duration_ms=s.billed_ms(st.mean_ms), region=region))
        for st in s.stats if st.throughput_rps > 0 and not math.isnan(st.mean_ms)]
    summary: dict[str, float] = {}
    if is_always_on(drivers.kind):
        summary["cost_per_hour_usd"] = hourly_cost(drivers, tbl, region)
    if s.saturation_rps:
        at_sat = max((st for st in s.stats if st.throughput_rps == s.saturation_rps),
                     key=lambda st: st.level)
        summary["cost_per_1m_usd_at_saturation"] = cost_per_million_at_load(
            drivers, tbl, served_rps=s.saturation_rps, duration_ms=s.billed_ms(at_sat.mean_ms),
            region=region)
    return series, summary


def _why(summaries: list[TargetSummary], out: HookOutput, rate: float) -> str | None:
    """Why the cheapest target per request (busy) is not the cheapest at ``rate``, if it is not."""
    m = out.summary_metrics
    busy = {s.name: m[s.name]["cost_per_1m_usd_at_saturation"] for s in summaries
            if "cost_per_1m_usd_at_saturation" in m.get(s.name, {})}
    there = {s.name: m[s.name]["cost_per_hour_usd_at_workload"] for s in summaries
             if "cost_per_hour_usd_at_workload" in m.get(s.name, {})}
    if not busy or not there:
        return None
    cheap_busy, cheap_there = min(busy, key=busy.__getitem__), min(there, key=there.__getitem__)
    if cheap_busy == cheap_there or cheap_busy not in there:
        return None
    kinds = {s.name: s.description.cost.kind for s in summaries if s.description}
    always_on = "always on, it costs" if is_always_on(kinds[cheap_busy]) else "it costs"
    return (f"Why {cheap_busy} is cheapest per request but not the cheapest deployment: busy "
            f"(at its saturation) it costs ${fmt(busy[cheap_busy])} per 1M requests, but "
            f"{always_on} ${fmt(there[cheap_busy])}/h at the workload's {fmt(rate)} req/s "
            f"(${fmt(m[cheap_busy]['cost_per_1m_usd_at_workload'])} per 1M), while "
            f"{cheap_there} costs ${fmt(there[cheap_there])}/h there "
            f"(${fmt(m[cheap_there]['cost_per_1m_usd_at_workload'])} per 1M). "
            "The break-even plots show the rate from which the instance is cheaper.")


def _plot_cost(summaries: list[TargetSummary], priced: dict[str, list[tuple[float, float]]],
               why: str | None) -> plt.Figure:
    colors = target_colors([s.name for s in summaries])
    fig, ax = plt.subplots(figsize=FIGSIZE)
    for s in summaries:
        if s.name not in priced:
            continue
        xs, ys = zip(*priced[s.name], strict=True) if priced[s.name] else ((), ())
        ax.plot(xs, ys, "o-", color=colors[s.name], label=f"{s.name} ({s.provenance})")
    ax.set_xlabel("concurrent users" if summaries[0].mode == "closed" else "arrival rate (req/s)")
    ax.set_ylabel("USD per 1M requests at the load served")
    ax.set_ylim(bottom=0)
    ax.set_title("Cost per 1M requests vs. load (each level priced at what it served)")
    ax.grid(alpha=0.3)
    legend_outside(ax)
    return finish(fig, why)


def _break_evens(
    summaries: list[TargetSummary], offers: dict[str, Offer], workdir: Path, out: HookOutput,
    workload_rps: float | None,
) -> list[dict[str, str]]:
    notes: list[dict[str, str]] = []
    colors = target_colors([s.name for s in summaries])
    instances = [s for s in summaries if s.description and is_always_on(s.description.cost.kind)]
    lambdas = [s for s in summaries if s.description and s.description.cost.kind == "lambda"]
    for inst in instances:
        for lam in lambdas:
            offer_i, offer_l = offers.get(inst.name), offers.get(lam.name)
            if not isinstance(offer_i, InstanceOffer):
                notes.append({"target": inst.name, "note": "no level met the SLO or no price: "
                              f"no break-even against {lam.name}"})
                continue
            if not isinstance(offer_l, LambdaOffer):
                notes.append({"target": lam.name, "note": "no successful level, no memory "
                              "size or no price: no break-even"})
                continue
            try:
                max_rate = max(4 * offer_i.saturation_rps, 1.5 * (workload_rps or 0.0))
                result = break_even(offer_i, offer_l, max_rate)
                png = workdir / f"breakeven_{_safe(inst.name)}_vs_{_safe(lam.name)}.png"
                plot_break_even(offer_i, offer_l, max_rate, png, colors=colors,
                                workload_rps=workload_rps)
            except (PriceError, ValueError) as exc:
                notes.append({"target": inst.name, "note": f"no break-even vs {lam.name}: {exc}"})
                continue
            out.files.append(("plots", png))
            if result.rate_rps is not None:
                out.summary_metrics.setdefault(inst.name, {})[f"breakeven_rps.{lam.name}"] = (
                    result.rate_rps)
    return notes


def _predicted_break_evens(summaries: list[TargetSummary], offers: dict[str, Offer],
                           predicted: list[tuple[InstanceOffer, float | None]], workdir: Path,
                           out: HookOutput, workload_rps: float | None) -> None:
    """Break-evens of predicted instance shapes against every measured Lambda target: the
    parent metrics ``breakeven_rps.<shape>.<lambda>`` and, with the validated error ``e``,
    ``..._low`` / ``..._high`` at ``(1 - e)`` and ``(1 + e)`` times the predicted saturation."""
    colors = target_colors([s.name for s in summaries] + [o.label for o, _ in predicted])
    for offer_l in (o for o in offers.values() if isinstance(o, LambdaOffer)):
        for offer_i, err in predicted:
            max_rate = max(4 * offer_i.saturation_rps, 1.5 * (workload_rps or 0.0))
            key = f"breakeven_rps.{offer_i.label}.{offer_l.label}"
            rates = {"": break_even(offer_i, offer_l, max_rate).rate_rps}
            if err is not None:
                for suffix, f in (("_low", 1 - err / 100), ("_high", 1 + err / 100)):
                    rates[suffix] = break_even(replace(
                        offer_i, saturation_rps=offer_i.saturation_rps * max(f, 0.01)),
                        offer_l, max_rate).rate_rps
            for suffix, rate in rates.items():
                if rate is not None:
                    out.parent_metrics[key + suffix] = rate
            band = ("" if err is None else
                    f" With the validated throughput error (±{fmt(err)} %) the break-even lies "
                    f"between {_rate(rates.get('_low'))} and {_rate(rates.get('_high'))} req/s.")
            png = workdir / f"breakeven_{_safe(offer_i.label)}_vs_{_safe(offer_l.label)}.png"
            plot_break_even(offer_i, offer_l, max_rate, png, colors=colors,
                            workload_rps=workload_rps, note=(
                                f"{offer_i.label} is predicted (not measured) from the measured "
                                f"SageMaker target.{band}"))
            out.files.append(("plots", png))


def _rate(rate: float | None) -> str:
    return "none in range" if rate is None else fmt(rate)
