"""Training in a SageMaker training job, for ``train-and-benchmark`` and ``hpo`` trials: the
dataset and source prepared here, the job run by ``deployers.sagemaker.training`` with NISER's
entry point (``niser.sagemaker_entry``), its cost priced by ``bench``, logged on the run.

The job reaches this process's MLflow server with this process's client settings (``JOB_MLFLOW_VARS``,
credentials included): they go into the job's environment only, never into a log line, param,
tag or artifact. On the run: ``training.job_name``, ``training.status``, ``training.instance_type``,
``training.instance_count``, ``training.image``, ``training.dataset_uri``, ``training.provenance``
(``measured-local`` for the local stand-in, ``measured-real`` in AWS), the metrics
``training_billable_seconds`` and ``training_cost_usd`` and the tag ``training_cost.basis`` (a
would-be figure on the stand-in: nothing is billed, and the seconds are this machine's, not the
instance's).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import mlflow
import torch
from mlflow import MlflowClient

from bench import prices as price_tables
from bench.cost import training_cost
from deployers import aws
from deployers.ownership import Owner
from deployers.sagemaker import training
from deployers.sagemaker.training import JobOutcome, TrainingSettings
from niser.data import SessionData, save_prepared
from niser.registry import Registration
from niser.sagemaker_entry import LAUNCHER, source_archive
from niser.train import TrainConfig

JOB_MLFLOW_VARS = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD",
                   "MLFLOW_TRACKING_TOKEN", "MLFLOW_TRACKING_INSECURE_TLS",
                   "MLFLOW_TRACKING_SERVER_CERT_PATH", "MLFLOW_S3_ENDPOINT_URL")


@dataclass(frozen=True)
class JobTraining:
    """What a training job gave ``train-and-benchmark``: the test metrics, the logged model and
    its registration."""

    job_name: str
    metrics: dict[str, float]
    model_uri: str
    registration: Registration


@dataclass(frozen=True)
class JobRun:
    """A completed job, its metrics (``TrainResult.final``) and its cost in USD."""

    outcome: JobOutcome
    metrics: dict[str, float]
    cost_usd: float


def job_environment(run_id: str, local: bool, extra: Mapping[str, str] | None = None
                    ) -> dict[str, str]:
    """The job's MLflow settings: this tracking server, the run to log into, credentials."""
    uri = mlflow.get_tracking_uri()
    if not local and not uri.startswith(("http://", "https://", "databricks")):
        raise ValueError(f"train_on='sagemaker': the training job logs to MLflow over the "
                         f"network; the tracking URI {uri!r} is not a server it can reach (set "
                         "MLFLOW_TRACKING_URI to an http(s):// MLflow server)")
    env = {"MLFLOW_TRACKING_URI": uri, "MLFLOW_RUN_ID": run_id,
           "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false", **(extra or {})}
    return env | {k: os.environ[k] for k in JOB_MLFLOW_VARS if os.environ.get(k)}


def run_training_job(data: SessionData, config: TrainConfig, settings: TrainingSettings,
                     run_id: str, on_line: Callable[[str], None],
                     extra_env: Mapping[str, str] | None = None) -> JobRun:
    """Run one job that logs into ``run_id``; log what it was and cost on that run; raise
    ``RuntimeError`` with the job's failure reason unless it completed with a result."""
    local = aws.endpoint_is_local("sagemaker")
    env = job_environment(run_id, local, extra_env)
    with tempfile.TemporaryDirectory() as tmp:
        dataset = save_prepared(data, Path(tmp) / f"{data.fingerprint()}.npz")
        source = source_archive(Path(tmp) / "sourcedir.tar.gz")
        outcome = training.run_job(dataset, source, LAUNCHER, config.model_dump(mode="json"),
                                   env, settings, Owner(f"training-{run_id[:12]}", run_id),
                                   torch.__version__, on_line)
    usd = training_cost(outcome.billable_seconds, settings.instance_type, price_tables.load())
    basis = ("would-be: the local stand-in ran the job on this machine, nothing billed; "
             "billable seconds are this machine's" if outcome.local else
             "billed by AWS: BillableTimeInSeconds x the on-demand training price")
    client = MlflowClient()
    for key, value in {"training.job_name": outcome.name, "training.status": outcome.status,
                       "training.instance_type": settings.instance_type,
                       "training.instance_count": str(settings.instance_count),
                       "training.image": outcome.image,
                       "training.dataset_uri": outcome.inputs.get("train", ""),
                       "training_cost.basis": basis,
                       "training.provenance": "measured-local" if outcome.local
                       else "measured-real"}.items():
        client.set_tag(run_id, key, value)
    client.log_metric(run_id, "training_billable_seconds", float(outcome.billable_seconds))
    client.log_metric(run_id, "training_cost_usd", usd)
    if outcome.status != "Completed" or outcome.result is None:
        raise RuntimeError(f"SageMaker training job {outcome.name} {outcome.status}: "
                           f"{outcome.failure_reason or 'it wrote no result.json'}")
    on_line(f"training job {outcome.name}: {outcome.billable_seconds} billable s, "
            f"${usd:.6f} ({basis.split(':')[0]})")
    metrics = {k: float(v) for k, v in outcome.result["metrics"].items()}
    return JobRun(outcome, metrics, usd)
