"""``train-and-benchmark``: load data -> train -> evaluate -> register -> deploy -> benchmark -> log."""

from __future__ import annotations

import os
from typing import Any, Literal

import mlflow
from prefect import flow, get_run_logger
from prefect.artifacts import create_link_artifact, create_table_artifact
from prefect.runtime import flow_run
from prefect.settings import PREFECT_UI_URL

from bench.fanout import run_parallel, schedule
from bench.load_settings import DEFAULT_LEVELS, LoadSettings
from bench.recommend import Workload
from bench.rounding import fmt
from bench.stale_runs import process_tags
from bench.targets import TargetSpec, validate_targets
from bench.tracking import check_tracking_server
from deployers.sagemaker.training import TrainingSettings
from flows import tasks
from flows.parameters import (
    EpochCount,
    Fraction,
    Levels,
    ParallelTargets,
    Positive,
    Rate,
    WarmupSeconds,
    WindowSeconds,
    check_run,
    train_config,
    training_settings,
)
from niser.train import TrainConfig

# The seed paper's platforms, all runnable on one machine: the on-premise server with one and two
# instances, SageMaker (control plane: AWS or the local moto server; inference through the
# SageMaker runtime API onto a real scoring server) and Lambda (the real package on the local
# Lambda runtime). With the local stand-ins each is shaped like its target (cgroups: the
# instance's vCPUs and memory; per Lambda environment memory_mb / 1,769 vCPU and memory_mb), so
# the shapes are ones this 2-core machine can hold: ml.c5.large (2 vCPU) and 1,024 MB Lambda
# environments (0.58 vCPU each, three at once). The local server runs its default: a worker per
# core with one torch thread each and the model's batching on, measured best of the one-instance
# setups (BENCHMARKS.md, "Serving throughput"). Override with the ``targets`` parameter.
DEFAULT_TARGETS: list[TargetSpec] = [
    TargetSpec(name="local-1x2", deployer="local", settings={"instances": 1}),
    TargetSpec(name="local-2x1", deployer="local",
               settings={"instances": 2, "workers": 1, "torch_threads": 1}),
    TargetSpec(name="sagemaker-c5-large", deployer="sagemaker",
               settings={"instance_type": "ml.c5.large", "instance_count": 1}),
    TargetSpec(name="lambda-1024mb", deployer="lambda", settings={"memory_mb": 1024}),
]


