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
- Every metric, and every number in the summary tables, is rounded to what the measurement can
  tell (``bench.rounding``: ms to 0.01, USD to 4 significant digits, never more than 6).
- The parent run gets the combined summary table, PNG plots (latency p50 and p95 with the SLO
  line, and throughput, against concurrency for all targets; one colour per target, legends
  outside the data) and its description (``mlflow.note.content``, ``bench.report_note``): the
  hooks' recommendation, links to the metric chart of all targets, a row per target and the
  provenance labels.
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
from mlflow.entities import Metric, Param, Run, RunTag
from mlflow.tracking import MlflowClient

from bench.hooks import BenchmarkHook, HookOutput, TargetSummary
from bench.load_settings import LoadSettings
from bench.plot_style import FIGSIZE, finish, legend_outside, slo_line, target_colors
from bench.provenance import Provenance
from bench.report_cost import cost_hook
from bench.report_note import compose
from bench.report_predict import Validation
from bench.rounding import round_frame, round_metric
from bench.spend import spend_hook
from bench.stats import saturation_throughput, stats_frame
from bench.sweep import SweepResult
from deployers.base import Description

STEP_METRICS = {
    "latency_p50_ms": "p50_ms", "latency_p90_ms": "p90_ms", "latency_p95_ms": "p95_ms",
    "latency_p99_ms": "p99_ms", "latency_mean_ms": "mean_ms", "latency_max_ms": "max_ms",
    "throughput_rps": "throughput_rps", "error_rate": "error_rate", "timeouts": "timeouts",
    "requests": "count",
}

NOTE_TAG = "mlflow.note.content"  # the run's description in the MLflow UI (markdown)

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
    """What ``log_benchmark`` logged: run ids, the parent's tags (its description included, as
    ``mlflow.note.content``) and each target's summary metrics (``summary_metrics``)."""

    parent_run_id: str
    child_run_ids: dict[str, str]
    parent_tags: dict[str, str] = field(default_factory=dict)  # as set on the parent run
    experiment_id: str = ""
    target_metrics: dict[str, dict[str, float]] = field(default_factory=dict)


def default_hooks(workload_rps: float | None = None, validation: Validation | None = None
                  ) -> list[BenchmarkHook]:
    """The cost hook over the packaged price table (``bench.report_cost``), pricing
    ``workload_rps`` too when given, with the predicted shapes when ``validation`` is, and what
    the benchmark spent (``bench.spend``)."""
    return [cost_hook(workload_rps=workload_rps, validation=validation), spend_hook()]


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


def _xlabel(summaries: Sequence[TargetSummary]) -> str:
    return "concurrent users" if _mode(summaries) == "closed" else "arrival rate (req/s)"


def plot_latency(summaries: Sequence[TargetSummary], slo_ms: float | None = None) -> Figure:
    """p50 (solid) and p95 (dashed) latency against concurrency, one colour per target, each
    curve labelled with its provenance, the SLO as a red dashed line."""
    colors = target_colors([s.name for s in summaries])
    fig, ax = plt.subplots(figsize=FIGSIZE)
    for s in summaries:
        x = [st.level for st in s.stats]
        ax.plot(x, [st.p50_ms for st in s.stats], "o-", color=colors[s.name],
                label=f"{s.name} p50 ({s.provenance})")
        ax.plot(x, [st.p95_ms for st in s.stats], "s--", color=colors[s.name],
                label=f"{s.name} p95 ({s.provenance})")
    if slo_ms is not None:
        slo_line(ax, slo_ms)
    ax.set_xlabel(_xlabel(summaries))
    ax.set_ylabel("latency (ms)")
    ax.set_ylim(bottom=0)
    ax.set_title("Latency vs. load")
    ax.grid(alpha=0.3)
    legend_outside(ax)
    return finish(fig)


def plot_throughput(summaries: Sequence[TargetSummary]) -> Figure:
    """Successful requests/s against concurrency, one line per target."""
    colors = target_colors([s.name for s in summaries])
    fig, ax = plt.subplots(figsize=FIGSIZE)
    for s in summaries:
        ax.plot([st.level for st in s.stats], [st.throughput_rps for st in s.stats], "o-",
                color=colors[s.name], label=f"{s.name} ({s.provenance})")
    ax.set_xlabel(_xlabel(summaries))
    ax.set_ylabel("throughput (successful req/s)")
    ax.set_ylim(bottom=0)
    ax.set_title("Throughput vs. load")
    ax.grid(alpha=0.3)
    legend_outside(ax)
    return finish(fig)


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


