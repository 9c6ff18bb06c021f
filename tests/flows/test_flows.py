"""The flows under a real (temporary) Prefect server and a temporary SQLite MLflow (parameter
checks, which need no server, are in ``test_parameters.py``)."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from mlflow import MlflowClient
from prefect.testing.utilities import prefect_test_harness

from flows.cli import main as cli
from flows.hpo import hpo
from flows.train_and_benchmark import train_and_benchmark

TINY = "synthetic:n_items=80,n_sessions=400"
INPROCESS = [{"name": "inproc", "deployer": "inprocess"}]


@pytest.fixture(scope="module", autouse=True)
def prefect_server():
    with prefect_test_harness(server_startup_timeout=120):
        yield


def test_train_and_benchmark_logs_registers_and_benchmarks(tracking_uri):
    summary = train_and_benchmark(
        dataset=TINY, epochs=1, hyperparameters={"dim": 16}, targets=INPROCESS, levels=[1, 2],
        level_seconds=0.3, warmup_seconds=0.1, experiment="flow-test")
    client = MlflowClient()
    run = client.get_run(summary["mlflow_run_id"])
    assert run.data.params["train.dim"] == "16"
    assert run.data.params["train.epochs"] == "1"
    assert {"loss", "recall_20", "mrr_20", "recall_10", "epoch_seconds"} <= set(run.data.metrics)
    assert run.data.tags["prefect.flow_run_id"]
    version = client.get_model_version("niser", summary["model_version"])
    assert version.run_id == run.info.run_id
    bench = client.get_run(summary["benchmark_run_id"])
    assert bench.data.tags["mlflow.parentRunId"] == run.info.run_id
    children = client.search_runs([run.info.experiment_id],
                                  f"tags.mlflow.parentRunId = '{bench.info.run_id}'")
    assert [c.info.run_name for c in children] == ["inproc"]
    p50 = client.get_metric_history(children[0].info.run_id, "latency_p50_ms")
    assert sorted(m.step for m in p50) == [1, 2] and all(m.value > 0 for m in p50)
    artifacts = {a.path for a in client.list_artifacts(bench.info.run_id)}
    assert {"recommendation.json", "summary.json", "plots"} <= artifacts
    assert summary["recommendation"] == bench.data.tags["recommendation"]
    row = summary["targets"][0]
    assert row["status"] == "ok" and row["errors"] == 0


def test_train_only_when_targets_empty(tracking_uri):
    summary = train_and_benchmark(dataset=TINY, epochs=1, hyperparameters={"dim": 16},
                                  targets=[], experiment="flow-test")
    assert summary["benchmark_run_id"] is None and summary["targets"] == []


def test_hpo_runs_nested_trials_and_logs_best_params(tracking_uri, tmp_path: Path):
    summary = hpo(dataset=TINY, n_trials=4, epochs=1, study_name="t",
                  storage_path=str(tmp_path / "journal.log"), experiment="hpo-test")
    client = MlflowClient()
    parent = client.get_run(summary["mlflow_run_id"])
    trials = client.search_runs([parent.info.experiment_id],
                                f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert len(trials) == 4
    assert all("recall_20" in t.data.metrics for t in trials)
    assert {f"best.{k}" for k in ("lr", "dim", "dropout", "weight_decay")} <= set(parent.data.params)
    best = max(t.data.metrics["recall_20"] for t in trials)
    assert parent.data.metrics["best_recall_20"] == pytest.approx(best)
    # the journal persists the study: a second run continues it
    again = hpo(dataset=TINY, n_trials=1, epochs=1, study_name="t",
                storage_path=str(tmp_path / "journal.log"), experiment="hpo-test")
    assert again["trials_in_study"] == 5


@pytest.mark.parametrize(("args", "option"), [
    (["train", "--epochs", "0"], "--epochs"),
    (["benchmark", "--levels", "1,x"], "--levels"),
    (["benchmark", "--slo-ms", "-1"], "--slo-ms"),
    (["train", "--hyperparameters", "{not json"], "--hyperparameters"),
])
def test_cli_bad_arguments_name_the_option(args, option):
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2
    assert option in result.output
