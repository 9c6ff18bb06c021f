"""Prefect tasks: each one line over niser/, deployers/ or bench/. Retries only where I/O can fail.

MLflow's active run is thread-local, and Prefect may run a task in another thread, so every task
that logs gets the run id explicitly and logs through ``MlflowClient`` or reopens the run.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow
from mlflow import MlflowClient
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from bench.links import run_url, ui_base
from bench.load_settings import LoadSettings
from bench.paper import paper_hook
from bench.payloads import Payloads
from bench.recommend import Workload
from bench.report import BenchmarkRun, default_hooks, log_benchmark, summarize_target
from bench.report_note import slo_level
from bench.report_predict import forecast_hook, latest_validation
from bench.report_recommend import recommend_hook
from bench.rounding import fmt, round_metric
from bench.targets import TargetOutcome, TargetSpec, benchmark_target
from deployers.sagemaker.training import TrainingSettings
from flows.train_job import JobTraining, run_training_job
from niser.data import SessionData
from niser.inference import Recommender
from niser.raw import load_dataset
from niser.registry import Registration, link_benchmark, log_recommender, log_training, register
from niser.train import EpochResult, TrainConfig, TrainResult, train


@task(cache_policy=NO_CACHE)
def load_data(dataset: str) -> SessionData:
    """Load and preprocess the dataset (``synthetic``, a preprocessed folder or a raw log)."""
    return load_dataset(dataset)


@task(cache_policy=NO_CACHE)
def train_model(data: SessionData, config: TrainConfig, run_id: str) -> TrainResult:
    """Train and evaluate NISER; log config, per-epoch metrics, dataset and vocabulary. Logs one
    line per epoch."""
    logger = get_run_logger()

    def epoch_line(e: EpochResult) -> None:
        logger.info("epoch %d/%d: loss %.4g, val Recall@20 %.2f, MRR@20 %.2f (%.1f s)", e.epoch,
                    config.epochs, e.loss, e.validation.get("recall_20", float("nan")),
                    e.validation.get("mrr_20", float("nan")), e.train_seconds + e.eval_seconds)

    result = train(data, config, on_epoch=epoch_line, progress=False)
    log_training(result, data, config, run_id=run_id)
    return result


@task(cache_policy=NO_CACHE)
def train_on_sagemaker(data: SessionData, config: TrainConfig, settings: TrainingSettings,
                       run_id: str) -> JobTraining:
    """Train in a SageMaker training job that logs into ``run_id`` and registers the model
    (``flows.train_job``); its log lines go to the Prefect logs."""
    logger = get_run_logger()
    job = run_training_job(data, config, settings, run_id, lambda line: logger.info("%s", line))
    result = job.outcome.result or {}
    if not result.get("registration"):
        raise RuntimeError(f"SageMaker training job {job.outcome.name} registered no model")
    return JobTraining(job.outcome.name, job.metrics, str(result["model_uri"]),
                       Registration(**result["registration"]))


@task(retries=2, retry_delay_seconds=5, cache_policy=NO_CACHE)
def log_model(result: TrainResult, data: SessionData, run_id: str) -> str:
    """Log the serving pyfunc into the run; returns its model URI. The model is saved to
    ``kept_model_dir(run_id)`` first and removed from there once logged, so a tracking server
    that stays down loses nothing: the error names the folder (``Recommender.load`` reads it)."""
    rec = Recommender.from_training(result.model, result.config, data)
    kept = kept_model_dir(run_id)
    rec.save(kept)
    try:
        with _in_run(run_id):
            info = log_recommender(rec, data.summary(), result.final)
    except Exception as exc:
        raise RuntimeError(f"logging the model into run {run_id} failed ({type(exc).__name__}: "
                           f"{exc}); the trained model is kept in {kept} (Recommender.load "
                           "reads it)") from exc
    shutil.rmtree(kept, ignore_errors=True)
    return info.model_uri


def kept_model_dir(run_id: str) -> Path:
    """Where a trained model waits until it is logged: ``$NISER_STATE_DIR`` (default
    ``.state``) ``/models/<run id>``."""
    if not run_id.isalnum():
        raise ValueError(f"run id {run_id!r} is not a run id")
    return Path(os.environ.get("NISER_STATE_DIR") or ".state").resolve() / "models" / run_id


@task(cache_policy=NO_CACHE)
def log_kept_model(source_run_id: str, artifact: str, data_summary: dict[str, Any],
                   metrics: dict[str, float], run_id: str) -> str:
    """Log the ``Recommender`` saved as ``artifact`` of run ``source_run_id`` (an HPO trial) as
    the serving pyfunc of ``run_id``; returns its model URI."""
    with tempfile.TemporaryDirectory() as tmp:
        path = mlflow.artifacts.download_artifacts(run_id=source_run_id, artifact_path=artifact,
                                                   dst_path=tmp)
        rec = Recommender.load(path)
        with _in_run(run_id):
            return log_recommender(rec, data_summary, metrics).model_uri


class _ToRunLogger(logging.Handler):
    """Passes records logged in one thread on to a Prefect run logger."""

    def __init__(self, run_logger: Any, thread: int) -> None:
        super().__init__(logging.INFO)
        self.run_logger, self.thread = run_logger, thread

    def emit(self, record: logging.LogRecord) -> None:
        if record.thread == self.thread:
            self.run_logger.log(record.levelno, record.getMessage())


@contextlib.contextmanager
def _forwarded(name: str, run_logger: Any) -> Iterator[None]:
    """Logger ``name``'s INFO and above, from this thread, also in the Prefect run's logs."""
    target = logging.getLogger(name)
    handler, level = _ToRunLogger(run_logger, threading.get_ident()), target.level
    target.addHandler(handler)
    if target.getEffectiveLevel() > logging.INFO:
        target.setLevel(logging.INFO)
    try:
        yield
    finally:
        target.removeHandler(handler)
        target.setLevel(level)


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


@task(cache_policy=NO_CACHE, task_run_name="benchmark-{spec.name}")
def benchmark(spec: TargetSpec, model_uri: str, data: SessionData, levels: list[int],
              load: LoadSettings, budget_s: float,
              stop: threading.Event | None = None) -> TargetOutcome:
    """Deploy one target, time its cold start, sweep the concurrency levels, tear it down; one
    line when it starts, one per level (``bench.sweep``), one when it is done. ``stop``: see
    ``bench.fanout``."""
    logger = get_run_logger()
    logger.info("%s: deploying (%s), then %s concurrent users, %g s each", spec.name,
                spec.deployer, ", ".join(map(str, levels)), load.duration_s)
    payloads = Payloads.from_samples(data.test, data.vocab, batch_size=1, seed=0)
    with _forwarded("bench", logger):  # the sweep's line per level
        outcome = benchmark_target(spec, model_uri, payloads, levels, load, budget_s, stop=stop)
    if outcome.run is None:
        logger.error("%s failed: %s", spec.name, outcome.error)
    else:
        stats = outcome.run.sweep.stats()
        logger.info("%s done: %d levels, %d requests, cold start %s s", spec.name, len(stats),
                    sum(s.count for s in stats), fmt(outcome.run.cold_start_s))
    return outcome


@task(retries=1, retry_delay_seconds=5, cache_policy=NO_CACHE)
def log_benchmarks(outcomes: list[TargetOutcome], slo_ms: float, workload: Workload, run_id: str,
                   experiment: str, flow_run_id: str, schedule: str = "") -> BenchmarkRun | None:
    """One benchmark run nested under the training run, a child per measured target, with cost,
    break-even, the cheapest deployment for ``workload`` and predicted curves (with the errors
    of the latest ``predict-check`` on this tracking server)."""
    client = MlflowClient()
    for o in outcomes:
        if o.error:
            client.set_tag(run_id, f"benchmark.failed.{o.spec.name}", o.error[:4000])
    runs = [o.run for o in outcomes if o.run is not None]
    if not runs:
        return None
    validation = latest_validation(client)
    return log_benchmark(runs, slo_ms, experiment_name=experiment, nest_under=run_id,
                         hooks=[recommend_hook(workload, validation=validation),
                                forecast_hook(validation), paper_hook(validation),
                                *default_hooks(workload.mean_rps, validation)],
                         tags={"prefect.flow_run_id": flow_run_id,
                               **({"benchmark.schedule": schedule} if schedule else {})},
                         client=client)


def mlflow_url(experiment_id: str, run_id: str) -> str | None:
    """The run's page in MLflow's classic view, when the tracking store is a server with a UI."""
    base = ui_base(mlflow.get_tracking_uri())
    return run_url(base, experiment_id, run_id) if base else None


@task(retries=2, retry_delay_seconds=5, cache_policy=NO_CACHE)
def link_model(registration: Registration, bench: BenchmarkRun) -> dict[str, str]:
    """Tag the registered version with its benchmark run, that run's link and recommendation."""
    return link_benchmark(registration.version, bench.parent_run_id,
                          bench.parent_tags.get("recommendation"),
                          mlflow_url(bench.experiment_id, bench.parent_run_id),
                          name=registration.name)


