"""A benchmark hook: the cheapest measured deployment for a workload, logged with the benchmark.

Each measured target becomes a ``bench.recommend.Profile`` named after the target: its cost
drivers, the SLO, the p95 at its saturation level (or at the first level when nothing held the
SLO), the saturation throughput per instance, and for Lambda the billed duration (the REPORT
lines' mean when the target reported them, else the mean latency at one user, an
over-estimate) and the cold start as INIT. Every option carries the provenance of the targets it
rests on (``bench.provenance``).

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
from pathlib import Path

import pandas as pd

from bench import prices as price_tables
from bench.cost import is_always_on
from bench.hooks import BenchmarkHook, HookOutput, TargetSummary
from bench.prices import PriceTable
from bench.provenance import MEANING
from bench.recommend import Option, Profile, Recommendation, Workload, recommend
from bench.rounding import fmt, round_frame
from bench.stats import LevelStats

COLUMNS = ["rank", "option", "cost_per_hour_usd", "cost_per_month_usd", "cost_per_1m_usd",
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


def p95_at_rate(stats: Sequence[LevelStats], rate_rps: float) -> float | None:
    """p95 at the first level (in measured order) whose throughput reaches ``rate_rps``."""
    for st in stats:
        if st.ok > 0 and st.throughput_rps >= rate_rps:
            return st.p95_ms
    return None


def p95_at_workload(o: Option, by_name: Mapping[str, TargetSummary], wl: Workload
                    ) -> float | None:
    """The option's p95 at the workload (module docstring), or None when not measured."""
    left, worst = wl.peak_rps, 0.0
    for drivers, name in zip(o.drivers, o.targets, strict=True):
        s = by_name.get(name)
        if s is None:
            return None
        if is_always_on(drivers.kind):
            n = drivers.instance_count or 1
            share = min(left, n * (s.saturation_rps or math.inf))
            rate, left = share / n, left - share
        else:
            rate = left
        p95 = p95_at_rate(s.stats, rate)
        if p95 is None:
            return None
        worst = max(worst, p95)
    return worst


def _shaping(o: Option, by_name: Mapping[str, TargetSummary]) -> str:
    return ", ".join(dict.fromkeys(by_name[t].shaping for t in o.targets if t in by_name))


def _table(rec: Recommendation, by_name: Mapping[str, TargetSummary]) -> pd.DataFrame:
    rows = [{
        "rank": i + 1, "option": o.label, "cost_per_hour_usd": o.cost_per_hour.value,
        "cost_per_month_usd": o.cost_per_month.value,
        "cost_per_1m_usd": o.cost_per_million.value,
        "p95_ms_at_workload": p95_at_workload(o, by_name, rec.workload),
        "p95_ms_at_saturation": o.p95_ms.value, "provenance": o.provenance,
        "shaping": _shaping(o, by_name), "notes": "; ".join([o.name, *o.notes]),
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
    return (f"{o.label}: ${fmt(o.cost_per_hour.value)}/h, "
            f"${fmt(o.cost_per_million.value)} per 1M ({o.provenance}) at {_workload(wl)}")


def _markdown(table: pd.DataFrame, wl: Workload, rejected: Sequence[tuple[str, str]]) -> str:
    shaped = any(s not in ("", "none") for s in table["shaping"])
    head = ["#", "option", "$ per hour", "$ per 1M requests",
            f"p95 at {fmt(wl.peak_rps)} req/s (ms)", "p95 at saturation (ms)", "provenance"]
    head += ["shaping"] if shaped else []
    lines = ["| " + " | ".join(head) + " |",
             "|" + "|".join(["---:", "---", "---:", "---:", "---:", "---:", "---"]
                            + (["---"] if shaped else [])) + "|"]
    for r in table.itertuples(index=False):
        cells = [str(r.rank), r.option, fmt(r.cost_per_hour_usd), fmt(r.cost_per_1m_usd),
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


def recommend_hook(workload: Workload, table: PriceTable | None = None) -> BenchmarkHook:
    """A hook that recommends the cheapest deployment for ``workload`` from the measurements."""

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
        rec = recommend(workload, profiles, tbl)
        by_name = {s.name: s for s in summaries}
        frame = _table(rec, by_name)
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
            out.headline = (
                f"### Recommended: {best.label}, ${fmt(best.cost_per_hour.value)}/h "
                f"(${fmt(best.cost_per_million.value)} per 1M requests), `{best.provenance}`")
            out.note.append(
                f"Cheapest of {len(rec.options)} option{'s' * (len(rec.options) != 1)} for "
                f"{_workload(workload)}. `{best.provenance}`: {MEANING[best.provenance]}.")
        else:
            out.parent_tags["recommendation"] = (
                "none: no measured target is both priced and within the SLO at this load")
            out.headline = (f"### Nothing to recommend: no measured target is both priced and "
                            f"within p95 ≤ {fmt(workload.p95_slo_ms)} ms at "
                            f"{fmt(workload.mean_rps)} req/s (see *Left out*)")
        out.note.append(_markdown(frame, workload, rejected))
        return out

    return hook
