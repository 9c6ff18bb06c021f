"""Benchmark results into MLflow: one parent run per benchmark, one child run per target.

Promises:

- Run ids are passed explicitly (``MlflowClient``); MLflow's active run is thread-local and is
  never read or changed here.
- Each child run gets, with ``step`` = concurrency level (or arrival rate, rounded, in open loop):
  ``latency_p50_ms``, ``latency_p90_ms``, ``latency_p95_ms``, ``latency_p99_ms``,
  ``latency_mean_ms``, ``latency_max_ms``, ``throughput_rps``, ``error_rate``, ``timeouts``,
  ``requests``, ``late_starts``, ``generator_cpu_fraction``, and for a shaped stand-in its CPU
  (``standin_cpu_share``, ``standin_cpu_quota``, ``cpu_throttled_periods``, ``shaping_bound``,
  ... as ``bench.level_usage`` defines them); tag ``benchmark.shaping`` (``cgroup-v1``,
  ``cgroup-v2``, ``none`` for an unshaped stand-in, ``aws``); the summary metrics
  ``saturation_throughput_rps`` and ``cold_start_s`` (when measured); params from
  ``Description.as_params()`` plus the load settings; artifacts ``raw/latencies.parquet`` (every
  request, warm-up and errors included) and ``summary.json`` (``mlflow.log_table``).
- The parent run gets the combined summary table and PNG plots: latency (p50 and p95) and
  throughput against concurrency for all targets.
- Hooks (``bench.hooks.BenchmarkHook``) add figures, tables, files and metrics computed from the
  summaries: this is where the cost model plugs in. ``default_hooks()`` is ``bench.report_cost.cost_hook``
  over the packaged price table (cost per 1M inferences per level, break-even plots).
- Every figure is labelled with its provenance (``bench.provenance``).
- NaN figures (e.g. latency at a level where nothing succeeded) are not logged as metrics; they
  stay visible in the summary table.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.figure import Figure
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from bench.hooks import BenchmarkHook, HookOutput, TargetSummary
from bench.load_settings import LoadSettings
from bench.provenance import Provenance
from bench.report_cost import cost_hook
from bench.stats import saturation_throughput, stats_frame
from bench.sweep import SweepResult
from deployers.base import Description

STEP_METRICS = {
    "latency_p50_ms": "p50_ms", "latency_p90_ms": "p90_ms", "latency_p95_ms": "p95_ms",
    "latency_p99_ms": "p99_ms", "latency_mean_ms": "mean_ms", "latency_max_ms": "max_ms",
    "throughput_rps": "throughput_rps", "error_rate": "error_rate", "timeouts": "timeouts",
    "requests": "count",
}

COMPARE_METRICS = ["latency_p50_ms", "latency_p95_ms", "latency_p99_ms", "throughput_rps",
                   "error_rate"]


@dataclass
class TargetRun:
    """What was measured for one target."""

    name: str
    sweep: SweepResult
    description: Description | None = None
    cold_start_s: float | None = None
    provenance: Provenance = "measured-local"
    settings: LoadSettings | None = None
    params: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)  # e.g. Lambda init durations
    shaping: str = "none"  # cgroup-v1 | cgroup-v2 | none (an unshaped stand-in) | aws
    notes: dict[str, str] = field(default_factory=dict)  # child-run tags, e.g. a capacity limit


@dataclass(frozen=True)
class BenchmarkRun:
    parent_run_id: str
    child_run_ids: dict[str, str]
    parent_tags: dict[str, str] = field(default_factory=dict)  # as set on the parent run


def default_hooks() -> list[BenchmarkHook]:
    """The cost hook over the packaged price table (``bench.report_cost``)."""
    return [cost_hook()]


def _step(level: float) -> int:
    return round(level)


def _finite(v: float) -> bool:
    return not (isinstance(v, float) and math.isnan(v))


def summarize_target(t: TargetRun, slo_ms: float) -> TargetSummary:
    stats = t.sweep.stats()
    return TargetSummary(t.name, t.sweep.mode, stats, saturation_throughput(stats, slo_ms),
                         t.cold_start_s, t.description, t.provenance, dict(t.metrics),
                         t.shaping)


def summary_table(summaries: Sequence[TargetSummary]) -> pd.DataFrame:
    """All targets' level statistics in one frame (target, provenance, then the stats)."""
    frames = []
    for s in summaries:
        f = stats_frame(s.stats)
        f.insert(0, "shaping", s.shaping)
        f.insert(0, "provenance", s.provenance)
        f.insert(0, "target", s.name)
        frames.append(f)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def plot_latency(summaries: Sequence[TargetSummary], slo_ms: float | None = None) -> Figure:
    """p50 (solid) and p95 (dashed) latency against concurrency, one colour per target."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, s in enumerate(summaries):
        x = [st.level for st in s.stats]
        color = f"C{i % 10}"
        ax.plot(x, [st.p50_ms for st in s.stats], "o-", color=color,
                label=f"{s.name} p50 ({s.provenance})")
        ax.plot(x, [st.p95_ms for st in s.stats], "s--", color=color, label=f"{s.name} p95")
    if slo_ms is not None:
        ax.axhline(slo_ms, color="grey", lw=0.8, ls=":", label=f"SLO {slo_ms:g} ms")
    ax.set_xlabel("concurrent users" if _mode(summaries) == "closed" else "arrival rate (req/s)")
    ax.set_ylabel("latency (ms)")
    ax.set_title("Latency vs. load")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def plot_throughput(summaries: Sequence[TargetSummary]) -> Figure:
    """Successful requests/s against concurrency, one line per target."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, s in enumerate(summaries):
        ax.plot([st.level for st in s.stats], [st.throughput_rps for st in s.stats], "o-",
                color=f"C{i % 10}", label=f"{s.name} ({s.provenance})")
    ax.set_xlabel("concurrent users" if _mode(summaries) == "closed" else "arrival rate (req/s)")
    ax.set_ylabel("throughput (successful req/s)")
    ax.set_title("Throughput vs. load")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def _mode(summaries: Sequence[TargetSummary]) -> str:
    return summaries[0].mode if summaries else "closed"