def summary_rows(outcomes: list[TargetOutcome], slo_ms: float,
                 bench: BenchmarkRun | None = None) -> list[dict[str, Any]]:
    """One row per target for the flow's summary and the ``benchmark-summary`` table: p50 at
    the first level, p95 and level where it saturated under the SLO, saturation throughput,
    cost per 1M at saturation and at the workload (when priced), provenance, shaping."""
    rows: list[dict[str, Any]] = []
    costs = bench.target_metrics if bench else {}
    for o in outcomes:
        if o.run is None:
            rows.append({"target": o.spec.name, "status": f"FAILED: {o.error}"})
            continue
        s = summarize_target(o.run, slo_ms)
        at = slo_level(s)
        m = costs.get(o.spec.name, {})
        stats = s.stats
        rows.append({
            "target": o.spec.name,
            "status": "ok",
            "p50_ms_at_1": round_metric("p50_ms", stats[0].p50_ms) if stats else None,
            "p95_ms_at_slo_level": round_metric("p95_ms", at[1]) if at else None,
            "slo_level": int(at[0]) if at else None,
            "saturation_rps": round_metric("saturation_rps", s.saturation_rps)
            if s.saturation_rps else None,
            "cost_per_1m_usd_at_saturation": m.get("cost_per_1m_usd_at_saturation"),
            "cost_per_1m_usd_at_workload": m.get("cost_per_1m_usd_at_workload"),
            "provenance": o.run.provenance,
            "shaping": o.run.shaping,
            "cpu_at_last_level": _cpu_at_last_level(o),
            "errors": int(sum(st.errors + st.timeouts for st in stats)),
            "cold_start_s": round_metric("cold_start_s", o.run.cold_start_s)
            if o.run.cold_start_s else None,
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
