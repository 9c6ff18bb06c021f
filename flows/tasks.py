"""Prefect tasks: each one line over niser/, deployers/ or bench/. Retries only where I/O can fail.

MLflow's active run is thread-local, and Prefect may run a task in another thread, so every task
that logs gets the run id explicitly and logs through ``MlflowClient`` or reopens the run.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import mlflow
from mlflow import MlflowClient
from prefect import task
from prefect.cache_policies import NO_CACHE

from bench.load_settings import LoadSettings
from bench.payloads import Payloads
from bench.recommend import Workload
from bench.report import BenchmarkRun, default_hooks, log_benchmark
from bench.report_recommend import recommend_hook
from bench.targets import TargetOutcome, TargetSpec, benchmark_target
from niser.data import SessionData
from niser.inference import Recommender
from niser.raw import load_dataset
from niser.registry import Registration, log_recommender, log_training, register
from niser.train import TrainConfig, TrainResult, train


@task(cache_policy=NO_CACHE)
def load_data(dataset: str) -> SessionData:
    """Load and preprocess the dataset (``synthetic``, a preprocessed folder or a raw log)."""
    return load_dataset(dataset)


@task(cache_policy=NO_CACHE)
def train_model(data: SessionData, config: TrainConfig, run_id: str) -> TrainResult:
    """Train and evaluate NISER; log config, per-epoch metrics, dataset and vocabulary."""
    result = train(data, config, progress=False)
    log_training(result, data, config, run_id=run_id)
    return result


@task(retries=2, retry_delay_seconds=5, cache_policy=NO_CACHE)
def log_model(result: TrainResult, data: SessionData, run_id: str) -> str:
    """Log the serving pyfunc into the run; returns its model URI."""
    rec = Recommender.from_training(result.model, result.config, data)
    with _in_run(run_id):
        info = log_recommender(rec, data.summary(), result.final)
    return info.model_uri


@contextlib.contextmanager
def _in_run(run_id: str) -> Iterator[None]:
    """Make ``run_id`` the active run in this thread (it already is when the task runs inline)."""
    active = mlflow.active_run()
    if active is not None and active.info.run_id == run_id:
        yield
        return
    with mlflow.start_run(run_id=run_id, nested=active is not None):
        yield


@task(retries=2, retry_delay_seconds=5, cache_policy=NO_CACHE)
def register_model(model_uri: str) -> Registration:
    """Register as ``niser``; ``champion`` moves only when the new version is better."""
    return register(model_uri)


@task(cache_policy=NO_CACHE)
def benchmark(spec: TargetSpec, model_uri: str, data: SessionData, levels: list[int],
              load: LoadSettings, budget_s: float) -> TargetOutcome:
    """Deploy one target, time its cold start, sweep the concurrency levels, tear it down."""
    payloads = Payloads.from_samples(data.test, data.vocab, batch_size=1, seed=0)
    return benchmark_target(spec, model_uri, payloads, levels, load, budget_s)


@task(retries=1, retry_delay_seconds=5, cache_policy=NO_CACHE)
def log_benchmarks(outcomes: list[TargetOutcome], slo_ms: float, workload: Workload, run_id: str,
                   experiment: str, flow_run_id: str) -> BenchmarkRun | None:
    """One benchmark run nested under the training run, a child per measured target, with cost,
    break-even and the cheapest deployment for ``workload``."""
    client = MlflowClient()
    for o in outcomes:
        if o.error:
            client.set_tag(run_id, f"benchmark.failed.{o.spec.name}", o.error[:4000])
    runs = [o.run for o in outcomes if o.run is not None]
    if not runs:
        return None
    return log_benchmark(runs, slo_ms, experiment_name=experiment, nest_under=run_id,
                         hooks=[*default_hooks(), recommend_hook(workload)],
                         tags={"prefect.flow_run_id": flow_run_id}, client=client)


def summary_rows(outcomes: list[TargetOutcome], slo_ms: float) -> list[dict[str, Any]]:
    """One row per target for the flow's printed summary."""
    rows: list[dict[str, Any]] = []
    for o in outcomes:
        if o.run is None:
            rows.append({"target": o.spec.name, "status": f"FAILED: {o.error}"})
            continue
        stats = o.run.sweep.stats()
        best = [s for s in stats if s.ok and s.p95_ms <= slo_ms]
        rows.append({
            "target": o.spec.name,
            "status": "ok",
            "provenance": o.run.provenance,
            "shaping": o.run.shaping,
            "cpu@max": _cpu_at_last_level(o),
            "p50_ms@1": round(stats[0].p50_ms, 2) if stats else None,
            "p95_ms@max": round(stats[-1].p95_ms, 2) if stats else None,
            "max_rps": round(max(s.throughput_rps for s in stats), 1) if stats else None,
            "rps_within_slo": round(max(s.throughput_rps for s in best), 1) if best else 0.0,
            "errors": int(sum(s.errors + s.timeouts for s in stats)),
            "cold_start_s": round(o.run.cold_start_s, 3) if o.run.cold_start_s else None,
            "note": o.run.notes.get("capacity_limit", ""),
        })
    return rows


def _cpu_at_last_level(o: TargetOutcome) -> str | None:
    """CPU the shaped stand-in used at the last level, over its quota ("0.50/0.50")."""
    usage = o.run.sweep.levels[-1].usage if o.run and o.run.sweep.levels else None
    if usage is None:
        return None
    quota = usage.quota_total
    return f"{usage.cpu_share:.2f}" + ("" if quota is None else f"/{quota:.2f}")
