"""``train-and-benchmark``: load data -> train -> evaluate -> register -> deploy -> benchmark -> log."""

from __future__ import annotations

import os
from typing import Any

import mlflow
from prefect import flow, get_run_logger
from prefect.artifacts import create_link_artifact, create_table_artifact
from prefect.runtime import flow_run

from bench.load_settings import DEFAULT_LEVELS, LoadSettings
from bench.recommend import Workload
from bench.targets import TargetSpec, validate_targets
from flows import tasks
from flows.parameters import Count, Levels, Positive, train_config
from niser.train import TrainConfig

# The seed paper's platforms, all runnable on one machine: the on-premise server with one and two
# instances, SageMaker (control plane: AWS or the local moto server; inference through the
# SageMaker runtime API onto a real scoring server) and Lambda (the real package on the local
# Lambda runtime). With the local stand-ins each is shaped like its target (cgroups: the
# instance's vCPUs and memory; per Lambda environment memory_mb / 1,769 vCPU and memory_mb), so
# the shapes are ones this 2-core machine can hold: ml.c5.large (2 vCPU) and 1,024 MB Lambda
# environments (0.58 vCPU each, three at once). Override with the ``targets`` parameter.
DEFAULT_TARGETS: list[TargetSpec] = [
    TargetSpec(name="local-1x2", deployer="local",
               settings={"instances": 1, "workers": 1, "torch_threads": 2}),
    TargetSpec(name="local-2x1", deployer="local",
               settings={"instances": 2, "workers": 1, "torch_threads": 1}),
    TargetSpec(name="sagemaker-c5-large", deployer="sagemaker",
               settings={"instance_type": "ml.c5.large", "instance_count": 1}),
    TargetSpec(name="lambda-1024mb", deployer="lambda", settings={"memory_mb": 1024}),
]


def _start_run(experiment: str, run_name: str | None) -> mlflow.ActiveRun:
    tags = {"prefect.flow_run_id": str(flow_run.id or ""), "prefect.flow": "train-and-benchmark"}
    if os.environ.get("MLFLOW_RUN_ID"):  # inside `mlflow run`: log into the run it created
        return mlflow.start_run(tags=tags, log_system_metrics=True)
    mlflow.set_experiment(experiment)
    return mlflow.start_run(run_name=run_name, tags=tags, log_system_metrics=True)


def _experiment_name(experiment: str, experiment_id: str) -> str:
    """``experiment``, unless ``mlflow run`` created the run (then the experiment it chose)."""
    if os.environ.get("MLFLOW_RUN_ID"):
        return mlflow.get_experiment(experiment_id).name
    return experiment


@flow(name="train-and-benchmark", log_prints=True)
def train_and_benchmark(
    dataset: str = "synthetic",
    epochs: Count = 3,
    hyperparameters: TrainConfig | None = None,
    targets: list[TargetSpec] | None = None,
    levels: Levels | None = None,
    slo_ms: Positive = 50.0,
    request_rate_rps: float = 20.0,
    burst_rps: float = 0.0,
    burst_fraction: float = 0.0,
    level_seconds: float = 3.0,
    warmup_seconds: float = 1.0,
    experiment: str = "niser",
    run_name: str | None = None,
) -> dict[str, Any]:
    """Train NISER on ``dataset``, register it, benchmark it on every target, log it all.

    ``hyperparameters`` are ``TrainConfig`` fields (e.g. ``{"lr": 0.001, "dim": 64}``; its
    ``epochs``, when given, wins over ``epochs``); ``targets`` a list of ``TargetSpec``
    (``{"name", "deployer", "settings"}``; ``[]`` trains and registers only); ``levels`` the
    closed-loop user counts; ``slo_ms`` the p95 latency target;
    ``request_rate_rps`` (plus ``burst_rps`` for ``burst_fraction`` of the time) the load for
    which the cheapest deployment is recommended.
    """
    logger = get_run_logger()
    config = train_config(hyperparameters, epochs=epochs)
    specs = validate_targets(DEFAULT_TARGETS if targets is None else targets)
    load = LoadSettings(warmup_s=warmup_seconds, duration_s=level_seconds)
    workload = Workload(base_rps=request_rate_rps, burst_rps=burst_rps,
                        burst_fraction=burst_fraction, p95_slo_ms=slo_ms)
    lv = levels or DEFAULT_LEVELS
    budget = load.sweep_budget_s(lv)
    with _start_run(experiment, run_name) as run:
        run_id, experiment_id = run.info.run_id, run.info.experiment_id
        flow_run_id = run.data.tags["prefect.flow_run_id"]
        create_link_artifact(key="mlflow-run", link=_run_url(experiment_id, run_id),
                             description=f"MLflow run {run_id}")
        data = tasks.load_data(dataset)
        result = tasks.train_model(data, config, run_id)
        model_uri = tasks.log_model(result, data, run_id)
        registration = tasks.register_model(model_uri)
        logger.info("registered niser version %s as %s (%s)", registration.version,
                    registration.alias, registration.reason)
        outcomes = [tasks.benchmark(spec, registration.model_uri, data, lv, load, budget)
                    for spec in specs]
        bench_run = (tasks.log_benchmarks(outcomes, slo_ms, workload, run_id,
                                          _experiment_name(experiment, experiment_id),
                                          flow_run_id)
                     if specs else None)
    rows = tasks.summary_rows(outcomes, slo_ms)
    if rows:
        create_table_artifact(key="benchmark-summary", table=rows,
                              description=f"p95 SLO {slo_ms} ms")
    summary = {"mlflow_run_id": run_id, "model_version": registration.version,
               "alias": registration.alias, "metrics": result.final, "targets": rows,
               "benchmark_run_id": bench_run.parent_run_id if bench_run else None,
               "recommendation": bench_run.parent_tags.get("recommendation")
               if bench_run else None}
    print(format_summary(summary))
    failed = [r["target"] for r in rows if r["status"] != "ok"]
    if failed:
        raise RuntimeError(f"targets failed: {failed}; see the MLflow run {run_id} tags "
                           "benchmark.failed.<target> for each error")
    return summary


def _run_url(experiment_id: str, run_id: str) -> str:
    uri = mlflow.get_tracking_uri()
    if uri.startswith("http"):
        return f"{uri.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"
    return f"{uri} (experiment {experiment_id}, run {run_id})"


def format_summary(summary: dict[str, Any]) -> str:
    """The table printed at the end of a run."""
    m = summary["metrics"]
    lines = [f"niser v{summary['model_version']} ({summary['alias']}): "
             f"Recall@20 {m.get('recall_20', float('nan')):.2f}  "
             f"MRR@20 {m.get('mrr_20', float('nan')):.2f}   MLflow run {summary['mlflow_run_id']}"]
    cols = ["target", "status", "provenance", "shaping", "cpu@max", "p50_ms@1", "p95_ms@max",
            "max_rps", "rps_within_slo", "errors", "cold_start_s"]
    if summary.get("recommendation"):
        lines.append(f"cheapest deployment for the workload: {summary['recommendation']}")
    if summary["targets"]:
        lines.append("  ".join(f"{c:>14}" for c in cols))
        for row in summary["targets"]:
            lines.append("  ".join(f"{row.get(c, '')!s:>14}"[:60] for c in cols))
        lines += [f"{row['target']}: {row['note']}" for row in summary["targets"]
                  if row.get("note")]
    return "\n".join(lines)