def _metric(key: str, value: float, step: int) -> Metric:
    """A metric rounded to what the measurement can tell (``bench.rounding``)."""
    return Metric(key, round_metric(key, float(value)), 0, step)


def summary_metrics(t: TargetRun, s: TargetSummary, extra: Sequence[HookOutput]
                    ) -> dict[str, float]:
    """The child run's metrics at step 0, rounded: saturation, cold start, the target's own
    (e.g. Lambda init) and the hooks' (e.g. cost per 1M at saturation); NaN left out."""
    vals: dict[str, float] = {}
    if s.saturation_rps is not None:
        vals["saturation_throughput_rps"] = s.saturation_rps
    if t.cold_start_s is not None:
        vals["cold_start_s"] = t.cold_start_s
    vals |= {k: float(v) for k, v in t.metrics.items()}
    for out in extra:
        vals |= {k: float(v) for k, v in out.summary_metrics.get(t.name, {}).items()}
    return {k: round_metric(k, v) for k, v in vals.items() if _finite(v)}


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
        metrics: list[Metric] = []
        for lv, st in zip(t.sweep.levels, s.stats, strict=True):
            step = _step(st.level)
            vals = {m: float(getattr(st, f)) for m, f in STEP_METRICS.items()}
            vals["late_starts"] = float(lv.late_starts)
            vals["generator_cpu_fraction"] = float(lv.cpu_fraction)
            if lv.usage is not None:
                vals |= lv.usage.metrics(lv.level, lv.mode)
            metrics += [_metric(k, v, step) for k, v in vals.items() if _finite(v)]
        for out in extra:
            for name, series in out.step_metrics.get(t.name, {}).items():
                metrics += [_metric(name, v, _step(x)) for x, v in series if _finite(v)]
        metrics += [_metric(k, v, 0) for k, v in summary_metrics(t, s, extra).items()]
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
        client.log_table(rid, round_frame(_level_frame(t, s)), "summary.json")
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
        client.log_table(pid, round_frame(summary_table(summaries)), "summary.json")
        figures = {"plots/latency_vs_concurrency.png": plot_latency(summaries, slo_ms),
                   "plots/throughput_vs_concurrency.png": plot_throughput(summaries)}
        for out in outputs:
            figures.update(out.figures)
            for path, table in out.tables.items():
                client.log_table(pid, table, path)
            for folder, local in out.files:
                client.log_artifact(pid, str(local), folder)
            for key, value in out.parent_metrics.items():
                client.log_metric(pid, key, round_metric(key, value))
            for key, text in out.parent_tags.items():
                client.set_tag(pid, key, text)
                parent_tags[key] = text
        for path, fig in figures.items():
            client.log_figure(pid, fig, path)
            plt.close(fig)
        for s in summaries:
            if s.saturation_rps is not None:
                key = f"saturation_throughput_rps.{s.name}"
                client.log_metric(pid, key, round_metric(key, s.saturation_rps))
        per_target = {t.name: summary_metrics(t, s, outputs)
                      for t, s in zip(targets, summaries, strict=True)}
        note = compose(summaries, slo_ms, outputs, exp_id, children, per_target)
        client.set_tag(pid, NOTE_TAG, note)
        parent_tags[NOTE_TAG] = note
    except Exception:
        client.set_terminated(pid, "FAILED")
        raise
    finally:
        workdir.cleanup()
    client.set_terminated(pid, "FINISHED")
    return BenchmarkRun(pid, children, parent_tags, exp_id, per_target)


def latest_benchmark_run(experiment: str, client: MlflowClient | None = None) -> Run | None:
    """The newest benchmark parent run (tag ``benchmark.targets``) of ``experiment``, or None."""
    client = client or MlflowClient()
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], "tags.`benchmark.targets` != ''",
                              order_by=["attributes.start_time DESC"], max_results=1
                              ) if exp else []
    return runs[0] if runs else None


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

