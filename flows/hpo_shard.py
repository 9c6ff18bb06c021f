"""``hpo-shard``: one shard of an ``hpo`` run, and the trial every shard runs.

A shard opens the shared study (``flows.study``), claims the parent run's queued trials one at a
time until none is left, and trains each in a nested MLflow run of the parent run, tagged with
where it ran (``hpo.host``, ``hpo.pid``, ``hpo.shard``, ``prefect.flow_run_id``): here, or, with
training settings, in a SageMaker training job per trial (``flows.train_job``). The trial run
also keeps the trained ``recommender`` as an artifact, so the parent can register the best one
without training it again. ``hpo`` runs one shard in-process without a work pool, else deploys
this flow as ``hpo-shard/<pool>`` (``deploy``) and starts one flow run per shard on the pool.
"""

from __future__ import annotations

import os
import socket
import tempfile
from pathlib import Path
from typing import Any
from uuid import UUID

import optuna
from mlflow import MlflowClient
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from bench.stale_runs import process_tags
from deployers.sagemaker.training import TrainingSettings
from flows import study as studies
from flows import tasks
from flows.train_job import run_training_job
from niser.data import SessionData
from niser.inference import Recommender
from niser.registry import log_training
from niser.train import TrainConfig, train

ROOT = Path(__file__).resolve().parents[1]
SHARD_FLOW = "hpo-shard"
SEARCH_SPACE = "lr: log-uniform 1e-4..1e-2; weight_decay: log-uniform 1e-6..1e-4; " \
               "dim: {32, 64, 100}; dropout: 0..0.3"
RECOMMENDER_ARTIFACT = "recommender"
FLOW_RUN_ATTR = "hpo.flow_run_id"
"""The trial user attribute naming the shard flow run that claimed it."""
FINAL_ATTR = "final"
"""The trial user attribute holding the trained model's ``TrainResult.final`` metrics."""
COST_ATTR = "training_cost_usd"
"""The trial user attribute holding its training job's cost (trials trained in a job only)."""


def suggest(trial: optuna.Trial) -> dict[str, Any]:
    """The search space (see ``SEARCH_SPACE``)."""
    return {
        "lr": trial.suggest_float("lr", 1e-4, 1e-2, log=True),
        "weight_decay": trial.suggest_float("weight_decay", 1e-6, 1e-4, log=True),
        "dim": trial.suggest_categorical("dim", [32, 64, 100]),
        "dropout": trial.suggest_float("dropout", 0.0, 0.3),
    }


def _train_here(data: SessionData, config: TrainConfig, run_id: str) -> dict[str, float]:
    """Train in this process, log into ``run_id``, keep the ``Recommender`` as an artifact."""
    result = train(data, config, progress=False)
    log_training(result, data, config, run_id=run_id)
    with tempfile.TemporaryDirectory() as tmp:
        Recommender.from_training(result.model, config, data).save(Path(tmp) / "r")
        MlflowClient().log_artifacts(run_id, str(Path(tmp) / "r"), RECOMMENDER_ARTIFACT)
    return {k: float(v) for k, v in result.final.items()}


def _train_in_job(data: SessionData, config: TrainConfig, run_id: str,
                  settings: TrainingSettings) -> tuple[dict[str, float], float]:
    """Train in a SageMaker training job that logs into ``run_id`` and keeps the
    ``Recommender`` as an artifact (no pyfunc, no registration); metrics and cost."""
    logger = get_run_logger()
    job = run_training_job(data, config, settings, run_id, lambda line: logger.info("%s", line),
                           {"NISER_REGISTER": "0",
                            "NISER_RECOMMENDER_ARTIFACT": RECOMMENDER_ARTIFACT})
    return job.metrics, job.cost_usd


