"""Predicted figures in MLflow: step metrics beside the measured ones, and plots where measured
curves are solid and predicted ones dashed, one colour per target.

- ``PREDICTED_METRICS``: the per-level metric names (step = concurrency) of a prediction.
- ``plot_predictions(measured, predicted, slo_ms, caption)``: p95 latency and throughput
  against concurrent users; a target measured and predicted has both curves in its colour.
- ``check_hook(result)``: the ``BenchmarkHook`` that logs a ``predict-check`` validation with
  its benchmark: the held-out shapes' predicted step metrics, the errors on the parent run, the
  plot and the per-level table.
- ``forecast_hook(validation)``: predicted curves in every benchmark, and the shapes this
  machine cannot hold: ``predicted_targets`` (ml.c5.xlarge, ml.c5.2xlarge, 2 x ml.c5.xlarge
  from the first SageMaker target) and ``predicted_lambda`` (3,008 MB from a Lambda target,
  with the validation's duration law), the validation's errors on the parent run.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.figure import Figure
from mlflow import MlflowClient

from bench import perfmodel as pm
from bench.hooks import BenchmarkHook, HookOutput, TargetSummary
from bench.perfmodel import Level
from bench.plot_style import FIGSIZE, finish, legend_outside, slo_line, target_colors
from bench.power_tune import configured_cpu
from bench.predict_check import CheckResult
from deployers.base import CostDrivers
from deployers.sagemaker.instances import instance_shape

PREDICTED_METRICS = {"predicted_latency_p50_ms": "p50_ms", "predicted_latency_p95_ms": "p95_ms",
                     "predicted_latency_mean_ms": "mean_ms",
                     "predicted_throughput_rps": "throughput_rps"}


def step_metrics(levels: Sequence[Level]) -> dict[str, list[tuple[float, float]]]:
    """``metric -> [(users, value)]`` of predicted levels."""
    return {name: [(float(lv.users), float(getattr(lv, attr))) for lv in levels]
            for name, attr in PREDICTED_METRICS.items()}


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
    legend_outside(thr, source=lat)
    return finish(fig, caption)


def _check_frame(result: CheckResult) -> pd.DataFrame:
    rows = []
    for h in result.held_out:
        for lv, p in h.pairs():
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
        measured = {s.name: (list(pm.levels_of(s.stats)), s.provenance) for s in summaries}
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


# -- predictions in every benchmark ------------------------------------------------------------

VALIDATION_EXPERIMENT = "predict-check"
PREDICTED_ONLY: tuple[tuple[str, str, int], ...] = (
    ("predicted-c5-xlarge", "ml.c5.xlarge", 1), ("predicted-c5-2xlarge", "ml.c5.2xlarge", 1),
    ("predicted-2x-c5-xlarge", "ml.c5.xlarge", 2))
"""Instance shapes this machine cannot hold, predicted from a measured SageMaker target."""
FORECAST_LEVELS = (1, 2, 4, 6, 8, 11, 16)


@dataclass(frozen=True)
class Validation:
    """The latest ``predict-check`` on this tracking server: its run and its error metrics."""

    run_id: str
    metrics: dict[str, float]

    @property
    def sigma(self) -> float:
        return self.metrics.get("prediction_scaling_sigma", 0.0)

    @property
    def throughput_error_pct(self) -> float | None:
        """The validated saturation throughput error, percent (None when not finite)."""
        err = self.metrics.get("prediction_mape_throughput")
        return err if err is not None and math.isfinite(err) else None


def latest_validation(client: MlflowClient | None = None,
                      experiment: str = VALIDATION_EXPERIMENT) -> Validation | None:
    """The newest finished ``predict-check`` parent run with its errors, or ``None`` (its
    children, one per shape, carry per-shape errors and are not the validation)."""
    client = client or MlflowClient()
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return None
    runs = client.search_runs([exp.experiment_id],
                              "attributes.status = 'FINISHED' and attributes.run_name = "
                              "'predict-check' and metrics.prediction_mape_latency >= 0",
                              order_by=["attributes.start_time DESC"], max_results=1)
    if not runs:
        return None
    return Validation(runs[0].info.run_id, {k: float(v) for k, v in runs[0].data.metrics.items()
                                            if k.startswith("prediction_")})


def _shape(s: TargetSummary) -> pm.Shape | None:
    """The measured target's shape: its CPUs, instances and scoring workers (as described;
    else one per vCPU on SageMaker, as its container runs, and one elsewhere)."""
    if s.description is None or s.description.cost.kind not in ("instance", "local"):
        return None
    cost, workers = s.description.cost, s.description.details.get("workers")
    count = cost.instance_count or 1
    if cost.instance_type:
        return sagemaker_shape(cost.instance_type, count, workers)
    if not cost.cpus:
        return None
    return pm.Shape(cost.cpus, int(workers) if isinstance(workers, int) else 1, count)


def sagemaker_shape(instance_type: str, count: int = 1, workers: object = None) -> pm.Shape:
    """An instance type's shape: its vCPUs, ``count`` instances, ``workers`` per instance (one
    per vCPU, the SageMaker deployer's default, when not an int)."""
    vcpus = instance_shape(instance_type).vcpus
    return pm.Shape(float(vcpus), workers if isinstance(workers, int) else vcpus, count)


