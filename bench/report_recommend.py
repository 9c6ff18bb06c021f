"""A benchmark hook: the cheapest measured deployment for a workload, logged with the benchmark.

Each measured target becomes a ``bench.recommend.Profile`` named after the target: its cost
drivers, the SLO, the p95 at its saturation level (or at the first level when nothing held the
SLO), the saturation throughput per instance, and for Lambda the billed duration (the REPORT
lines' mean when the target reported them, else the mean latency at one user, an
over-estimate) and the cold start as INIT. Every option carries the provenance of the targets it
rests on (``bench.provenance``).

Given the latest ``predict-check`` validation, the shapes this machine cannot hold
(``bench.report_predict.predicted_targets``: one ml.c5.xlarge and one ml.c5.2xlarge from the
measured SageMaker target; the recommendation chooses the counts) are priced too, as
``predicted`` profiles carrying the validated throughput error: their options get a cost band
(``bench.recommend``), shown as ``± x %`` beside the cost in the table (``cost_band``), the
headline and the ``recommendation`` tag; the parent tag ``recommendation.predicted`` lists
them with their cost and band. Without a validation they are left out, with that reason.

The hook logs ``recommendation.json`` (every option, cheapest first, with its short name, cost
per hour and per 1M, p95 at the workload and at saturation, provenance; USD to 4 significant
digits, ms to 0.01), ``recommendation_rejected.json`` (every target left out, by its name, and
why), the best option's cost per hour as the parent metric ``recommended_cost_per_hour_usd``,
its summary as the parent tag ``recommendation`` (``none: ...`` when nothing qualifies) and its
provenance as ``recommendation.provenance``, and for the run's description a headline (the
recommendation, its cost and provenance) and the ranked options as a markdown table.

"p95 at the workload" is the p95 at the first measured level whose throughput covers the rate
each unit of the option serves there (the peak rate over its instances; for Lambda the whole
rate; for a hybrid the worse of its instances at saturation and Lambda on the overflow); "-"
when no measured level reached it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from bench import prices as price_tables
from bench.cost import is_always_on
from bench.hooks import BenchmarkHook, HookOutput, TargetSummary
from bench.perfmodel import Level, levels_of
from bench.prices import PriceTable
from bench.provenance import MEANING
from bench.recommend import Option, Profile, Recommendation, Workload, band_text, recommend
from bench.report_predict import PredictedTarget, Validation, error_band, predicted_targets
from bench.rounding import fmt, round_frame

COLUMNS = ["rank", "option", "cost_per_hour_usd", "cost_band", "cost_per_month_usd",
           "cost_per_1m_usd",
           "p95_ms_at_workload", "p95_ms_at_saturation", "provenance", "shaping", "notes"]


def profile(s: TargetSummary, slo_ms: float) -> Profile | None:
    """The pricing profile of one measured target, or None if it has nothing usable."""
    ok = [st for st in s.stats if st.ok > 0]
    if s.description is None or not ok:
        return None
    at = next((st for st in ok if st.throughput_rps == s.saturation_rps), ok[0])
    lambda_like = s.description.cost.kind in ("lambda", "serverless")
    return Profile(
        target=s.description.target, name=s.name, drivers=s.description.cost, slo_ms=slo_ms,
        p95_ms=max(at.p95_ms, 1e-3), saturation_rps=s.saturation_rps or None,
        duration_ms=s.billed_ms(ok[0].mean_ms) if lambda_like else None,
        init_ms=(s.cold_start_s or 0.0) * 1000 if lambda_like else 0.0,
        provenance=s.provenance)


def predicted_profile(t: PredictedTarget, slo_ms: float, validation: Validation
                      ) -> Profile | None:
    """The pricing profile of a predicted shape: its saturation per instance under the SLO,
    the p95 there, provenance ``predicted`` and the validated throughput error (None when no
    predicted level holds the SLO)."""
    at = t.at_saturation(slo_ms)
    if at is None:
        return None
    return Profile(target="sagemaker", name=t.name, drivers=t.drivers, slo_ms=slo_ms,
                   p95_ms=max(at.p95_ms, 1e-3),
                   saturation_rps=at.throughput_rps / (t.drivers.instance_count or 1),
                   provenance="predicted", error_pct=validation.throughput_error_pct)


@dataclass(frozen=True)
class _Curve:
    levels: Sequence[Level]
    saturation_rps: float | None  # the whole target's
    shaping: str


def p95_at_rate(levels: Sequence[Level], rate_rps: float) -> float | None:
    """p95 at the first level (in measured order) whose throughput reaches ``rate_rps``."""
    for lv in levels:
        if lv.throughput_rps >= rate_rps:
            return lv.p95_ms
    return None


def p95_at_workload(o: Option, curves: Mapping[str, _Curve], wl: Workload) -> float | None:
    """The option's p95 at the workload (module docstring), or None when not measured."""
    left, worst = wl.peak_rps, 0.0
    for drivers, name in zip(o.drivers, o.targets, strict=True):
        c = curves.get(name)
        if c is None:
            return None
        if is_always_on(drivers.kind):
            n = drivers.instance_count or 1
            share = min(left, n * (c.saturation_rps or math.inf))
            rate, left = share / n, left - share
        else:
            rate = left
        p95 = p95_at_rate(c.levels, rate)
        if p95 is None:
            return None
        worst = max(worst, p95)
    return worst


