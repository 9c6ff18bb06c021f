"""``hpo``: an Optuna study over NISER hyperparameters, one nested MLflow run per trial.

Every trial trains ``hyperparameters`` (any ``TrainConfig`` fields) with the searched ones
replaced by the trial's. The run queues its ``n_trials`` trials in the study (``flows.study``),
then runs them:

- without ``work_pool``, here, one after the other; the study lives in a journal file
  (``JournalStorage``) unless ``storage`` names a database, so a second run with the same
  ``study_name`` continues it;
- with ``work_pool``, on the pool's workers: it deploys ``hpo-shard/<pool>`` and starts
  ``shards`` flow runs of it, which claim trials until the queue is empty, and waits for the
  trials. The shards share ``storage``, a database URL (default: ``$NISER_OPTUNA_STORAGE``,
  which ``services.py start --backend postgres`` sets to its cluster, for workers anywhere; else
  SQLite beside the journal, for workers on this machine). A trial whose process
  stops sending heartbeats for ``grace_s`` is failed (its MLflow run too) and the others finish.

The best trial's parameters are logged on the parent run and its model (kept by the trial run)
is logged and registered like any training run.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Literal
from uuid import UUID

import mlflow
import optuna
from prefect import flow, get_client, get_run_logger
from prefect.client.schemas.objects import StateType
from prefect.deployments import run_deployment
from prefect.exceptions import ObjectNotFound
from prefect.runtime import flow_run
from prefect.states import Crashed

from bench.stale_runs import process_tags
from bench.tracking import check_tracking_server
from deployers.sagemaker.training import TrainingSettings
from flows import hpo_shard as shards_
from flows import study as studies
from flows import tasks
from flows.parameters import (
    EpochCount,
    Heartbeat,
    Shards,
    Trials,
    WaitSeconds,
    check_run,
    train_config,
    training_settings,
)
from niser.train import TrainConfig

DEFAULT_STORAGE = Path(".state") / "optuna" / "journal.log"
SEARCH_SPACE, suggest = shards_.SEARCH_SPACE, shards_.suggest
FINAL = (StateType.COMPLETED, StateType.FAILED, StateType.CRASHED, StateType.CANCELLED)


def sharded_storage(storage: str | None, storage_path: str) -> str:
    """The database URL the shards share: ``storage``, else ``$NISER_OPTUNA_STORAGE`` (set by
    ``services.py start --backend postgres``: its cluster's ``optuna`` database), else SQLite
    beside the journal file (workers on this machine only)."""
    storage = storage or os.environ.get("NISER_OPTUNA_STORAGE") or None
    if storage is not None:
        return studies.check_storage_url(storage)
    return f"sqlite:///{(Path(storage_path).parent / 'optuna.db').resolve()}"


def check_pool(pool: str) -> None:
    """``ValueError`` naming ``work_pool`` when the Prefect server has no such pool."""
    with get_client(sync_client=True) as client:
        try:
            client.read_work_pool(pool)
        except ObjectNotFound:
            raise ValueError(
                f"work_pool: no work pool {pool!r} on this Prefect server; start one and its "
                f"workers with `python scripts/services.py start --workers 2`, or `prefect "
                f"work-pool create {pool} --type process` and `prefect worker start --pool "
                f"{pool}`") from None


def start_shards(pool: str, n: int, parameters: dict[str, Any]) -> list[UUID]:
    """Deploy ``hpo-shard/<pool>`` and start ``n`` flow runs of it; their ids."""
    name = shards_.deploy(pool)
    runs = [run_deployment(name, parameters={**parameters, "shard": i}, timeout=0,
                           flow_run_name=f"hpo-shard-{i}") for i in range(n)]
    return [shards_.shard_run_id(r) for r in runs]


def shard_states(ids: list[UUID]) -> dict[UUID, StateType | None]:
    with get_client(sync_client=True) as client:
        return {i: client.read_flow_run(i).state_type for i in ids}


def settle_shards(ids: list[UUID], trials: list[optuna.trial.FrozenTrial], wait_s: float,
                  poll_s: float = 1.0) -> tuple[list[UUID], list[UUID]]:
    """Once the trials are finished: mark Crashed the shards still running that claimed a trial
    failed as stale (their process is gone), and wait up to ``wait_s`` for the others to end.
    Returns (marked Crashed, still running)."""
    states = shard_states(ids)
    dead = {UUID(str(t.user_attrs[shards_.FLOW_RUN_ATTR])) for t in trials
            if t.state == optuna.trial.TrialState.FAIL and t.user_attrs.get(shards_.FLOW_RUN_ATTR)}
    crashed = [i for i in ids if i in dead and states[i] not in FINAL]
    with get_client(sync_client=True) as client:
        for i in crashed:
            client.set_flow_run_state(i, Crashed(
                message="stopped sending trial heartbeats; its trial was failed as stale"),
                force=True)
    deadline = time.monotonic() + wait_s
    while True:
        left = [i for i, s in shard_states(ids).items() if s not in FINAL]
        if not left or time.monotonic() > deadline:
            return crashed, left
        time.sleep(poll_s)


@flow(name="hpo", log_prints=True)
def hpo(
    dataset: str = "synthetic",
    n_trials: Trials = 4,
    epochs: EpochCount = 2,
    metric: str = "val_recall_20",
    study_name: str = "niser-hpo",
    storage_path: str = str(DEFAULT_STORAGE),
    seed: int = 0,
    experiment: str = "niser-hpo",
    hyperparameters: TrainConfig | None = None,
    work_pool: str | None = None,
    shards: Shards = 2,
    storage: str | None = None,
    heartbeat_s: Heartbeat = 10,
    grace_s: WaitSeconds = 60,
    timeout_s: WaitSeconds = 24 * 3600,
    train_on: Literal["local", "sagemaker"] = "local",
    training: TrainingSettings | None = None,
) -> dict[str, Any]:
    """Run ``n_trials`` more trials of the study and register the best model of this run.

    ``hyperparameters`` are the ``TrainConfig`` fields every trial starts from (its ``epochs``
    and ``seed``, when given, win over ``epochs`` and ``seed``); the search replaces the rest.
    ``work_pool``: run the trials in ``shards`` flow runs on that Prefect process work pool,
    sharing ``storage`` (a database URL without password); ``heartbeat_s``/``grace_s``: how
    often a trial's process proves it is alive and how long one may stay silent before its
    trial is failed; ``timeout_s``: how long to wait for the shards; ``train_on="sagemaker"``:
    each trial trains in a SageMaker training job (``training``: ``TrainingSettings``), and the
    parent run gets the trials' total ``training_cost_usd``. ``metric`` must be a validation
    metric the evaluation computes (``val_recall_20``, ``val_mrr_10``, ... for
    ``hyperparameters.ks``), and every number is bounded (README, "Bounds"): both are checked
    before anything is created or trained.
    """
    base = train_config(hyperparameters, epochs=epochs, seed=seed)
    check_run(dataset, base, metric)
    logger = get_run_logger()
    job_settings = training_settings(train_on, training)
    check_tracking_server()
    if work_pool is not None:
        url: str | None = sharded_storage(storage, storage_path)
        check_pool(work_pool)
    else:
        url = studies.check_storage_url(storage) if storage is not None else None
    store = studies.open_storage(url, storage_path, heartbeat_s, grace_s)
    study = studies.open_study(study_name, store, seed)
    mlflow.set_experiment(experiment)
    with mlflow.start_run(run_name=f"hpo-{study_name}",
                          tags={"prefect.flow_run_id": str(flow_run.id or ""),
                                **process_tags()}) as parent:
        pid, eid = parent.info.run_id, parent.info.experiment_id
        mlflow.log_params({"study_name": study_name, "n_trials": n_trials, "metric": metric,
                           "search_space": SEARCH_SPACE, "dataset": dataset,
                           "epochs": base.epochs, "work_pool": work_pool or "",
                           "shards": shards if work_pool else 1,
                           "storage": url or f"journal:{storage_path}", "train_on": train_on})
        data = tasks.load_data(dataset)
        studies.enqueue(study, n_trials, pid)
        if work_pool is None:
            shards_.run_shard(study, store, data, base, pid, eid, 0, metric, job_settings)
            trials = studies.run_trials_of(study, pid)
        else:
            assert url is not None
            ids = start_shards(work_pool, shards, {
                "study_name": study_name, "storage": url, "parent_run_id": pid,
                "experiment_id": eid, "dataset": dataset, "base": base.model_dump(mode="json"),
                "metric": metric, "seed": seed, "heartbeat_s": heartbeat_s, "grace_s": grace_s,
                "training": job_settings.model_dump(mode="json") if job_settings else None})
            logger.info("started %d shards on work pool %s: %s", shards, work_pool,
                        ", ".join(map(str, ids)))
            trials = studies.wait_finished(
                study, pid, time.monotonic() + timeout_s,
                lambda: any(s not in FINAL for s in shard_states(ids).values()))
            crashed, left = settle_shards(ids, trials, wait_s=60)
            if crashed:
                logger.warning("shards %s lost their process mid-trial; marked Crashed",
                               ", ".join(map(str, crashed)))
            if left:
                logger.warning("shards %s have not ended although their trials have",
                               ", ".join(map(str, left)))
        complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
        failed = [t.number for t in trials if t.state == optuna.trial.TrialState.FAIL]
        mlflow.log_metrics({"trials_complete": len(complete), "trials_failed": len(failed)})
        if job_settings is not None:
            mlflow.log_metric("training_cost_usd", sum(
                float(t.user_attrs.get(shards_.COST_ATTR, 0.0)) for t in trials))
        if not complete:
            raise RuntimeError(f"no trial of this run completed (failed: {failed})")
        best = max(complete, key=lambda t: float(t.value or 0.0))
        # this run's best (the study may hold earlier runs' trials too)
        mlflow.log_params({f"best.{k}": v for k, v in best.params.items()})
        mlflow.log_metric(f"best_{metric}", float(best.value or 0.0))
        model_uri = tasks.log_kept_model(
            str(best.user_attrs[studies.MLFLOW_RUN_ATTR]), shards_.RECOMMENDER_ARTIFACT,
            data.summary(), dict(best.user_attrs[shards_.FINAL_ATTR]), pid)
        registration = tasks.register_model(model_uri)
    summary = {"best_params": best.params, "best_value": best.value,
               "study_best_value": study.best_value,
               "trials_in_study": len(study.trials), "trial_numbers": [t.number for t in trials],
               "trials_failed": failed, "mlflow_run_id": pid,
               "model_version": registration.version, "alias": registration.alias}
    print(summary)
    return summary
