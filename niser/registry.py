"""Tracking and registry: log a training run, log the serving pyfunc, register it as ``niser``.

Typical use (system metrics - CPU, memory, disk, network - come from psutil once the caller
opens the run with ``log_system_metrics=True``)::

    with mlflow.start_run(log_system_metrics=True) as run:
        result = train(data, config)
        log_training(result, data)
        info = log_recommender(Recommender.from_training(result.model, config, data),
                               data.summary(), result.final)
    outcome = register(info.model_uri)   # -> Registration(version="3", alias="champion", ...)

Promotion policy (``register``): the alias ``champion`` names the version that serving uses
(``models:/niser@champion``). A new version takes it when there is no champion yet, or when the
champion was trained on the same dataset (same content hash) and the new version scores strictly
higher on the same validation metric (``val_recall_20`` by default; a tie keeps the incumbent).
Otherwise the new version takes ``challenger`` (which always names the latest version that was not
promoted). The test metrics are logged and tagged on every version but never decide anything: a
choice made on the test set would make its score an optimistic estimate. A champion trained on a
different dataset is never compared: scores on different data say nothing about which model is
better, so moving serving to another dataset is a deliberate act (``promote``), never a side
effect of a training run. The same dataset hash means the same validation split: ``train`` carves
it deterministically from the data when the data brings none.
"""

from __future__ import annotations

import contextlib
import json
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import mlflow
import pandas as pd
from mlflow import MlflowClient
from mlflow.data.pandas_dataset import from_pandas
from mlflow.entities import DatasetInput, InputTag, Metric, Param
from mlflow.exceptions import MlflowException
from mlflow.models.model import ModelInfo

from niser import lambda_bundle, pyfunc
from niser.batching import BatchSettings
from niser.data import SessionData
from niser.inference import Recommender
from niser.train import TrainConfig, TrainResult

MODEL_NAME = "niser"
Alias = Literal["champion", "challenger"]
CHAMPION: Alias = "champion"
CHALLENGER: Alias = "challenger"
METADATA_KEY = "niser"  # key of the data summary and metrics in the MLmodel metadata
COMPARED_METRIC = "val_recall_20"  # what register compares: validation, never test
PYFUNC_PATH = Path(pyfunc.__file__).resolve()
PACKAGE_DIR = PYFUNC_PATH.parent
# Runtime requirements of the served model (niser itself travels as code, see log_recommender).
RUNTIME_PACKAGES = ("torch", "mlflow", "numpy", "pandas", "pydantic")


def _run_id(run_id: str | None) -> str:
    if run_id:
        return run_id
    run = mlflow.active_run()
    if run is None:
        raise MlflowException("no active MLflow run: call inside `with mlflow.start_run():` or "
                              "pass run_id=")
    return run.info.run_id


def training_params(config: TrainConfig, data: SessionData,
                    result: TrainResult | None = None) -> dict[str, str]:
    """Every config field as ``train.<field>``, the dataset summary as ``data.<field>``, and,
    given ``result``, the precision path that ran (``train.precision_path`` and
    ``train.precision_reason``) and the fitting/validation split (``split.<field>``)."""
    params = {f"train.{k}": json.dumps(v) if isinstance(v, list | tuple) else str(v)
              for k, v in config.model_dump().items()}
    params.update({f"data.{k}": str(v) for k, v in data.summary().items()})
    if result is not None:
        params["train.precision_path"] = result.precision.path
        params["train.precision_reason"] = result.precision.reason
        params.update({f"split.{k}": str(v) for k, v in result.split.items()})
    return params


def dataset_frame(data: SessionData) -> pd.DataFrame:
    """One row per split (train, valid when carved, test): samples, clicks, catalogue size."""
    splits = [("train", data.train), *([("valid", data.valid)] if data.valid else []),
              ("test", data.test)]
    rows = [{"split": split, "samples": len(s), "clicks": int(s.items.shape[0]),
             "n_items": data.n_items} for split, s in splits]
    return pd.DataFrame(rows)