def _shaping(o: Option, curves: Mapping[str, _Curve]) -> str:
    return ", ".join(dict.fromkeys(curves[t].shaping for t in o.targets if t in curves))


def _table(rec: Recommendation, curves: Mapping[str, _Curve]) -> pd.DataFrame:
    rows = [{
        "rank": i + 1, "option": o.label, "cost_per_hour_usd": o.cost_per_hour.value,
        "cost_band": band_text(o.cost_per_hour.band_pct).strip(),
        "cost_per_month_usd": o.cost_per_month.value,
        "cost_per_1m_usd": o.cost_per_million.value,
        "p95_ms_at_workload": p95_at_workload(o, curves, rec.workload),
        "p95_ms_at_saturation": o.p95_ms.value, "provenance": o.provenance,
        "shaping": _shaping(o, curves), "notes": "; ".join([o.name, *o.notes]),
    } for i, o in enumerate(rec.options)]
    frame = pd.DataFrame(rows, columns=COLUMNS)
    for col in ("p95_ms_at_workload", "cost_per_hour_usd", "cost_per_1m_usd"):
        frame[col] = frame[col].astype(float)
    return round_frame(frame)


def _workload(wl: Workload) -> str:
    burst = (f" (bursts to {fmt(wl.peak_rps)} for {fmt(100 * wl.burst_fraction)} % of the time)"
             if wl.burst_fraction > 0 and wl.burst_rps > 0 else "")
    return f"{fmt(wl.mean_rps)} req/s mean{burst}, p95 ≤ {fmt(wl.p95_slo_ms)} ms"


def summary_line(o: Option, wl: Workload) -> str:
    """``name: $x/h, $y per 1M (provenance) at <workload>``: the ``recommendation`` tag."""
    band = band_text(o.cost_per_hour.band_pct)
    return (f"{o.label}: ${fmt(o.cost_per_hour.value)}/h{band}, "
            f"${fmt(o.cost_per_million.value)} per 1M{band} ({o.provenance}) at {_workload(wl)}")


def _markdown(table: pd.DataFrame, wl: Workload, rejected: Sequence[tuple[str, str]]) -> str:
    shaped = any(s not in ("", "none") for s in table["shaping"])
    head = ["#", "option", "$ per hour", "$ per 1M requests",
            f"p95 at {fmt(wl.peak_rps)} req/s (ms)", "p95 at saturation (ms)", "provenance"]
    head += ["shaping"] if shaped else []
    lines = ["| " + " | ".join(head) + " |",
             "|" + "|".join(["---:", "---", "---:", "---:", "---:", "---:", "---"]
                            + (["---"] if shaped else [])) + "|"]
    for r in table.itertuples(index=False):
        band = f" {r.cost_band}" if r.cost_band else ""
        cells = [str(r.rank), r.option, fmt(r.cost_per_hour_usd) + band,
                 fmt(r.cost_per_1m_usd) + band,
                 fmt(r.p95_ms_at_workload), fmt(r.p95_ms_at_saturation), f"`{r.provenance}`"]
        cells += [str(r.shaping)] if shaped else []
        lines.append("| " + " | ".join(cells) + " |")
    text = (f"**Every option that holds the SLO at this workload, cheapest first** "
            f"({_workload(wl)}):\n\n" + "\n".join(lines))
    if rejected:
        by_reason: dict[str, list[str]] = {}
        for who, why in rejected:
            by_reason.setdefault(why, []).append(who)
        text += "\n\nLeft out: " + "; ".join(f"**{', '.join(whos)}**: {why}"
                                             for why, whos in by_reason.items())
    return text