@task(cache_policy=NO_CACHE, task_run_name="trial-{trial.number}")
def run_trial(trial: optuna.Trial, base: TrainConfig, data: SessionData, parent_run_id: str,
              experiment_id: str, shard: int, metric: str,
              training: TrainingSettings | None = None) -> float:
    """Train one trial (``base`` with the sampled parameters) in a nested MLflow run, here or,
    with ``training``, in a SageMaker training job; returns its ``metric``."""
    # the shard's flow run first: a trial killed at any point after this names its shard, which
    # the parent then marks Crashed
    trial.set_user_attr(FLOW_RUN_ATTR, str(flow_run.id or ""))
    client = MlflowClient()
    child = client.create_run(experiment_id, run_name=f"trial-{trial.number}", tags={
        "mlflow.parentRunId": parent_run_id, studies.TRIAL_NUMBER_TAG: str(trial.number),
        "hpo.shard": str(shard), "hpo.host": socket.gethostname(), "hpo.pid": str(os.getpid()),
        "prefect.flow_run_id": str(flow_run.id or ""), **process_tags()})
    run_id = child.info.run_id
    trial.set_user_attr(studies.MLFLOW_RUN_ATTR, run_id)  # the stale-trial callback needs it
    try:
        params = suggest(trial)
        config = TrainConfig(**{**base.model_dump(), **params})
        if training is None:
            final = _train_here(data, config, run_id)
        else:
            final, usd = _train_in_job(data, config, run_id, training)
            trial.set_user_attr(COST_ATTR, usd)
        trial.set_user_attr(FINAL_ATTR, final)
        value = float(final[metric])
    except BaseException:
        client.set_terminated(run_id, "FAILED")
        raise
    client.set_terminated(run_id, "FINISHED")
    get_run_logger().info("trial %d %s -> %s %.3f", trial.number, params, metric, value)
    return value


def run_shard(study: optuna.Study, storage: optuna.storages.BaseStorage, data: SessionData,
              base: TrainConfig, parent_run_id: str, experiment_id: str, shard: int,
              metric: str, training: TrainingSettings | None = None) -> list[int]:
    """Run queued trials of ``parent_run_id`` until none is left; the trial numbers run."""
    def objective(trial: optuna.Trial) -> float:
        return run_trial(trial, base, data, parent_run_id, experiment_id, shard, metric,
                         training)

    return studies.run_queue(study, storage, parent_run_id, objective)


@flow(name=SHARD_FLOW, log_prints=True)
def hpo_shard(study_name: str, storage: str, parent_run_id: str, experiment_id: str,
              dataset: str, base: TrainConfig, metric: str, shard: int, seed: int,
              heartbeat_s: int, grace_s: int,
              training: TrainingSettings | None = None) -> list[int]:
    """One shard: trials of ``parent_run_id``'s queue in ``storage`` until none is left."""
    store = studies.open_storage(studies.check_storage_url(storage), "", heartbeat_s, grace_s)
    # a seed per shard: shards seeded alike would sample the same parameters
    study = studies.open_study(study_name, store, seed + shard)
    done = run_shard(study, store, tasks.load_data(dataset), base, parent_run_id,
                     experiment_id, shard, metric, training)
    print(f"shard {shard} on {socket.gethostname()} ran trials {done}")
    return done


def deploy(pool: str) -> str:
    """Register ``hpo-shard/<pool>`` on the process work pool ``pool``, run from this checkout
    (a worker on another machine needs the checkout at the same path); returns its name."""
    remote = hpo_shard.from_source(source=str(ROOT), entrypoint="flows/hpo_shard.py:hpo_shard")
    remote.deploy(name=pool, work_pool_name=pool, build=False, push=False,  # type: ignore[union-attr]
                  print_next_steps=False, ignore_warnings=True,
                  description="One shard of an hpo run (started by the hpo flow).")
    return f"{SHARD_FLOW}/{pool}"


def shard_run_id(value: object) -> UUID:
    """The flow-run id of what ``run_deployment`` returned."""
    return UUID(str(getattr(value, "id", value)))