def log_training(result: TrainResult, data: SessionData, config: TrainConfig | None = None,
                 run_id: str | None = None) -> None:
    """Log a finished training into ``run_id`` (default: the active run).

    Params: every ``TrainConfig`` field (``train.lr``, ...), the precision path that ran, the
    fitting/validation split (``split.*``) and the dataset summary (``data.name``, ``data.hash``,
    counts). Metrics, one point per epoch with ``step=epoch``: loss, validation recall/mrr at each
    cut-off (``val_recall_20``, ...), epoch_seconds, samples_per_second, eval_seconds; then, once,
    at ``step=best_epoch``: the test metrics of the chosen epoch (``recall_20``, ...),
    ``best_epoch``, ``stopped_early`` and ``test_eval_seconds``; with ``refit``, the refit
    epochs as ``refit_loss`` and ``refit_epoch_seconds`` (``step=epoch``). The dataset as an MLflow dataset
    input (name, content hash as digest, a per-split count table). Artifacts under
    ``training/``: ``config.json`` (config and data summary) and ``vocab.json``.
    """
    run_id = _run_id(run_id)
    config = config or result.config
    client = MlflowClient()
    params = [Param(k, v) for k, v in training_params(config, data, result).items()]
    now = int(time.time() * 1000)
    metrics = [Metric(key, float(value), now, epoch.epoch)
               for epoch in result.history for key, value in epoch.as_metrics().items()]
    once = {**result.test, "best_epoch": float(result.best_epoch),
            "stopped_early": float(result.stopped_early), "test_eval_seconds": result.test_seconds}
    metrics += [Metric(key, float(value), now, result.best_epoch) for key, value in once.items()]
    metrics += [Metric(key, value, now, e.epoch) for e in result.refit_history
                for key, value in (("refit_loss", e.loss), ("refit_epoch_seconds", e.train_seconds))]
    for start in range(0, max(len(params), len(metrics)), 100):  # log_batch caps 100 params
        client.log_batch(run_id, metrics=metrics[start:start + 100],
                         params=params[start:start + 100])
    summary = data.summary()
    dataset = from_pandas(dataset_frame(data), name=str(summary["name"]),
                                      digest=str(summary["hash"]))
    client.log_inputs(run_id, [DatasetInput(dataset._to_mlflow_entity(),
                                            [InputTag("mlflow.data.context", "training")])])
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "config.json").write_text(json.dumps(
            {"train_config": config.model_dump(mode="json"), "data": summary}, indent=2))
        data.vocab.save(Path(tmp) / "vocab.json")
        client.log_artifacts(run_id, tmp, artifact_path="training")


def pip_requirements() -> list[str]:
    """Pinned runtime packages as installed here (local version suffixes such as +cpu dropped)."""
    from importlib.metadata import version

    return [f"{p}=={version(p).split('+')[0]}" for p in RUNTIME_PACKAGES]