def error_band(validation: Validation | None) -> str:
    """One sentence: the validated errors, or that there are none."""
    if validation is None:
        return "not validated on this tracking server: run `niser-mlops predict-check`"
    m = validation.metrics
    return (f"validated error on this machine: mean latency "
            f"{m.get('prediction_mape_latency', math.nan):.0f} %, p95 "
            f"{m.get('prediction_mape_p95', math.nan):.0f} %, throughput "
            f"{m.get('prediction_mape_throughput', math.nan):.0f} %")


def flat_curve(levels: Sequence[Level], users: Sequence[int]) -> list[Level]:
    """Each request its own environment: the 1-user figures at every count."""
    one = min(levels, key=lambda lv: lv.users)
    return [Level(n, one.mean_ms, one.p50_ms, one.p95_ms, 1000.0 * n / one.mean_ms)
            for n in users]


@dataclass(frozen=True)
class PredictedTarget:
    """A shape this machine cannot hold, predicted from the measured target ``source``."""

    name: str
    source: str
    drivers: CostDrivers
    levels: tuple[Level, ...]

    def at_saturation(self, slo_ms: float) -> Level | None:
        """The predicted level of highest throughput with p95 within ``slo_ms`` (None: none)."""
        good = [lv for lv in self.levels if lv.p95_ms <= slo_ms]
        return max(good, key=lambda lv: lv.throughput_rps) if good else None


def _sigma(validation: Validation | None) -> float:
    # Contention measured below one CPU can come out negative (a quota's bursts); carried to
    # 8 vCPUs it would promise superlinear scaling, so it is taken as at least 0.
    return max(0.0, validation.sigma) if validation is not None else 0.0


def predicted_targets(summaries: Sequence[TargetSummary], validation: Validation | None
                      ) -> list[PredictedTarget]:
    """``PREDICTED_ONLY`` from the first closed-loop SageMaker instance target that fits."""
    for s in summaries:
        shape, levels = _shape(s), pm.levels_of(s.stats)
        if (s.mode != "closed" or not levels or shape is None or s.description is None
                or not s.description.cost.instance_type):
            continue
        try:
            model = pm.fit_server([pm.Curve(shape, levels)], _sigma(validation))
        except ValueError:
            continue
        return [PredictedTarget(name, s.name, CostDrivers("instance", itype, count),
                                tuple(model.predict(sagemaker_shape(itype, count),
                                                    list(FORECAST_LEVELS))))
                for name, itype, count in PREDICTED_ONLY]
    return []


LAMBDA_PREDICTED_MB = 3008
"""The seed paper's Lambda size: 16 environments of it at once do not fit on this machine."""


def predicted_lambda(s: TargetSummary, validation: Validation | None,
                     memory_mb: int = LAMBDA_PREDICTED_MB) -> PredictedTarget | None:
    """``memory_mb`` predicted from a measured Lambda target with the duration law of the
    validation (``duration = a + b / share``): the measured warm duration times
    ``law(memory_mb) / law(measured)``, the rest of its 1-user latency (invoke overhead) kept,
    flat in concurrency (each request its own environment); None without a law or a duration."""
    m = validation.metrics if validation is not None else {}
    if ("prediction_lambda_a_ms" not in m or s.description is None
            or s.description.cost.kind != "lambda" or not s.description.cost.memory_mb):
        return None
    levels = pm.levels_of(s.stats)
    if not levels:
        return None

    def law(mb: int) -> float:
        return m["prediction_lambda_a_ms"] + m["prediction_lambda_b_ms"] / configured_cpu(mb)

    measured_mb = s.description.cost.memory_mb
    if not law(measured_mb) > 0 or not law(memory_mb) > 0:
        return None
    one = min(levels, key=lambda lv: lv.users)
    warm = s.metrics.get("lambda_duration_ms_mean", s.billed_ms(one.mean_ms))
    mean = one.mean_ms - warm + warm * law(memory_mb) / law(measured_mb)
    f = mean / one.mean_ms
    return PredictedTarget(f"predicted-lambda-{memory_mb}mb", s.name,
                           CostDrivers("lambda", memory_mb=memory_mb),
                           tuple(Level(n, mean, f * one.p50_ms, f * one.p95_ms, 1000.0 * n / mean)
                                 for n in FORECAST_LEVELS))