def _start_run(experiment: str, run_name: str | None) -> mlflow.ActiveRun:
    tags = {"prefect.flow_run_id": str(flow_run.id or ""), "prefect.flow": "train-and-benchmark",
            **process_tags()}  # so that `niser-mlops sweep` can end it if this process dies
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
    epochs: EpochCount = 3,
    hyperparameters: TrainConfig | None = None,
    targets: list[TargetSpec] | None = None,
    levels: Levels | None = None,
    slo_ms: Positive = 50.0,
    request_rate_rps: Rate = 20.0,
    burst_rps: Rate = 0.0,
    burst_fraction: Fraction = 0.0,
    level_seconds: WindowSeconds = 3.0,
    warmup_seconds: WarmupSeconds = 1.0,
    experiment: str = "niser",
    run_name: str | None = None,
    max_parallel_targets: ParallelTargets = 4,
    train_on: Literal["local", "sagemaker"] = "local",
    training: TrainingSettings | None = None,
) -> dict[str, Any]:
    """Train NISER on ``dataset``, register it, benchmark it on every target, log it all.

    ``hyperparameters`` are ``TrainConfig`` fields (e.g. ``{"lr": 0.001, "dim": 64}``; its
    ``epochs``, when given, wins over ``epochs``); ``targets`` a list of ``TargetSpec``
    (``{"name", "deployer", "settings"}``; ``[]`` trains and registers only); ``levels`` the
    closed-loop user counts; ``slo_ms`` the p95 latency target;
    ``request_rate_rps`` (plus ``burst_rps`` for ``burst_fraction`` of the time) the load for
    which the cheapest deployment is recommended; ``max_parallel_targets`` how many targets
    are benchmarked at once when all are real AWS endpoints (local ones always run one after
    the other: ``bench.fanout``). Every number is finite and bounded (README, "Bounds"); the
    targets' settings, the dataset's synthetic options and the compared metric are checked
    before anything is created or trained. ``train_on="sagemaker"`` trains in a SageMaker training job
    (``training``: ``TrainingSettings`` fields such as ``{"instance_type": "ml.c5.xlarge",
    "spot": true}``) that logs and registers into the same run; the rest is unchanged.
    """
    config = train_config(hyperparameters, epochs=epochs)
    check_run(dataset, config)
    logger = get_run_logger()
    job_settings = training_settings(train_on, training)
    check_tracking_server()  # seconds, not minutes of retries, when it is down
    specs = validate_targets(DEFAULT_TARGETS if targets is None else targets)
    load = LoadSettings(warmup_s=warmup_seconds, duration_s=level_seconds)
    workload = Workload(base_rps=request_rate_rps, burst_rps=burst_rps,
                        burst_fraction=burst_fraction, p95_slo_ms=slo_ms)
    lv = levels or DEFAULT_LEVELS
    budget = load.sweep_budget_s(lv)
    plan = schedule([(s.name, s.deployer) for s in specs], max_parallel_targets)
    with _start_run(experiment, run_name) as run:
        run_id, experiment_id = run.info.run_id, run.info.experiment_id
        flow_run_id = run.data.tags["prefect.flow_run_id"]
        data = tasks.load_data(dataset)
        if job_settings is not None:
            job = tasks.train_on_sagemaker(data, config, job_settings, run_id)
            metrics, registration = job.metrics, job.registration
        else:
            result = tasks.train_model(data, config, run_id)
            registration = tasks.register_model(tasks.log_model(result, data, run_id))
            metrics = result.final
        logger.info("registered niser version %s as %s (%s)", registration.version,
                    registration.alias, registration.reason)
        if specs:
            logger.info(plan.line())
            mlflow.set_tag("benchmark.schedule", plan.line())
        if plan.parallel:
            outcomes = run_parallel(specs, lambda spec, stop: tasks.benchmark.submit(
                spec, registration.model_uri, data, lv, load, budget, stop), plan.at_once)
        else:
            outcomes = [tasks.benchmark(spec, registration.model_uri, data, lv, load, budget)
                        for spec in specs]
        bench_run = (tasks.log_benchmarks(outcomes, slo_ms, workload, run_id,
                                          _experiment_name(experiment, experiment_id),
                                          flow_run_id, plan.line())
                     if specs else None)
        if bench_run is not None:
            tasks.link_model(registration, bench_run)
    rows = tasks.summary_rows(outcomes, slo_ms, bench_run)
    recommendation = bench_run.parent_tags.get("recommendation") if bench_run else None
    links = {"mlflow": tasks.mlflow_url(experiment_id, bench_run.parent_run_id if bench_run
                                        else run_id),
             "prefect": _prefect_url(flow_run_id)}
    if links["mlflow"]:
        create_link_artifact(
            key="mlflow-run", link=links["mlflow"],
            link_text="benchmark run in MLflow" if bench_run else "training run in MLflow",
            description="The benchmark run: recommendation, ranked options, chart links"
            if bench_run else f"MLflow run {run_id}")
    recommended = bool(bench_run and "recommendation.provenance" in bench_run.parent_tags)
    if rows:
        create_table_artifact(key="benchmark-summary", table=rows, description=_table_description(
            recommendation, recommended, slo_ms, links))
    summary = {"mlflow_run_id": run_id, "model_version": registration.version,
               "alias": registration.alias, "alias_reason": registration.reason,
               "metrics": metrics, "targets": rows, "slo_ms": slo_ms,
               "workload_rps": workload.mean_rps,
               "benchmark_run_id": bench_run.parent_run_id if bench_run else None,
               "recommendation": recommendation, "recommended": recommended, "links": links,
               "predicted": bench_run.parent_tags.get("recommendation.predicted")
               if bench_run else None,
               "paper_claims": bench_run.parent_tags.get("paper.claims") if bench_run else None,
               "schedule": plan.line() if specs else None}
    print(format_summary(summary))
    failed = [r["target"] for r in rows if r["status"] != "ok"]
    if failed:
        raise RuntimeError(f"targets failed: {failed}; see the MLflow run {run_id} tags "
                           "benchmark.failed.<target> for each error")
    return summary