def log_recommender(recommender: Recommender, data_summary: Mapping[str, Any],
                    metrics: Mapping[str, float], name: str = "model",
                    with_lambda: bool = True,
                    batch_settings: BatchSettings | None = None) -> ModelInfo:
    """Log ``recommender`` as the serving pyfunc into the active run; returns its ``ModelInfo``.

    Models-from-code (``niser/pyfunc.py``) with the saved Recommender as artifact
    ``recommender``, the serving signature (``k`` param included) and an input example. With
    ``with_lambda`` the model also carries artifact ``lambda``: its Lambda function code (ONNX
    graph and handler, ``niser.lambda_bundle``), which the Lambda deployer packages. The
    ``niser`` package is copied into the model (``code_paths``) and the runtime packages are
    pinned (``pip_requirements``), so the logged model loads without this repository. The data
    summary and metrics go into the MLmodel metadata, where ``register`` reads them.
    ``batch_settings`` (default: batching on, ``niser.batching``) become the model's
    ``model_config``, which the scoring server's environment can override.
    """
    if mlflow.active_run() is None:
        raise MlflowException("log_recommender needs an active MLflow run: call it inside "
                              "`with mlflow.start_run():`")
    metadata = {METADATA_KEY: {"dataset": {k: v for k, v in data_summary.items()},
                               "metrics": {k: float(v) for k, v in metrics.items()}}}
    with tempfile.TemporaryDirectory() as tmp:
        recommender.save(Path(tmp) / "recommender")
        artifacts = {pyfunc.ARTIFACT_KEY: str(Path(tmp) / "recommender")}
        if with_lambda:
            artifacts[lambda_bundle.ARTIFACT_KEY] = str(
                lambda_bundle.write_bundle(recommender, Path(tmp) / "lambda"))
        return mlflow.pyfunc.log_model(
            name=name,
            python_model=str(PYFUNC_PATH),
            artifacts=artifacts,
            code_paths=[str(PACKAGE_DIR)],
            signature=pyfunc.serving_signature(),
            input_example=pyfunc.input_example(),
            pip_requirements=pip_requirements(),
            metadata=metadata,
            model_config=(batch_settings or BatchSettings()).model_config(),
        )


@dataclass(frozen=True)
class Registration:
    """What ``register`` did: the new version, the alias it got, and why."""

    name: str
    version: str
    alias: Alias
    reason: str
    previous_champion: str | None

    @property
    def model_uri(self) -> str:
        return f"models:/{self.name}/{self.version}"


def _champion(client: MlflowClient, name: str) -> Any:
    try:
        return client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        return None


def decide_alias(champion_tags: Mapping[str, str] | None, dataset_hash: str, metric: str,
                 value: float | None) -> tuple[Alias, str]:
    """The policy of the module docstring, as a pure function of the champion's version tags
    (``value`` None: the new version has no ``metric``, so it is never compared)."""
    if champion_tags is None:
        return CHAMPION, "no champion yet"
    if champion_tags.get("dataset_hash") != dataset_hash:
        return CHALLENGER, (f"champion was trained on dataset {champion_tags.get('dataset_hash')}"
                            f", not {dataset_hash}: not compared")
    if value is None:
        return CHALLENGER, f"this version has no {metric}: not compared"
    best = champion_tags.get(f"metric.{metric}")
    if best is None:
        return CHALLENGER, f"champion has no {metric} tag: not compared"
    if value > float(best):
        return CHAMPION, f"{metric} {value:.4f} beats champion's {float(best):.4f}"
    return CHALLENGER, f"{metric} {value:.4f} does not beat champion's {float(best):.4f}"