def forecast_hook(validation: Validation | None) -> BenchmarkHook:
    """Predicted curves beside the measured ones: every closed-loop target's own fit
    (``predicted_*`` step metrics), a Lambda target flat beyond the levels this machine holds,
    and instance shapes it cannot hold (``predicted_targets``); the validated errors of
    ``validation`` on the parent run."""

    def hook(summaries: list[TargetSummary], slo_ms: float, workdir: Path) -> HookOutput:
        out = HookOutput()
        measured: dict[str, tuple[Sequence[Level], str]] = {}
        predicted: dict[str, tuple[Sequence[Level], str]] = {}
        for s in summaries:
            levels = list(pm.levels_of(s.stats))
            if s.mode != "closed" or not levels:
                continue
            measured[s.name] = (levels, s.provenance)
            shape = _shape(s)
            if s.description is not None and s.description.cost.kind == "lambda":
                users = sorted({lv.users for lv in levels} | set(FORECAST_LEVELS))
                pred = flat_curve(levels, users)
            elif shape is not None:
                try:
                    model = pm.fit_server([pm.Curve(shape, tuple(levels))], _sigma(validation))
                except ValueError as exc:
                    out.note.append(f"{s.name}: not predicted ({exc}).")
                    continue
                pred = model.predict(shape, [lv.users for lv in levels])
            else:
                continue
            out.step_metrics[s.name] = step_metrics(pred)
            predicted[s.name] = (pred, "predicted")
        if not measured:
            return out
        forecasts = predicted_targets(summaries, validation)
        lam = next((t for s in summaries if (t := predicted_lambda(s, validation))), None)
        forecasts += [lam] if lam is not None else []
        predicted |= {t.name: (t.levels, "predicted") for t in forecasts}
        band = error_band(validation)
        out.figures["plots/predicted.png"] = plot_predictions(measured, predicted, slo_ms, (
            "Solid: measured; dashed: predicted by the performance model (bench.perfmodel) from "
            f"that target's measurements; {band}. Instance shapes this machine cannot hold are "
            "predicted from the SageMaker target, one AWS vCPU counted as one core of the "
            "stand-in (its shape takes vCPUs as cores), from a plateau this machine's load "
            "generator shared: conservative."))
        if forecasts:
            out.tables["predicted_targets.json"] = pd.DataFrame([
                {"target": t.name, "source": t.source, "users": lv.users, "p50_ms": lv.p50_ms,
                 "p95_ms": lv.p95_ms, "throughput_rps": lv.throughput_rps,
                 "provenance": "predicted"} for t in forecasts for lv in t.levels])
        if validation is not None:
            out.parent_metrics |= validation.metrics
            out.parent_tags["prediction.validation_run"] = validation.run_id
        else:
            out.parent_tags["prediction.validation_run"] = "none"
        out.note.append(f"Predicted curves (`predicted`, plot *predicted.png*): {band}. "
                        "ml.g4dn.xlarge is not predicted: nothing measured on a GPU to carry.")
        if lam is not None and validation is not None:
            share, m = configured_cpu(LAMBDA_PREDICTED_MB), validation.metrics
            beyond = not (m.get("prediction_lambda_share_lo", 0.0) - 1e-9 <= share
                          <= m.get("prediction_lambda_share_hi", math.inf) + 1e-9)
            out.note.append(f"{lam.name}: from {lam.source} with the check's Lambda duration "
                            "law" + (" (extrapolated beyond the CPU shares it was fitted on)"
                                     if beyond else "") + f", flat to {max(FORECAST_LEVELS)} "
                            "concurrent environments.")
        return out

    return hook
