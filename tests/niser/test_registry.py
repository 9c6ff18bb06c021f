"""Tracking and registry against a temporary SQLite MLflow: what is logged reads back, and the
champion/challenger policy."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from niser.registry import (
    CHALLENGER,
    CHAMPION,
    decide_alias,
    link_benchmark,
    log_training,
    pip_requirements,
    promote,
    register,
)
from niser.train import EpochResult
from niser.vocab import Vocabulary


@pytest.fixture(scope="module")
def training_run(tracking_uri, tiny_training) -> str:
    data, result = tiny_training
    with mlflow.start_run(run_name="log-training") as run:
        log_training(result, data)
    return run.info.run_id


def test_every_config_field_is_a_prefixed_param(training_run, tiny_training):
    data, result = tiny_training
    params = MlflowClient().get_run(training_run).data.params
    for field in result.config.model_dump():
        assert f"train.{field}" in params
    assert params["train.lr"] == str(result.config.lr)
    assert json.loads(params["train.ks"]) == list(result.config.ks)
    assert params["data.hash"] == data.fingerprint()
    assert params["data.n_train_samples"] == str(len(data.train))


def test_precision_path_and_validation_split_are_params(training_run, tiny_training):
    _, result = tiny_training
    params = MlflowClient().get_run(training_run).data.params
    assert params["train.precision"] == result.config.precision
    assert params["train.precision_path"] == result.precision.path in ("fp32", "bf16")
    assert params["train.precision_reason"] == result.precision.reason
    assert params["split.n_valid_samples"] == str(result.split["n_valid_samples"])
    assert params["split.valid_hash"] == result.split["valid_hash"]


@pytest.mark.parametrize("key", ["loss", "val_recall_10", "val_recall_20", "val_mrr_10",
                                 "val_mrr_20", "epoch_seconds", "samples_per_second"])
def test_metrics_are_logged_per_epoch_with_step(training_run, tiny_training, key):
    _, result = tiny_training
    history = MlflowClient().get_metric_history(training_run, key)
    assert [m.step for m in sorted(history, key=lambda m: m.step)] == [1, 2]
    by_step = {m.step: m.value for m in history}
    for epoch in result.history:
        assert by_step[epoch.epoch] == pytest.approx(epoch.as_metrics()[key])


@pytest.mark.parametrize("key", ["recall_10", "recall_20", "mrr_10", "mrr_20"])
def test_test_metrics_are_logged_once_at_the_chosen_epoch(training_run, tiny_training, key):
    _, result = tiny_training
    client = MlflowClient()
    (point,) = client.get_metric_history(training_run, key)
    assert (point.step, point.value) == (result.best_epoch, pytest.approx(result.test[key]))
    (best,) = client.get_metric_history(training_run, "best_epoch")
    assert best.value == result.best_epoch


def test_refit_epochs_are_logged_per_epoch_and_absent_without_refit(
        training_run, tiny_training):
    data, result = tiny_training
    client = MlflowClient()
    assert client.get_metric_history(training_run, "refit_loss") == []
    refit = EpochResult(1, 3.5, 2.0, 50.0, 0.0, {})
    with mlflow.start_run(run_name="log-refit") as run:
        log_training(replace(result, refit_history=[refit]), data)
    (loss,) = client.get_metric_history(run.info.run_id, "refit_loss")
    (seconds,) = client.get_metric_history(run.info.run_id, "refit_epoch_seconds")
    assert (loss.step, loss.value, seconds.value) == (1, 3.5, 2.0)


def test_dataset_is_logged_with_name_and_content_hash(training_run, tiny_training):
    data, _ = tiny_training
    (inp,) = MlflowClient().get_run(training_run).inputs.dataset_inputs
    assert (inp.dataset.name, inp.dataset.digest) == (data.name, data.fingerprint())
    assert {t.key: t.value for t in inp.tags}["mlflow.data.context"] == "training"
    profile = json.loads(inp.dataset.profile)
    assert profile["num_rows"] == 2  # one row per split


def test_vocab_and_config_artifacts(training_run, tiny_training, tmp_path):
    data, result = tiny_training
    local = Path(mlflow.artifacts.download_artifacts(run_id=training_run, artifact_path="training",
                                                     dst_path=str(tmp_path)))
    assert Vocabulary.load(local / "vocab.json") == data.vocab
    config = json.loads((local / "config.json").read_text())
    assert config["train_config"]["dim"] == result.config.dim
    assert config["data"]["hash"] == data.fingerprint()


def test_log_training_without_a_run_says_how_to_fix(tracking_uri, tiny_training):
    data, result = tiny_training
    assert mlflow.active_run() is None
    with pytest.raises(MlflowException, match=r"mlflow\.start_run"):
        log_training(result, data)


def test_registered_version_carries_tags_description_and_champion(registered_model_uri,
                                                                   tiny_training):
    data, result = tiny_training
    client = MlflowClient()
    version = registered_model_uri.rsplit("/", 1)[1]
    mv = client.get_model_version("niser", version)
    assert mv.tags["dataset_hash"] == data.fingerprint()
    assert mv.tags["dataset_name"] == data.name
    assert float(mv.tags["metric.recall_20"]) == pytest.approx(result.test["recall_20"])
    assert float(mv.tags["metric.val_recall_20"]) == pytest.approx(
        result.validation["recall_20"])
    assert mv.tags["compared_on"] == "val_recall_20"
    run = client.get_run(mv.tags["run_id"])
    assert run.data.params["data.hash"] == data.fingerprint()
    assert data.name in mv.description and data.fingerprint() in mv.description
    assert "recall_20=" in mv.description and mv.tags["run_id"] in mv.description
    assert "Validation metrics (epoch" in mv.description
    assert "Test metrics, measured once" in mv.description
    champion = client.get_model_version_by_alias("niser", CHAMPION)
    if str(champion.version) != version:  # an earlier test of the session registered a better one
        assert champion.tags["dataset_hash"] != mv.tags["dataset_hash"] or float(
            champion.tags["metric.val_recall_20"]) >= float(mv.tags["metric.val_recall_20"])


def test_logged_model_is_self_describing(registered_model_uri):
    info = mlflow.models.get_model_info(registered_model_uri)
    assert info.signature.params.params[0].name == "k"
    assert info.saved_input_example_info is not None
    local = Path(mlflow.artifacts.download_artifacts(registered_model_uri))
    assert (local / "code" / "niser" / "inference.py").is_file()
    requirements = (local / "requirements.txt").read_text().split()
    assert set(pip_requirements()) <= set(requirements)
    assert not any("+" in r for r in requirements if r.startswith("torch"))


@pytest.fixture(scope="module")
def logged_model_uri(registered_model_uri) -> str:
    version = registered_model_uri.rsplit("/", 1)[1]
    source = MlflowClient().get_model_version("niser", version).source
    assert source.startswith("models:/m-")  # the logged model behind the version
    return source


def test_champion_moves_only_on_a_better_validation_score_on_the_same_dataset(logged_model_uri):
    name, client = "niser-policy", MlflowClient()

    def reg(recall: float, dataset: str = "hash-a"):
        # the test score runs against the validation score: it must never decide
        return register(logged_model_uri, name=name, dataset_hash=dataset,
                        metrics={"val_recall_20": recall, "recall_20": 100 - recall,
                                 "mrr_20": recall / 3})

    def champion() -> str:
        return str(client.get_model_version_by_alias(name, CHAMPION).version)

    first = reg(30.0)
    assert (first.alias, first.previous_champion, champion()) == (CHAMPION, None, first.version)
    worse = reg(20.0)
    assert (worse.alias, champion()) == (CHALLENGER, first.version)
    assert str(client.get_model_version_by_alias(name, CHALLENGER).version) == worse.version
    better = reg(40.0)
    assert (better.alias, better.previous_champion, champion()) == (CHAMPION, first.version,
                                                                    better.version)
    tie = reg(40.0)
    assert (tie.alias, champion()) == (CHALLENGER, better.version)
    other_data = reg(99.0, dataset="hash-b")
    assert (other_data.alias, champion()) == (CHALLENGER, better.version)
    assert "not compared" in other_data.reason
    assert client.get_model_version(name, other_data.version).tags["dataset_hash"] == "hash-b"
    assert "challenger" in client.get_model_version(name, other_data.version).description
    promote(other_data.version, name=name)
    assert champion() == other_data.version


def test_register_refuses_an_unknown_metric_named_explicitly(logged_model_uri):
    with pytest.raises(ValueError, match="ndcg_20"):
        register(logged_model_uri, name="niser-refused", metric="ndcg_20")


def test_a_version_without_validation_metrics_is_registered_but_never_compared(
        logged_model_uri):
    name = "niser-untrained"

    def reg(metrics: dict[str, float]):
        return register(logged_model_uri, name=name, dataset_hash="h", metrics=metrics)

    first = reg({"recall_20": 0.0})  # as scripts log untrained weights: no val_recall_20
    assert first.alias == CHAMPION  # there was none
    assert reg({"val_recall_20": 10.0}).alias == CHALLENGER  # the champion has no val_ tag
    second = reg({"recall_20": 99.0})
    assert (second.alias, second.reason) == (CHALLENGER,
                                             "this version has no val_recall_20: not compared")


@pytest.mark.parametrize(("tags", "value", "alias"), [
    (None, 1.0, CHAMPION),
    ({"dataset_hash": "a", "metric.recall_20": "10.0"}, 10.5, CHAMPION),
    ({"dataset_hash": "a", "metric.recall_20": "10.0"}, 10.0, CHALLENGER),
    ({"dataset_hash": "a", "metric.recall_20": "10.0"}, 9.0, CHALLENGER),
    ({"dataset_hash": "b", "metric.recall_20": "1.0"}, 50.0, CHALLENGER),
    ({"dataset_hash": "a", "metric.mrr_20": "1.0"}, 50.0, CHALLENGER),
    ({"dataset_hash": "a", "metric.recall_20": "1.0"}, None, CHALLENGER),
    (None, None, CHAMPION),
])
def test_decide_alias_policy(tags, value, alias):
    assert decide_alias(tags, "a", "recall_20", value)[0] == alias


def test_a_version_carries_a_link_to_its_latest_benchmark(registered_model_uri):
    client, version = MlflowClient(), registered_model_uri.rsplit("/", 1)[1]
    link_benchmark(version, "run-1", "lambda-1024mb: $0.0288/h", "http://mlflow/#/r/run-1")
    tags = client.get_model_version("niser", version).tags
    assert (tags["benchmark.run_id"], tags["benchmark.url"]) == ("run-1", "http://mlflow/#/r/run-1")
    assert tags["benchmark.recommendation"] == "lambda-1024mb: $0.0288/h"
    link_benchmark(version, "run-2")  # a later benchmark on a store without a UI
    tags = client.get_model_version("niser", version).tags
    assert tags["benchmark.run_id"] == "run-2"
    assert "benchmark.url" not in tags and "benchmark.recommendation" not in tags
