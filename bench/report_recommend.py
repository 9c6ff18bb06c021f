"""A benchmark hook: the cheapest measured deployment for a workload, logged with the benchmark.

Each measured target becomes a ``bench.recommend.Profile``: its cost drivers, the SLO, the p95 at
its saturation level (or at the first level when nothing held the SLO), the saturation throughput
per instance, and for Lambda the billed duration (the REPORT lines' mean when the target
reported them, else the mean latency at one user, an over-estimate) and the cold start as INIT.
Every option carries the provenance of the targets it rests on (``bench.provenance``). The
hook logs ``recommendation.json`` (every option,
cheapest first, with provenance), ``recommendation_rejected.json`` (every target left out and
why), the best option's cost per hour as the parent metric ``recommended_cost_per_hour_usd`` and
its description as the parent tag ``recommendation``.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from bench import prices as price_tables
from bench.hooks import BenchmarkHook, HookOutput, TargetSummary
from bench.prices import PriceTable
from bench.recommend import Profile, Workload, recommend


def profile(s: TargetSummary, slo_ms: float) -> Profile | None:
    """The pricing profile of one measured target, or None if it has nothing usable."""
    ok = [st for st in s.stats if st.ok > 0]
    if s.description is None or not ok:
        return None
    at = next((st for st in ok if st.throughput_rps == s.saturation_rps), ok[0])
    lambda_like = s.description.cost.kind in ("lambda", "serverless")
    return Profile(
        target=s.description.target, drivers=s.description.cost, slo_ms=slo_ms,
        p95_ms=max(at.p95_ms, 1e-3), saturation_rps=s.saturation_rps or None,
        duration_ms=s.billed_ms(ok[0].mean_ms) if lambda_like else None,
        init_ms=(s.cold_start_s or 0.0) * 1000 if lambda_like else 0.0,
        provenance=s.provenance)


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
        out.tables["recommendation.json"] = pd.DataFrame([{
            "rank": i + 1, "option": o.name, "cost_per_hour_usd": o.cost_per_hour.value,
            "cost_per_month_usd": o.cost_per_month.value,
            "cost_per_1m_usd": o.cost_per_million.value, "p95_ms": o.p95_ms.value,
            "provenance": o.provenance, "notes": "; ".join(o.notes),
        } for i, o in enumerate(rec.options)], columns=[
            "rank", "option", "cost_per_hour_usd", "cost_per_month_usd", "cost_per_1m_usd",
            "p95_ms", "provenance", "notes"])
        out.tables["recommendation_rejected.json"] = pd.DataFrame(
            [*skipped, *rec.rejected], columns=["target", "reason"])
        if rec.best is not None:
            out.parent_metrics["recommended_cost_per_hour_usd"] = rec.best.cost_per_hour.value
            out.parent_tags["recommendation"] = (
                f"{rec.best.name}: ${rec.best.cost_per_hour.value:.4f}/h, "
                f"${rec.best.cost_per_million.value:.2f} per 1M ({rec.best.provenance}) at "
                f"{workload.mean_rps:g} req/s mean, p95 <= {workload.p95_slo_ms:g} ms")
        else:
            out.parent_tags["recommendation"] = "no measured target meets the SLO at this load"
        return out

    return hook
