"""The flows under a real (temporary) Prefect server and a temporary SQLite MLflow (parameter
checks, which need no server, are in ``test_parameters.py``)."""

from __future__ import annotations

import json
from pathlib import Path
from uuid import UUID

import pytest
from click.testing import CliRunner
from mlflow import MlflowClient
from prefect import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    FlowRunFilter,
    FlowRunFilterId,
)
from prefect.testing.utilities import prefect_test_harness

from flows.cli import main as cli
from flows.follow import NOISE, follow
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
    assert bench.data.tags["mlflow.note.content"].startswith("### ")
    row = summary["targets"][0]
    assert row["status"] == "ok" and row["errors"] == 0 and row["provenance"] == "measured-local"


def _flow_run_id(summary) -> UUID:
    return UUID(MlflowClient().get_run(summary["mlflow_run_id"]).data.tags["prefect.flow_run_id"])


@pytest.fixture(scope="module")
def two_targets(tracking_uri):
    """The summary of a run on two in-process targets, one level each."""
    return train_and_benchmark(
        dataset=TINY, epochs=2, hyperparameters={"dim": 16}, levels=[1, 2],
        targets=[{"name": "inproc-a", "deployer": "inprocess"},
                 {"name": "inproc-b", "deployer": "inprocess"}],
        level_seconds=0.2, warmup_seconds=0.05, experiment="flow-test")


def test_prefect_shows_a_task_per_target_and_a_summary_with_cost_and_recommendation(
        two_targets):
    summary = two_targets
    flow_run_id = _flow_run_id(summary)
    with get_client(sync_client=True) as client:
        tasks = client.read_task_runs(flow_run_filter=FlowRunFilter(
            id=FlowRunFilterId(any_=[flow_run_id])))
        artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])))
    assert {"benchmark-inproc-a", "benchmark-inproc-b"} <= {t.name for t in tasks}
    # in-process targets share this machine's cores: one after the other, and the flow says so
    assert summary["schedule"] == ("targets benchmarked one after the other: inproc-a, inproc-b "
                                   "measure on this machine, whose cores the load generator and "
                                   "every local target share")
    a, b = (next(t for t in tasks if t.name == f"benchmark-inproc-{x}") for x in "ab")
    assert a.end_time is not None and b.start_time is not None and a.end_time <= b.start_time
    by_key = {a.key: a for a in artifacts}
    table = by_key["benchmark-summary"]
    rows = json.loads(table.data) if isinstance(table.data, str) else table.data
    assert [r["target"] for r in rows] == ["inproc-a", "inproc-b"]
    assert {"provenance", "cost_per_1m_usd_at_saturation", "p95_ms_at_slo_level"} <= set(rows[0])
    assert summary["recommendation"] and summary["recommendation"] in (table.description or "")
    # a SQLite tracking store has no UI: no link artifact pointing nowhere
    assert "mlflow-run" not in by_key and summary["links"]["mlflow"] is None


def test_targets_all_on_real_aws_are_benchmarked_at_the_same_time(tracking_uri, monkeypatch):
    import functools

    import flows.train_and_benchmark as tab
    from bench import fanout

    # as if both were AWS endpoints: only the schedule is told so (their figures stay local)
    monkeypatch.setattr(tab, "schedule", functools.partial(
        fanout.schedule, source=lambda deployer: "measured-real"))
    summary = train_and_benchmark(
        dataset=TINY, epochs=1, hyperparameters={"dim": 16}, levels=[1, 2],
        targets=[{"name": "aws-a", "deployer": "inprocess"},
                 {"name": "aws-b", "deployer": "inprocess"}],
        level_seconds=0.3, warmup_seconds=0.05, experiment="flow-test")
    assert summary["schedule"].startswith("targets benchmarked in parallel, 2 at a time")
    assert [r["target"] for r in summary["targets"]] == ["aws-a", "aws-b"]
    assert all(r["status"] == "ok" for r in summary["targets"])
    bench = MlflowClient().get_run(summary["benchmark_run_id"])
    assert bench.data.tags["benchmark.schedule"] == summary["schedule"]
    with get_client(sync_client=True) as client:
        tasks = client.read_task_runs(flow_run_filter=FlowRunFilter(
            id=FlowRunFilterId(any_=[_flow_run_id(summary)])))
    a, b = (next(t for t in tasks if t.name == f"benchmark-aws-{x}") for x in "ab")
    assert a.start_time and a.end_time and b.start_time and b.end_time
    assert a.start_time < b.end_time and b.start_time < a.end_time  # they overlapped


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
    assert all("val_recall_20" in t.data.metrics for t in trials)
    assert {f"best.{k}" for k in ("lr", "dim", "dropout", "weight_decay")} <= set(parent.data.params)
    best = max(t.data.metrics["val_recall_20"] for t in trials)  # chosen on validation
    assert parent.data.metrics["best_val_recall_20"] == pytest.approx(best)
    # the journal persists the study: a second run continues it
    again = hpo(dataset=TINY, n_trials=1, epochs=1, study_name="t",
                storage_path=str(tmp_path / "journal.log"), experiment="hpo-test")
    assert again["trials_in_study"] == 5
    (own,) = client.search_runs([parent.info.experiment_id],
                                f"tags.mlflow.parentRunId = '{again['mlflow_run_id']}'")
    # the second run reports its own best trial, not the study's
    assert client.get_run(again["mlflow_run_id"]).data.metrics["best_val_recall_20"] == \
        pytest.approx(own.data.metrics["val_recall_20"])


@pytest.mark.parametrize(("args", "option"), [
    (["train", "--epochs", "0"], "--epochs"),
    (["benchmark", "--levels", "1,x"], "--levels"),
    (["benchmark", "--slo-ms", "-1"], "--slo-ms"),
    (["train", "--hyperparameters", "{not json"], "--hyperparameters"),
    (["train", "--train-on", "ec2"], "--train-on"),
    (["train", "--train-on", "sagemaker", "--training", '{"instance_count": 0}'], "--training"),
    (["hpo", "--train-on", "sagemaker", "--training", '{"instance_type": "x"}'], "--training"),
    (["benchmark", "--training", '{"spot": true}'], "--training"),
])
def test_cli_bad_arguments_name_the_option(args, option):
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2
    assert option in result.output


def test_following_a_run_prints_a_line_per_epoch_and_level_then_the_summary(two_targets):
    lines: list[str] = []
    run = follow(_flow_run_id(two_targets), timeout_s=60, out=lines.append, poll_s=0.2)
    assert run.state is not None and run.state.is_completed()
    text = "\n".join(lines)
    assert len([ln for ln in lines if "epoch " in ln and "Recall@20" in ln]) == 2
    for target in ("inproc-a", "inproc-b"):
        levels = [ln for ln in lines if ln.split()[1:2] == [f"benchmark-{target}"]
                  and " level " in f" {ln} "]
        assert len(levels) == 2, (target, text)
    assert text.count(NOISE) == 1 and lines[-1].endswith(f"flow{' ' * 22} {NOISE}")
    assert "\nniser v" in text  # the summary, printed as one block
