"""A power-tuning run into MLflow: one parent run, one child run per memory size, and a plot.

Promises:

- Run ids are passed explicitly (``MlflowClient``); MLflow's active run is never read or set.
- Each child run (named ``"<M> MB"``) gets, with ``step`` = memory size in MB, the metrics of
  ``STEP_METRICS`` (NaN figures, e.g. an unmeasured CPU share, are not logged), plus
  ``fallback_rate`` (sessions answered by the popularity fallback / sessions sent) and, when the
  CPU was probed, the probe's ``bench.level_usage`` metrics at one request in flight
  (``standin_cpu_share``, ``cpu_throttled_periods``, ``machine_cpu_busy``, ``shaping_bound``
  where the quota was meant to bind, ...), ``probe_busy_fraction`` and ``probe_invocations``;
  tags
  ``provenance``, ``shaping`` (``Usage.shaping`` or ``none``) and ``memory_mb``; the run's
  params; artifact ``raw/invocations.json`` (class, Billed Duration and Duration of every warm
  invocation). A size that failed is a FAILED child run with tag ``error``.
- The parent run (``run_name``, default ``power-tune``) gets the same step metrics, one point per
  size, so one chart shows each across sizes; tags ``pick.cost``, ``pick.speed``,
  ``pick.balanced`` (MB), ``provenance`` (the weakest of the sizes',
  ``bench.provenance.combine``), ``shaping`` and ``failed_sizes`` (when some failed); the
  params; ``summary.json`` (one row per size), ``power_tune.txt`` (the printed table) and
  ``plots/power_tune.png`` (cost and duration against memory size, provenance in the legend).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.figure import Figure
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from bench.power_tune import Picks, SizeMeasurement, SizeProfile
from bench.provenance import combine

STEP_METRICS: dict[str, str] = {
    "duration_p50_ms": "p50_ms", "duration_p95_ms": "p95_ms", "duration_mean_ms": "mean_ms",
    "init_ms": "init_ms", "cold_starts": "cold_starts", "cpu_share_configured": "cpu_configured",
    "cpu_share_measured": "cpu_measured", "cost_per_1m_usd": "cost_per_1m_usd",
    "duration_cost_per_1m_usd": "duration_cost_per_1m_usd", "cold_start_usd": "cold_start_usd",
}
"""MLflow metric -> ``SizeProfile`` field, logged with step = memory size."""


@dataclass(frozen=True)
class PowerTuneRun:
    """The runs one power-tuning run was logged as."""

    parent_run_id: str
    child_run_ids: dict[int, str]  # memory size -> run id
    experiment_id: str


def step_metrics(p: SizeProfile, ts: int) -> list[Metric]:
    """The finite ``STEP_METRICS`` of ``p`` with step = its memory size."""
    values = {name: float(getattr(p, field)) for name, field in STEP_METRICS.items()}
    return [Metric(k, v, ts, p.memory_mb) for k, v in values.items() if not math.isnan(v)]


def invocations_frame(m: SizeMeasurement) -> pd.DataFrame:
    """One row per warm invocation: its session class, Billed Duration and Duration (ms)."""
    return pd.DataFrame({"session_class": list(m.classes), "billed_ms": list(m.billed_ms),
                         "duration_ms": list(m.duration_ms)})


def summary_frame(profiles: Sequence[SizeProfile]) -> pd.DataFrame:
    """One row per size, columns named as the fields of ``SizeProfile``."""
    return pd.DataFrame([asdict(p) for p in profiles],
                        columns=list(SizeProfile.__dataclass_fields__))


def plot_power_tune(profiles: Sequence[SizeProfile], picks: Picks | None) -> Figure:
    """Two panels against memory size: cost per 1M (USD, without INIT) and warm Billed Duration
    (p50 solid, p95 dashed); picks marked, provenance in the legend."""
    sizes = sorted(profiles, key=lambda p: p.memory_mb)
    x = [p.memory_mb for p in sizes]
    label = ", ".join(sorted({p.provenance for p in sizes}))
    fig, (cost_ax, time_ax) = plt.subplots(1, 2, figsize=(10, 4.2))
    cost_ax.plot(x, [p.cost_per_1m_usd for p in sizes], "o-", color="C0",
                 label=f"cost per 1M ({label})")
    time_ax.plot(x, [p.p50_ms for p in sizes], "o-", color="C1", label=f"p50 ({label})")
    time_ax.plot(x, [p.p95_ms for p in sizes], "s--", color="C1", label="p95")
    if picks is not None:
        for name, memory, style in (("cost", picks.cost, ":"), ("speed", picks.speed, "-."),
                                    ("balanced", picks.balanced, "--")):
            for ax in (cost_ax, time_ax):
                ax.axvline(memory, color="grey", lw=0.8, ls=style,
                           label=f"{name} pick {memory} MB" if ax is cost_ax else None)
    cost_ax.set_ylabel("USD per 1M invocations (without INIT)")
    time_ax.set_ylabel("warm billed duration (ms)")
    for ax, title in ((cost_ax, "Cost vs. memory"), (time_ax, "Duration vs. memory")):
        ax.set_xlabel("memory (MB)")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def _child(client: MlflowClient, exp_id: str, parent_id: str, memory: int,
           params: Mapping[str, str], profile: SizeProfile | None,
           measurement: SizeMeasurement | None, error: str | None, ts: int) -> str:
    tags = {"mlflow.parentRunId": parent_id, "memory_mb": str(memory)}
    if profile is not None:
        tags |= {"provenance": profile.provenance, "shaping": profile.shaping}
    run = client.create_run(exp_id, run_name=f"{memory} MB", tags=tags)
    rid = run.info.run_id
    if profile is None or measurement is None:
        client.log_batch(rid, params=[Param(k, v) for k, v in params.items()],
                         tags=[RunTag("error", (error or "unknown error")[:5000])])
        client.set_terminated(rid, "FAILED")
        return rid
    try:
        metrics = step_metrics(profile, ts)
        if measurement.sessions:
            metrics.append(Metric("fallback_rate",
                                  measurement.fallback_sessions / measurement.sessions, ts,
                                  memory))
        probe = measurement.probe
        if probe is not None:
            extra = {**probe.usage.metrics(1, "closed"),
                     "probe_busy_fraction": probe.busy_fraction,
                     "probe_invocations": float(probe.invocations)}
            metrics += [Metric(key, value, ts, memory) for key, value in extra.items()
                        if not math.isnan(value)]
        child_params = {**params, "memory_mb": str(memory),
                        "architecture": measurement.architecture,
                        "deployments": ",".join(measurement.deployments)[:6000]}
        client.log_batch(rid, metrics=metrics,
                         params=[Param(k, v) for k, v in child_params.items()])
        client.log_table(rid, invocations_frame(measurement), "raw/invocations.json")
    except Exception:
        client.set_terminated(rid, "FAILED")
        raise
    client.set_terminated(rid, "FINISHED")
    return rid


def log_power_tune(
    measured: Sequence[tuple[SizeProfile, SizeMeasurement]], failed: Mapping[int, str],
    picks: Picks | None, params: Mapping[str, str], table: str,
    experiment_name: str = "power-tune", run_name: str = "power-tune",
    client: MlflowClient | None = None,
) -> PowerTuneRun:
    """Log one power-tuning run (module docstring); ``ValueError`` when nothing was tried."""
    if not measured and not failed:
        raise ValueError("no memory size was tried: nothing to log")
    client = client or MlflowClient()
    exp = client.get_experiment_by_name(experiment_name)
    exp_id = exp.experiment_id if exp else client.create_experiment(experiment_name)
    profiles = [p for p, _ in measured]
    tags = {"shaping": ",".join(sorted({p.shaping for p in profiles})) or "none"}
    if profiles:
        tags["provenance"] = combine(*(p.provenance for p in profiles))
    if failed:
        tags["failed_sizes"] = ",".join(str(m) for m in sorted(failed))
    if picks is not None:
        tags |= {"pick.cost": str(picks.cost), "pick.speed": str(picks.speed),
                 "pick.balanced": str(picks.balanced)}
    parent = client.create_run(exp_id, run_name=run_name, tags=tags)
    pid = parent.info.run_id
    ts = parent.info.start_time
    children: dict[int, str] = {}
    try:
        for profile, m in measured:
            children[m.memory_mb] = _child(client, exp_id, pid, m.memory_mb, params, profile,
                                           m, None, ts)
        for memory, error in failed.items():
            children[memory] = _child(client, exp_id, pid, memory, params, None, None, error,
                                      ts)
        metrics = [metric for p in profiles for metric in step_metrics(p, ts)]
        client.log_batch(pid, metrics=metrics, params=[Param(k, v) for k, v in params.items()])
        client.log_table(pid, summary_frame(profiles), "summary.json")
        client.log_text(pid, table + "\n", "power_tune.txt")
        if profiles:
            fig = plot_power_tune(profiles, picks)
            client.log_figure(pid, fig, "plots/power_tune.png")
            plt.close(fig)
    except Exception:
        client.set_terminated(pid, "FAILED")
        raise
    client.set_terminated(pid, "FINISHED")
    return PowerTuneRun(pid, children, exp_id)