def _child_params(t: TargetRun, slo_ms: float) -> dict[str, str]:
    params: dict[str, str] = {"target_name": t.name, "slo_ms": f"{slo_ms:g}",
                              "mode": t.sweep.mode, "provenance": t.provenance,
                              "levels": ",".join(f"{x:g}" for x in t.sweep.planned)}
    if t.description is not None:
        params.update(t.description.as_params())
    if t.settings is not None:
        params.update({f"load.{k}": str(v) for k, v in t.settings.model_dump().items()})
    params.update(t.params)
    return {k: v[:6000] for k, v in params.items()}


def _log_child(
    client: MlflowClient, experiment_id: str, parent_id: str, t: TargetRun, s: TargetSummary,
    slo_ms: float, extra: list[HookOutput],
) -> str:
    run = client.create_run(experiment_id, run_name=t.name, tags={
        "mlflow.parentRunId": parent_id, "benchmark.target": t.name,
        "benchmark.provenance": t.provenance,
    })
    rid = run.info.run_id
    try:
        ts = 0
        metrics: list[Metric] = []
        for lv, st in zip(t.sweep.levels, s.stats, strict=True):
            step = _step(st.level)
            vals = {m: float(getattr(st, f)) for m, f in STEP_METRICS.items()}
            vals["late_starts"] = float(lv.late_starts)
            vals["generator_cpu_fraction"] = float(lv.cpu_fraction)
            if lv.usage is not None:
                vals |= lv.usage.metrics(lv.level, lv.mode)
            metrics += [Metric(k, v, ts, step) for k, v in vals.items() if _finite(v)]
        if s.saturation_rps is not None:
            metrics.append(Metric("saturation_throughput_rps", s.saturation_rps, ts, 0))
        if t.cold_start_s is not None:
            metrics.append(Metric("cold_start_s", t.cold_start_s, ts, 0))
        metrics += [Metric(k, float(v), ts, 0) for k, v in t.metrics.items() if _finite(v)]
        for out in extra:
            for name, series in out.step_metrics.get(t.name, {}).items():
                metrics += [Metric(name, float(v), ts, _step(x)) for x, v in series if _finite(v)]
            for name, v in out.summary_metrics.get(t.name, {}).items():
                if _finite(v):
                    metrics.append(Metric(name, float(v), ts, 0))
        params = [Param(k, v) for k, v in _child_params(t, slo_ms).items()]
        tags = [RunTag("benchmark.generator_cpu_saturated", str(t.sweep.cpu_saturated)),
                RunTag("benchmark.shaping", t.shaping)]
        tags += [RunTag(f"benchmark.{k}", v[:5000]) for k, v in t.notes.items()]
        if t.sweep.stopped_reason:
            tags.append(RunTag("benchmark.stopped_reason", t.sweep.stopped_reason[:5000]))
        for i in range(0, max(len(metrics), 1), 900):
            client.log_batch(rid, metrics=metrics[i:i + 900],
                             params=params if i == 0 else [], tags=tags if i == 0 else [])
        with tempfile.TemporaryDirectory() as tmp:
            raw = Path(tmp) / "latencies.parquet"
            t.sweep.frame().to_parquet(raw, index=False)
            client.log_artifact(rid, str(raw), "raw")
        client.log_table(rid, _level_frame(t, s), "summary.json")
    except Exception:
        client.set_terminated(rid, "FAILED")
        raise
    client.set_terminated(rid, "FINISHED")
    return rid


def _level_frame(t: TargetRun, s: TargetSummary) -> pd.DataFrame:
    """The target's level statistics, with the stand-in's CPU per level when it was shaped."""
    frame = stats_frame(s.stats)
    if any(lv.usage is not None for lv in t.sweep.levels):
        rows = [lv.usage.metrics(lv.level, lv.mode) if lv.usage else {} for lv in t.sweep.levels]
        extra = pd.DataFrame(rows, index=frame.index)
        frame = pd.concat([frame, extra], axis=1)
    return frame


