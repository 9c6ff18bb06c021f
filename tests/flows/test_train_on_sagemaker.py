"""``train-and-benchmark`` with ``train_on="sagemaker"`` on the embedded defaults: a real
(temporary) Prefect server, a temporary SQLite MLflow, the moto server as SageMaker's control
plane and the local training stand-in running NISER's entry point."""

from __future__ import annotations

import asyncio
from pathlib import Path
from uuid import UUID

import pytest
from mlflow import MlflowClient
from prefect import get_client
from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
from prefect.testing.utilities import prefect_test_harness

from deployers import aws
from flows.hpo import hpo
from flows.train_and_benchmark import train_and_benchmark
from niser.inference import Recommender
from niser.raw import load_dataset
from niser.train import TrainConfig, train
from tests.deployers.conftest import (  # noqa: F401 (fixtures)
    _fresh_moto_state,
    aws_calls,
    moto_server,
)

TINY = "synthetic:n_items=80,n_sessions=400"
HPS = {"dim": 16, "seed": 5, "device": "cpu"}


@pytest.fixture(scope="module", autouse=True)
def prefect_server():
    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(autouse=True)
def _private_training_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NISER_TRAINING_STATE_DIR", str(tmp_path / "training"))


def _versions() -> int:
    return len(MlflowClient().search_model_versions("name='niser'"))


def _logs(flow_run_id: str) -> list[str]:
    async def read() -> list[str]:
        async with get_client() as client:
            logs = await client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(
                any_=[UUID(flow_run_id)])))
        return [log.message for log in logs]
    return asyncio.run(read())


def test_training_on_sagemaker_registers_the_model_a_local_training_would_give(
        moto_server, tracking_uri):  # noqa: F811
    summary = train_and_benchmark(dataset=TINY, epochs=1, hyperparameters=HPS, targets=[],
                                  experiment="train-on-sagemaker", train_on="sagemaker",
                                  training={"instance_type": "ml.c5.xlarge"})
    client = MlflowClient()
    run = client.get_run(summary["mlflow_run_id"])
    job = run.data.tags["training.job_name"]
    described = aws.client("sagemaker").describe_training_job(TrainingJobName=job)
    assert described["ResourceConfig"]["InstanceType"] == "ml.c5.xlarge"
    assert run.data.metrics["training_cost_usd"] > 0
    assert run.data.tags["training_cost.basis"].startswith("would-be")
    assert run.data.tags["training.provenance"] == "measured-local"
    assert run.data.params["train.seed"] == "5"  # the job logged into the flow's run
    bucket = run.data.tags["training.dataset_uri"].removeprefix("s3://").split("/")[0]
    keys = {o["Key"] for o in aws.client("s3").list_objects_v2(Bucket=bucket)["Contents"]}
    assert run.data.tags["training.dataset_uri"].split(f"{bucket}/")[1] in keys
    assert any(k.endswith(f"{job}/output/model.tar.gz") for k in keys)
    version = client.get_model_version("niser", summary["model_version"])
    assert version.run_id == run.info.run_id
    assert any(line.startswith("epoch 1/1:") for line in _logs(run.data.tags["prefect.flow_run_id"]))

    data = load_dataset(TINY)
    local = Recommender.from_training(train(data, TrainConfig(epochs=1, **HPS),
                                            progress=False).model,
                                      TrainConfig(epochs=1, **HPS), data)
    import mlflow.pyfunc

    served = mlflow.pyfunc.load_model(f"models:/niser/{version.version}")
    sessions = data.vocab.decode(data.test.items[:40]).reshape(20, 2).tolist()
    rows = served.predict({"session": sessions}, params={"k": 20})
    assert [list(r["items"]) for r in rows] == [r.items for r in local.recommend(sessions, 20)]


def test_hpo_trains_each_trial_in_a_job_and_registers_the_best(moto_server, tracking_uri,  # noqa: F811
                                                                tmp_path):
    summary = hpo(dataset=TINY, n_trials=2, epochs=1, study_name="sm", seed=1,
                  storage_path=str(tmp_path / "journal.log"), experiment="hpo-sagemaker",
                  hyperparameters={"device": "cpu"}, train_on="sagemaker")
    client = MlflowClient()
    parent = client.get_run(summary["mlflow_run_id"])
    trials = client.search_runs([parent.info.experiment_id],
                                f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    jobs = {t.data.tags["training.job_name"] for t in trials}
    assert len(trials) == 2 and len(jobs) == 2 and all(
        "val_recall_20" in t.data.metrics for t in trials)
    assert parent.data.metrics["training_cost_usd"] == pytest.approx(
        sum(t.data.metrics["training_cost_usd"] for t in trials))
    assert parent.data.params["train_on"] == "sagemaker"
    version = client.get_model_version("niser", summary["model_version"])
    assert version.run_id == parent.info.run_id


def test_a_failing_training_job_ends_the_flow_with_its_reason_and_registers_nothing(
        moto_server, tracking_uri):  # noqa: F811
    before = _versions()
    with pytest.raises(RuntimeError, match=r"training job niser-train-\S+ Failed: "
                                           r"AlgorithmError: .*gpu"):
        train_and_benchmark(dataset=TINY, epochs=1, hyperparameters={**HPS, "device": "gpu"},
                            targets=[], experiment="train-on-sagemaker", train_on="sagemaker")
    assert _versions() == before


@pytest.mark.parametrize(("training", "field"), [
    ({"instance_type": "ml.p9.huge"}, "instance_type"),
    ({"instance_count": 0}, "instance_count"),
    ({"max_runtime_s": 0}, "max_runtime_s"),
])
def test_bad_training_settings_are_refused_before_any_aws_call(aws_calls, training,  # noqa: F811
                                                               field):
    with pytest.raises(Exception, match=field):
        train_and_benchmark(dataset=TINY, epochs=1, targets=[], train_on="sagemaker",
                            training=training)
    assert aws_calls == []


def test_training_settings_with_local_training_are_refused_naming_the_parameter(tracking_uri):
    with pytest.raises(ValueError, match=r"training: .*train_on='sagemaker'"):
        train_and_benchmark(dataset=TINY, epochs=1, targets=[], train_on="local",
                            training={"instance_type": "ml.c5.xlarge"})
