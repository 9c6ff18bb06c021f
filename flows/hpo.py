"""``hpo``: an Optuna study over NISER hyperparameters, one nested MLflow run per trial.

Every trial trains ``hyperparameters`` (any ``TrainConfig`` fields) with the searched ones
replaced by the trial's. The study lives in a journal file (``JournalStorage``), so a second run
with the same ``study_name`` and ``storage_path`` continues it. The best trial's parameters are
logged on the parent run and its model is logged and registered like any training run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow
import optuna
from mlflow import MlflowClient
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from flows import tasks
from flows.parameters import Count, train_config
from niser.data import SessionData
from niser.registry import log_training
from niser.train import TrainConfig, TrainResult, train

DEFAULT_STORAGE = Path(".state") / "optuna" / "journal.log"
SEARCH_SPACE = "lr: log-uniform 1e-4..1e-2; weight_decay: log-uniform 1e-6..1e-4; " \
               "dim: {32, 64, 100}; dropout: 0..0.3"


def suggest(trial: optuna.Trial) -> dict[str, Any]:
    """The search space (see ``SEARCH_SPACE``)."""
    return {
        "lr": trial.suggest_float("lr", 1e-4, 1e-2, log=True),
        "weight_decay": trial.suggest_float("weight_decay", 1e-6, 1e-4, log=True),
        "dim": trial.suggest_categorical("dim", [32, 64, 100]),
        "dropout": trial.suggest_float("dropout", 0.0, 0.3),
    }


@task(cache_policy=NO_CACHE)
def run_trial(number: int, params: dict[str, Any], base: TrainConfig, data: SessionData,
              parent_run_id: str, experiment_id: str) -> TrainResult:
    """Train one trial (``base`` with ``params`` replaced) in a nested MLflow run, logged there."""
    config = TrainConfig(**{**base.model_dump(), **params})
    client = MlflowClient()
    child = client.create_run(experiment_id, run_name=f"trial-{number}",
                              tags={"mlflow.parentRunId": parent_run_id,
                                    "optuna.trial_number": str(number)})
    try:
        result = train(data, config, progress=False)
        log_training(result, data, config, run_id=child.info.run_id)
    except Exception:
        client.set_terminated(child.info.run_id, "FAILED")
        raise
    client.set_terminated(child.info.run_id, "FINISHED")
    return result


@flow(name="hpo", log_prints=True)
def hpo(
    dataset: str = "synthetic",
    n_trials: Count = 4,
    epochs: Count = 2,
    metric: str = "val_recall_20",
    study_name: str = "niser-hpo",
    storage_path: str = str(DEFAULT_STORAGE),
    seed: int = 0,
    experiment: str = "niser-hpo",
    hyperparameters: TrainConfig | None = None,
) -> dict[str, Any]:
    """Run ``n_trials`` more trials of the study and register the best model of this run.

    ``hyperparameters`` are the ``TrainConfig`` fields every trial starts from (its ``epochs``
    and ``seed``, when given, win over ``epochs`` and ``seed``); the search replaces the rest.
    """
    logger = get_run_logger()
    Path(storage_path).parent.mkdir(parents=True, exist_ok=True)
    storage = JournalStorage(JournalFileBackend(storage_path))
    study = optuna.create_study(study_name=study_name, storage=storage, direction="maximize",
                                load_if_exists=True, sampler=optuna.samplers.TPESampler(seed=seed))
    base = train_config(hyperparameters, epochs=epochs, seed=seed)
    mlflow.set_experiment(experiment)
    with mlflow.start_run(run_name=f"hpo-{study_name}",
                          tags={"prefect.flow_run_id": str(flow_run.id or "")}) as parent:
        pid, eid = parent.info.run_id, parent.info.experiment_id
        mlflow.log_params({"study_name": study_name, "n_trials": n_trials, "metric": metric,
                           "search_space": SEARCH_SPACE, "dataset": dataset,
                           "epochs": base.epochs})
        data = tasks.load_data(dataset)
        best: tuple[float, TrainResult] | None = None
        for _ in range(n_trials):
            trial = study.ask()
            params = suggest(trial)
            result = run_trial(trial.number, params, base, data, pid, eid)
            value = result.final[metric]
            study.tell(trial, value)
            logger.info("trial %d %s -> %s %.3f", trial.number, params, metric, value)
            if best is None or value > best[0]:
                best = (value, result)
        assert best is not None
        mlflow.log_params({f"best.{k}": v for k, v in study.best_params.items()})
        mlflow.log_metric(f"best_{metric}", study.best_value)
        model_uri = tasks.log_model(best[1], data, pid)
        registration = tasks.register_model(model_uri)
    summary = {"best_params": study.best_params, "best_value": study.best_value,
               "trials_in_study": len(study.trials), "mlflow_run_id": pid,
               "model_version": registration.version, "alias": registration.alias}
    print(summary)
    return summary