def _prefect_url(flow_run_id: str) -> str | None:
    """The flow run's page in the Prefect UI, when the flow runs against a lasting server."""
    api = os.environ.get("PREFECT_API_URL") or ""
    if not flow_run_id or not api.startswith("http"):
        return None
    ui = PREFECT_UI_URL.value() or api.rstrip("/").removesuffix("/api")
    return f"{ui.rstrip('/')}/runs/flow-run/{flow_run_id}"


def _table_description(recommendation: str | None, recommended: bool, slo_ms: float,
                       links: dict[str, str | None]) -> str:
    """The table artifact's caption: the recommendation first, then the MLflow link."""
    if recommendation:
        text = f"**{'Recommended' if recommended else 'Nothing recommended'}:** {recommendation}"
    else:
        text = f"p95 SLO {slo_ms:g} ms; nothing recommended"
    if links.get("mlflow"):
        text += f"  \n[Benchmark run in MLflow]({links['mlflow']})"
    return text


def _with(value: float | None, before: str = "", after: str = "") -> str:
    return "-" if value is None else f"{before}{fmt(value)}{after}"


def _row(row: dict[str, Any], slo_ms: float) -> str:
    if row["status"] != "ok":
        return f"{row['target']:<20} {row['status'][:150]}"
    p95 = (f"{fmt(row['p95_ms_at_slo_level'])} ms @ {row['slo_level']}"
           if row.get("p95_ms_at_slo_level") is not None else f"none <= {slo_ms:g} ms")
    shaping = "" if row.get("shaping") in (None, "", "none") else f" ({row['shaping']})"
    return (f"{row['target']:<20} {_with(row.get('p50_ms_at_1'), after=' ms'):>9} {p95:>15} "
            f"{_with(row.get('saturation_rps'), after=' req/s'):>12} "
            f"{_with(row.get('cost_per_1m_usd_at_saturation'), before='$'):>10} "
            f"{_with(row.get('cost_per_1m_usd_at_workload'), before='$'):>10}  "
            f"{row.get('provenance', '')}{shaping}")


def format_summary(summary: dict[str, Any]) -> str:
    """What a person reads in ten seconds at the end of a run: the model, a line per target,
    the recommendation with its cost, and the deep links into MLflow and Prefect."""
    m = summary["metrics"]
    lines = [f"niser v{summary['model_version']} ({summary['alias']}): "
             f"Recall@20 {m.get('recall_20', float('nan')):.1f} %, "
             f"MRR@20 {m.get('mrr_20', float('nan')):.1f} %"]
    rows = summary["targets"]
    slo = float(summary.get("slo_ms", 50.0))
    if rows:
        rate = fmt(summary.get("workload_rps"))
        lines.append(f"{'target':<20} {'p50 @1':>9} {'p95 @SLO level':>15} {'saturation':>12} "
                     f"{'$/1M sat.':>10} {'$/1M @' + rate + '/s':>10}  provenance")
        lines += [_row(r, slo) for r in rows]
        lines += [f"  {r['target']}: {r['errors']} requests failed or timed out"
                  for r in rows if r.get("errors")]
        lines += [f"  {r['target']}: {r['note']}" for r in rows if r.get("note")]
    if summary.get("schedule"):
        lines.append(str(summary["schedule"]))
    if summary.get("predicted"):
        lines.append(f"Predicted, not measured: {summary['predicted']}")
    if summary.get("paper_claims"):
        lines.append(f"Seed paper's claims: {summary['paper_claims']} (paper/ in the MLflow run)")
    if summary.get("recommendation"):
        lines.append(f"{'Recommended' if summary.get('recommended', True) else 'Nothing recommended'}"
                     f": {summary['recommendation']}")
    links = summary.get("links") or {}
    if links.get("mlflow"):
        lines.append(f"MLflow:  {links['mlflow']}")
    if links.get("prefect"):
        lines.append(f"Prefect: {links['prefect']}")
    return "\n".join(lines)