def log_benchmark(
    targets: Sequence[TargetRun], slo_ms: float, experiment_name: str = "benchmark",
    run_name: str = "benchmark", nest_under: str | None = None,
    hooks: Sequence[BenchmarkHook] | None = None, tags: dict[str, str] | None = None,
    client: MlflowClient | None = None,
) -> BenchmarkRun:
    """Log ``targets`` as one parent run (optionally nested under run ``nest_under``) with one
    child per target. ``hooks=None`` uses ``default_hooks()``; pass ``[]`` for none."""
    if not targets:
        raise ValueError("targets is empty: nothing was measured, so nothing can be logged")
    names = [t.name for t in targets]
    if len(set(names)) != len(names):
        raise ValueError(f"target names must be unique, got {names}")
    client = client or MlflowClient()
    exp = client.get_experiment_by_name(experiment_name)
    exp_id = exp.experiment_id if exp else client.create_experiment(experiment_name)
    parent_tags = {"benchmark.targets": ",".join(names), **(tags or {})}
    if nest_under:
        parent_tags["mlflow.parentRunId"] = nest_under
    parent = client.create_run(exp_id, run_name=run_name, tags=parent_tags)
    pid = parent.info.run_id
    workdir = tempfile.TemporaryDirectory(prefix="niser-bench-")
    try:
        summaries = [summarize_target(t, slo_ms) for t in targets]
        chosen = default_hooks() if hooks is None else hooks
        outputs = [hook(summaries, slo_ms, Path(workdir.name)) for hook in chosen]
        children = {t.name: _log_child(client, exp_id, pid, t, s, slo_ms, outputs)
                    for t, s in zip(targets, summaries, strict=True)}
        client.log_param(pid, "slo_ms", f"{slo_ms:g}")
        client.log_table(pid, summary_table(summaries), "summary.json")
        figures = {"plots/latency_vs_concurrency.png": plot_latency(summaries, slo_ms),
                   "plots/throughput_vs_concurrency.png": plot_throughput(summaries)}
        for out in outputs:
            figures.update(out.figures)
            for path, table in out.tables.items():
                client.log_table(pid, table, path)
            for folder, local in out.files:
                client.log_artifact(pid, str(local), folder)
            for key, value in out.parent_metrics.items():
                client.log_metric(pid, key, value)
            for key, text in out.parent_tags.items():
                client.set_tag(pid, key, text)
                parent_tags[key] = text
        for path, fig in figures.items():
            client.log_figure(pid, fig, path)
            plt.close(fig)
        for s in summaries:
            if s.saturation_rps is not None:
                client.log_metric(pid, f"saturation_throughput_rps.{s.name}", s.saturation_rps)
    except Exception:
        client.set_terminated(pid, "FAILED")
        raise
    finally:
        workdir.cleanup()
    client.set_terminated(pid, "FINISHED")
    return BenchmarkRun(pid, children, parent_tags)


def compare_table(
    parent_run_id: str | None = None, experiment_name: str | None = None,
    client: MlflowClient | None = None,
) -> pd.DataFrame:
    """One row per (target run, level) from MLflow: the children of ``parent_run_id``, or every
    benchmark target run of ``experiment_name``."""
    if (parent_run_id is None) == (experiment_name is None):
        raise ValueError("give exactly one of parent_run_id or experiment_name")
    client = client or MlflowClient()
    if parent_run_id is not None:
        parent = client.get_run(parent_run_id)
        exp_ids = [parent.info.experiment_id]
        filt = f"tags.mlflow.parentRunId = '{parent_run_id}'"
    else:
        exp = client.get_experiment_by_name(experiment_name or "")
        if exp is None:
            known = [e.name for e in client.search_experiments()]
            raise ValueError(f"no experiment named {experiment_name!r}; known: {known}")
        exp_ids, filt = [exp.experiment_id], "tags.`benchmark.target` != ''"
    runs = client.search_runs(exp_ids, filt, max_results=5000)
    rows: list[dict[str, object]] = []
    for run in runs:
        target = run.data.tags.get("benchmark.target")
        if target is None:
            continue
        hist = {m: {h.step: h.value for h in client.get_metric_history(run.info.run_id, m)}
                for m in COMPARE_METRICS}
        steps = sorted(set().union(*(h.keys() for h in hist.values())))
        for step in steps:
            row: dict[str, object] = {"run_id": run.info.run_id[:8], "target": target,
                                      "provenance": run.data.tags.get("benchmark.provenance"),
                                      "level": step}
            row.update({m: hist[m].get(step, math.nan) for m in hist})
            row["saturation_throughput_rps"] = run.data.metrics.get(
                "saturation_throughput_rps", math.nan)
            row["cold_start_s"] = run.data.metrics.get("cold_start_s", math.nan)
            rows.append(row)
    cols = ["run_id", "target", "provenance", "level", *COMPARE_METRICS,
            "saturation_throughput_rps", "cold_start_s"]
    return pd.DataFrame(rows, columns=cols).sort_values(["target", "level"], ignore_index=True)