def _predicted(summaries: Sequence[TargetSummary], slo_ms: float,
               validation: Validation | None) -> tuple[list[Profile], dict[str, _Curve],
                                                       list[tuple[str, str]]]:
    profiles, curves, skipped = [], {}, []
    # one instance of each predicted type: the recommendation chooses the count itself
    for t in (t for t in predicted_targets(summaries, validation)
              if (t.drivers.instance_count or 1) == 1):
        if validation is None:
            skipped.append((t.name, "predicted, but the model has no validation on this "
                                    "tracking server: run `niser-mlops predict-check`"))
        elif (p := predicted_profile(t, slo_ms, validation)) is None:
            skipped.append((t.name, f"no predicted level holds p95 ≤ {fmt(slo_ms)} ms"))
        else:
            profiles.append(p)
            curves[t.name] = _Curve(t.levels, p.saturation_rps, "predicted")  # one instance
    return profiles, curves, skipped


def recommend_hook(workload: Workload, table: PriceTable | None = None,
                   validation: Validation | None = None) -> BenchmarkHook:
    """A hook that recommends the cheapest deployment for ``workload`` from the measurements
    and, with a ``validation``, the shapes predicted from them (``predicted_targets``)."""

    def hook(summaries: list[TargetSummary], slo_ms: float, workdir: Path) -> HookOutput:
        tbl = table if table is not None else price_tables.load()
        out = HookOutput()
        profiles, skipped = [], []
        for s in summaries:
            p = profile(s, slo_ms)
            if p is None:
                skipped.append((s.name, "no successful request or no deployment description"))
            else:
                profiles.append(p)
        more, curves, left_out = _predicted(summaries, slo_ms, validation)
        skipped += left_out
        rec = recommend(workload, [*profiles, *more], tbl)
        curves |= {s.name: _Curve(levels_of(s.stats), s.saturation_rps, s.shaping)
                   for s in summaries}
        frame = _table(rec, curves)
        rejected = [*skipped, *rec.rejected]
        out.tables["recommendation.json"] = frame
        out.tables["recommendation_rejected.json"] = pd.DataFrame(
            rejected, columns=["target", "reason"])
        best = rec.best
        if best is not None:
            out.parent_metrics["recommended_cost_per_hour_usd"] = float(
                frame.iloc[0]["cost_per_hour_usd"])
            out.parent_tags["recommendation"] = summary_line(best, workload)
            out.parent_tags["recommendation.provenance"] = best.provenance
            band = band_text(best.cost_per_hour.band_pct)
            out.headline = (
                f"### Recommended: {best.label}, ${fmt(best.cost_per_hour.value)}/h{band} "
                f"(${fmt(best.cost_per_million.value)} per 1M requests{band}), "
                f"`{best.provenance}`")
            out.note.append(
                f"Cheapest of {len(rec.options)} option{'s' * (len(rec.options) != 1)} for "
                f"{_workload(workload)}. `{best.provenance}`: {MEANING[best.provenance]}.")
            predicted = [o for o in rec.options if o.provenance == "predicted"]
            if predicted and validation is not None:
                out.parent_tags["recommendation.predicted"] = (
                    ", ".join(f"{o.label} ${fmt(o.cost_per_hour.value)}/h"
                              f"{band_text(o.cost_per_hour.band_pct)}" for o in predicted)
                    + f" ({error_band(validation)})")
            if more and validation is not None:
                out.note.append(
                    f"`predicted` options rest on shapes this machine cannot hold "
                    f"({', '.join(p.label for p in more)}), predicted from the measured SageMaker "
                    f"target; their cost band is the cost when the predicted throughput is off by "
                    f"the validated error ({error_band(validation)}, predict-check run "
                    f"`{validation.run_id}`).")
        else:
            out.parent_tags["recommendation"] = (
                "none: no measured target is both priced and within the SLO at this load")
            out.headline = (f"### Nothing to recommend: no measured target is both priced and "
                            f"within p95 ≤ {fmt(workload.p95_slo_ms)} ms at "
                            f"{fmt(workload.mean_rps)} req/s (see *Left out*)")
        out.note.append(_markdown(frame, workload, rejected))
        return out

    return hook
