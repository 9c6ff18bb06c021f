"""What a benchmark spent: each target's bill for the time its deployment existed and the
requests the benchmark sent it, as the metric ``experiment_cost_usd``.

- Instances (SageMaker real-time): instance count x hourly price x the hours from the start of
  the deploy to the end of the teardown (``held_s``), whether busy or not.
- Lambda: every request sent (``requests_sent``) at the request price, plus the billed
  GB-seconds (the REPORT lines' mean billed duration x requests x memory), INIT of cold starts,
  and provisioned concurrency for ``held_s``.
- SageMaker serverless: the client-side mean latency as the billed duration (an over-estimate).
- Local and in-process targets: the table's local price for ``held_s`` when set, else 0.

Pure functions over ``TargetSummary`` and the price table. On a stand-in the figure is what the
same run would have cost on AWS, and its basis says so: nothing was billed. The hook logs each
target's figure, the total on the benchmark run and a tag saying what each figure rests on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from bench import prices as price_tables
from bench.cost import SECONDS_PER_HOUR, hourly_cost, lambda_bill, serverless_bill
from bench.hooks import BenchmarkHook, HookOutput, TargetSummary
from bench.prices import PriceError, PriceTable


@dataclass(frozen=True)
class Spend:
    """One target's cost over the benchmark, and what it rests on."""

    usd: float
    basis: str


def _mean_latency_ms(s: TargetSummary) -> float:
    weighted = [(st.mean_ms, st.ok) for st in s.stats if st.ok and math.isfinite(st.mean_ms)]
    total = sum(n for _, n in weighted)
    return sum(m * n for m, n in weighted) / total if total else 0.0


def spend(s: TargetSummary, table: PriceTable, region: str | None = None) -> Spend:
    """``s``'s cost over its benchmark (module docstring); ``ValueError``/``PriceError`` when it
    cannot be priced."""
    if s.description is None:
        raise ValueError("no deployment description")
    held_s = s.metrics.get("held_s", 0.0)
    requests = int(s.metrics.get("requests_sent", 0))
    cost = s.description.cost
    label = ("billed estimate" if s.provenance == "measured-real"
             else "would be, on AWS (stand-in, nothing billed)") + f" [{s.provenance}]"
    if cost.kind == "instance":
        per_hour = hourly_cost(cost, table, region)
        return Spend(per_hour * held_s / SECONDS_PER_HOUR,
                     f"{label}: {cost.instance_count} x {cost.instance_type} for"
                     f" {held_s:.0f} s at ${per_hour:.4g}/h")
    if cost.kind == "lambda":
        if cost.memory_mb is None:
            raise ValueError("a Lambda target needs its memory_mb")
        reported = int(s.metrics.get("lambda_reports", requests))
        bill = lambda_bill(
            requests=requests, duration_ms=s.metrics.get("lambda_billed_ms_mean", 0.0),
            memory_mb=cost.memory_mb, prices=table.region(region).lambda_,
            architecture=cost.architecture, provisioned_concurrency=cost.provisioned_concurrency
            or 0, period_s=held_s,
            init_ms=[s.metrics.get("lambda_init_ms_mean", 0.0)]
            * int(s.metrics.get("lambda_cold_starts", 0)))
        return Spend(bill.total_usd, f"{label}: {requests} requests ({reported} reported),"
                                     f" {cost.memory_mb} MB, for {held_s:.0f} s")
    if cost.kind == "serverless":
        serverless = table.region(region).sagemaker_serverless
        if serverless is None or cost.memory_mb is None:
            raise PriceError("no SageMaker serverless prices in the table")
        sbill = serverless_bill(requests=requests, duration_ms=_mean_latency_ms(s),
                                memory_mb=cost.memory_mb, prices=serverless)
        return Spend(sbill.total_usd, f"{label}: {requests} requests at the client-side mean"
                                      f" latency, {cost.memory_mb} MB")
    try:
        per_hour = hourly_cost(cost, table, region)
    except (PriceError, ValueError):
        return Spend(0.0, f"this machine for {held_s:.0f} s: no local price set")
    return Spend(per_hour * held_s / SECONDS_PER_HOUR,
                 f"this machine for {held_s:.0f} s at ${per_hour:.4g}/h")


def spend_hook(table: PriceTable | None = None, region: str | None = None) -> BenchmarkHook:
    """A hook logging ``experiment_cost_usd`` per target, its total on the parent run, and
    ``experiment_cost.json`` (target, USD, basis)."""

    def hook(summaries: list[TargetSummary], slo_ms: float, workdir: Path) -> HookOutput:
        tbl = table if table is not None else price_tables.load()
        out = HookOutput()
        rows: list[dict[str, Any]] = []
        for s in summaries:
            try:
                got = spend(s, tbl, region)
            except (PriceError, ValueError) as exc:
                rows.append({"target": s.name, "usd": None, "basis": f"not priced: {exc}"})
                continue
            out.summary_metrics[s.name] = {"experiment_cost_usd": got.usd}
            rows.append({"target": s.name, "usd": got.usd, "basis": got.basis})
        priced = [r["usd"] for r in rows if r["usd"] is not None]
        if priced:
            out.parent_metrics["experiment_cost_usd"] = float(sum(priced))
            out.tables["experiment_cost.json"] = pd.DataFrame(rows, columns=["target", "usd",
                                                                              "basis"])
            out.parent_tags["experiment_cost"] = "; ".join(
                f"{r['target']}: ${r['usd']:.4f} ({r['basis']})" if r["usd"] is not None
                else f"{r['target']}: {r['basis']}" for r in rows)[:5000]
        return out

    return hook