def register(model_uri: str, name: str = MODEL_NAME, dataset_hash: str | None = None,
             metric: str | None = None, metrics: Mapping[str, float] | None = None
             ) -> Registration:
    """Register ``model_uri`` as a new version of ``name`` and move ``champion`` or ``challenger``.

    Dataset and metrics come from the MLmodel metadata written by ``log_recommender``
    (``TrainResult.final``: validation metrics ``val_*`` of the chosen epoch and its test
    metrics); the arguments override them. ``metric`` is the one compared, by default
    ``COMPARED_METRIC`` (``val_recall_20``); a version without the default metric (a model
    logged outside ``train``, e.g. untrained weights for a benchmark) is registered but never
    compared (champion only when there is none), while a ``metric`` named explicitly must be
    among the model's metrics. The version gets tags ``dataset_hash``, ``dataset_name``, ``dataset.<count>``,
    ``metric.<name>`` for every metric, ``run_id`` and ``compared_on``, and a
    description of data, metrics and run. The alias follows the policy in the module docstring.
    Not atomic: two registrations racing on the same name may both see the old champion.
    """
    info = mlflow.models.get_model_info(model_uri)
    meta = (info.metadata or {}).get(METADATA_KEY, {})
    dataset = dict(meta.get("dataset", {}))
    values = {k: float(v) for k, v in (metrics if metrics is not None
                                       else meta.get("metrics", {})).items()}
    dataset_hash = dataset_hash or dataset.get("hash")
    if not dataset_hash:
        raise ValueError(f"{model_uri} carries no dataset hash: log it with log_recommender or "
                         "pass dataset_hash=")
    if metric is not None and metric not in values:
        raise ValueError(f"metric {metric!r} is not among the model's metrics {sorted(values)}: "
                         "pass metrics= or choose one of them")
    metric = metric or COMPARED_METRIC
    client = MlflowClient()
    try:
        client.get_registered_model(name)
    except MlflowException:
        client.create_registered_model(name, description=(
            "NISER session-based recommender. Serve with `mlflow models serve -m "
            f"models:/{name}@{CHAMPION}`; contract in niser/pyfunc.py."))
    champion = _champion(client, name)
    alias, reason = decide_alias(champion.tags if champion else None, dataset_hash, metric,
                                 values.get(metric))
    tags = {"dataset_hash": dataset_hash, "dataset_name": str(dataset.get("name", "unknown")),
            "compared_on": metric, "run_id": info.run_id or "",
            **{f"dataset.{k}": str(v) for k, v in dataset.items() if k not in ("name", "hash")},
            **{f"metric.{k}": repr(v) for k, v in values.items()}}
    version = mlflow.register_model(model_uri, name, tags=tags)
    client.update_model_version(name, version.version, description=_describe(
        dataset, dataset_hash, values, info.run_id, alias, reason))
    client.set_registered_model_alias(name, alias, version.version)
    return Registration(name, str(version.version), alias, reason,
                        str(champion.version) if champion else None)


def link_benchmark(version: str, run_id: str, recommendation: str | None = None,
                   url: str | None = None, name: str = MODEL_NAME) -> dict[str, str]:
    """Tag model version ``version`` with its latest benchmark run (replacing an older one's
    tags): ``benchmark.run_id``, ``benchmark.url`` (a link to the run, when the tracking server
    has a UI) and ``benchmark.recommendation``. Returns the tags set."""
    tags = {"benchmark.run_id": run_id}
    if url:
        tags["benchmark.url"] = url
    if recommendation:
        tags["benchmark.recommendation"] = recommendation[:5000]
    client = MlflowClient()
    for key in ("benchmark.url", "benchmark.recommendation"):
        if key not in tags:
            with contextlib.suppress(MlflowException):
                client.delete_model_version_tag(name, version, key)
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, value)
    return tags


def promote(version: str, name: str = MODEL_NAME) -> None:
    """Make ``version`` the champion unconditionally (e.g. to serve a model of another dataset)."""
    MlflowClient().set_registered_model_alias(name, CHAMPION, str(version))


def _describe(dataset: Mapping[str, Any], dataset_hash: str, metrics: Mapping[str, float],
              run_id: str | None, alias: str, reason: str) -> str:
    counts = ", ".join(f"{k}={v}" for k, v in dataset.items() if k not in ("name", "hash"))
    valid = ", ".join(f"{k}={v:.4f}" for k, v in sorted(metrics.items()) if k.startswith("val_"))
    test = ", ".join(f"{k}={v:.4f}" for k, v in sorted(metrics.items())
                     if not k.startswith("val_") and k != "best_epoch")
    epoch = f" (epoch {int(metrics['best_epoch'])})" if "best_epoch" in metrics else ""
    return (f"Data: {dataset.get('name', 'unknown')} (hash {dataset_hash}; {counts}).\n"
            f"Validation metrics{epoch}: {valid or 'none'}.\n"
            f"Test metrics, measured once for the chosen epoch: {test or 'none'}.\n"
            f"Run: {run_id or 'none'}.\n"
            f"Registered as {alias}: {reason}.")
