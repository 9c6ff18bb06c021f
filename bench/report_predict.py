"""Predicted figures in MLflow: step metrics beside the measured ones, and plots where measured
curves are solid and predicted ones dashed, one colour per target.

- ``PREDICTED_METRICS``: the per-level metric names (step = concurrency) of a prediction.
- ``plot_predictions(measured, predicted, slo_ms, caption)``: p95 latency and throughput
  against concurrent users; a target measured and predicted has both curves in its colour.
- ``check_hook(result)``: the ``BenchmarkHook`` that logs a ``predict-check`` validation with
  its benchmark: the held-out shapes' predicted step metrics, the errors on the parent run, the
  plot and the per-level table.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.figure import Figure

from bench.hooks import BenchmarkHook, HookOutput, TargetSummary
from bench.perfmodel import Level
from bench.plot_style import FIGSIZE, finish, slo_line, target_colors
from bench.predict_check import CheckResult

PREDICTED_METRICS = {"predicted_latency_p50_ms": "p50_ms", "predicted_latency_p95_ms": "p95_ms",
                     "predicted_latency_mean_ms": "mean_ms",
                     "predicted_throughput_rps": "throughput_rps"}


def step_metrics(levels: Sequence[Level]) -> dict[str, list[tuple[float, float]]]:
    """``metric -> [(users, value)]`` of predicted levels."""
    return {name: [(float(lv.users), float(getattr(lv, attr))) for lv in levels]
            for name, attr in PREDICTED_METRICS.items()}


def measured_levels(s: TargetSummary) -> list[Level]:
    return [Level(int(st.level), st.mean_ms, st.p50_ms, st.p95_ms, st.throughput_rps)
            for st in s.stats if st.ok > 0]


def plot_predictions(measured: Mapping[str, tuple[Sequence[Level], str]],
                     predicted: Mapping[str, tuple[Sequence[Level], str]],
                     slo_ms: float | None, caption: str | None = None) -> Figure:
    """p95 and throughput against users: ``name -> (levels, label)``; measured solid with
    circles, predicted dashed with crosses, the same colour for the same name."""
    colors = target_colors([*measured, *predicted])
    fig, (lat, thr) = plt.subplots(1, 2, figsize=(FIGSIZE[0] + 3, FIGSIZE[1]))
    for style, curves in (("o-", measured), ("x--", predicted)):
        for name, (levels, label) in curves.items():
            x = [lv.users for lv in levels]
            lat.plot(x, [lv.p95_ms for lv in levels], style, color=colors[name],
                     label=f"{name} {label}")
            thr.plot(x, [lv.throughput_rps for lv in levels], style, color=colors[name])
    if slo_ms is not None:
        slo_line(lat, slo_ms)
    lat.set(xlabel="concurrent users", ylabel="p95 latency (ms)", title="p95 latency vs. users")
    thr.set(xlabel="concurrent users", ylabel="throughput (req/s)", title="Throughput vs. users")
    for ax in (lat, thr):
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
    handles, labels = lat.get_legend_handles_labels()
    thr.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8,
               frameon=False, borderaxespad=0.0)
    return finish(fig, caption)


def _check_frame(result: CheckResult) -> pd.DataFrame:
    rows = []
    for h in result.held_out:
        by_users = {lv.users: lv for lv in h.predicted}
        for lv in h.measured.levels:
            p = by_users.get(lv.users)
            if p is None:
                continue
            rows.append({"shape": h.measured.name, "users": lv.users,
                         "measured_mean_ms": lv.mean_ms, "predicted_mean_ms": p.mean_ms,
                         "measured_p95_ms": lv.p95_ms, "predicted_p95_ms": p.p95_ms,
                         "measured_rps": lv.throughput_rps, "predicted_rps": p.throughput_rps})
    return pd.DataFrame(rows)


def check_hook(result: CheckResult, measurements: str) -> BenchmarkHook:
    """Log ``result`` with the benchmark of the shapes it measured, and the measurements
    (``predict_check.dumps``) as ``prediction/measured.json``."""

    def hook(summaries: list[TargetSummary], slo_ms: float, workdir: Path) -> HookOutput:
        held = {h.measured.name: h for h in result.held_out}
        measured = {s.name: (measured_levels(s), s.provenance) for s in summaries}
        predicted = {name: (list(h.predicted), f"predicted (mean error {h.mape_mean:.0f} %)")
                     for name, h in held.items()}
        fig = plot_predictions(measured, predicted, slo_ms, caption=(
            "Solid: measured on this machine (measured-local); dashed: predicted for the "
            "held-out shapes by the performance model fitted on the others. "
            + result.summary_line()))
        per_shape = {name: {"prediction_mape_latency": h.mape_mean,
                            "prediction_mape_p95": h.mape_p95,
                            "prediction_throughput_error": h.throughput_error}
                     for name, h in held.items()}
        saved = workdir / "measured.json"
        saved.write_text(measurements)
        return HookOutput(
            figures={"plots/predicted_vs_measured.png": fig}, files=[("prediction", saved)],
            tables={"prediction_check.json": _check_frame(result)},
            step_metrics={name: step_metrics(h.predicted) for name, h in held.items()},
            summary_metrics=per_shape, parent_metrics=result.metrics(),
            headline=result.summary_line(),
            note=[f"Held-out shapes: {', '.join(held)}; fitted on the others. Errors are mean "
                  "absolute percentage errors over the measured levels (throughput: at the "
                  "highest level)."])

    return hook
