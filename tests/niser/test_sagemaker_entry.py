"""The SageMaker training contract of ``niser.sagemaker_entry``, run as a job would run it (the
``SM_*`` environment, a prepared dataset in the train channel), without AWS; and the prepared
dataset file it reads."""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
from pathlib import Path

import mlflow
import numpy as np
import pytest
from mlflow import MlflowClient

from niser import sagemaker_entry as entry
from niser.data import DataError, carve_validation, load_prepared, save_prepared
from niser.inference import Recommender
from niser.raw import load_dataset
from tests.conftest import tiny_session_data

HPS = {"epochs": 1, "dim": 16, "batch_size": 50, "device": "cpu", "seed": 3}


def test_prepared_dataset_file_reads_back_equal_with_and_without_validation(tmp_path):
    for data in (tiny_session_data(), carve_validation(tiny_session_data())):
        back = load_dataset(save_prepared(data, tmp_path / f"{data.valid is None}.npz"))
        assert back.fingerprint() == data.fingerprint() and back.name == data.name
        assert back.vocab == data.vocab and (back.valid is None) == (data.valid is None)


def test_prepared_dataset_refuses_other_files_naming_them(tmp_path):
    with pytest.raises(ValueError, match=r"ends in \.npz"):
        save_prepared(tiny_session_data(), tmp_path / "data.pkl")
    np.savez(tmp_path / "other.npz", x=np.arange(3))
    with pytest.raises(DataError, match=r"other\.npz.*missing"):
        load_prepared(tmp_path / "other.npz")


def _job_env(tmp_path: Path, hps: dict[str, object], run_id: str | None = None) -> dict[str, str]:
    channel = tmp_path / "input" / "data" / "train"
    channel.mkdir(parents=True)
    save_prepared(tiny_session_data(), channel / "tiny.npz")
    env = {"SM_CHANNEL_TRAIN": str(channel), "SM_HPS": json.dumps(hps),
           "SM_MODEL_DIR": str(tmp_path / "model"), "SM_OUTPUT_DIR": str(tmp_path / "output"),
           "SM_OUTPUT_DATA_DIR": str(tmp_path / "output" / "data"), "SM_NUM_GPUS": "0"}
    if run_id:
        env["MLFLOW_RUN_ID"] = run_id
    return env


def test_a_job_trains_saves_the_model_logs_into_the_run_and_registers(tracking_uri, tmp_path):
    with mlflow.start_run() as run:
        pass
    env = _job_env(tmp_path, {**HPS, "sagemaker_program": "train.py"}, run.info.run_id)
    assert entry.main(env) == 0
    result = json.loads((tmp_path / "output" / "data" / entry.RESULT_FILE).read_text())
    assert result["run_id"] == run.info.run_id and result["epochs_run"] == 1
    logged = MlflowClient().get_run(run.info.run_id).data
    assert logged.params["train.seed"] == "3" and "recall_20" in logged.metrics
    version = MlflowClient().get_model_version("niser", result["registration"]["version"])
    assert version.run_id == run.info.run_id
    saved = Recommender.load(tmp_path / "model")
    served = mlflow.pyfunc.load_model(f"models:/niser/{version.version}")
    sessions = [[100000, 100007], [100014]]
    rows = served.predict({"session": sessions}, params={"k": 20})
    assert [list(r["items"]) for r in rows] == [r.items for r in saved.recommend(sessions, 20)]
    assert not (tmp_path / "output" / "failure").exists()


@pytest.mark.parametrize(("hps", "reason"), [
    ({**HPS, "lr": -1}, r"^hyperparameter lr=-1: Input should be greater than 0"),
    ({**HPS, "learning_rate": 0.1}, r"^hyperparameter learning_rate=0\.1: Extra inputs"),
])
def test_a_bad_hyperparameter_fails_the_job_with_its_name_and_registers_nothing(
        tracking_uri, tmp_path, hps, reason):
    before = len(MlflowClient().search_model_versions("name='niser'"))
    env = _job_env(tmp_path, hps)
    assert entry.main(env) == 1
    failure = (tmp_path / "output" / "failure").read_text()
    assert len(failure) <= entry.MAX_FAILURE_REASON
    assert __import__("re").match(reason, failure), failure
    assert len(MlflowClient().search_model_versions("name='niser'")) == before
    assert not (tmp_path / "model").exists()


def test_a_channel_without_exactly_one_dataset_file_fails_naming_what_it_found(tmp_path):
    env = _job_env(tmp_path, HPS)
    save_prepared(tiny_session_data(seed=1), Path(env["SM_CHANNEL_TRAIN"]) / "second.npz")
    assert entry.main(env) == 1
    assert "exactly one prepared dataset file" in (tmp_path / "output" / "failure").read_text()


def test_gpus_of_the_instance_choose_cuda_unless_a_device_is_given():
    assert entry.hyperparameters({"SM_HPS": '{"dim": 8}', "SM_NUM_GPUS": "1"})["device"] == "cuda"
    assert entry.hyperparameters({"SM_HPS": '{"device": "cpu"}', "SM_NUM_GPUS": "4"}) == {
        "device": "cpu"}
    assert entry.hyperparameters({"SM_HPS": '{"sagemaker_program": "x"}'}) == {}


def test_source_archive_is_reproducible_and_runs_its_launcher(tmp_path):
    a = entry.source_archive(tmp_path / "a.tar.gz")
    b = entry.source_archive(tmp_path / "b.tar.gz")
    assert a.read_bytes() == b.read_bytes()
    with tarfile.open(a) as tar:
        names = tar.getnames()
        reqs = tar.extractfile("requirements.txt").read().decode().split()  # type: ignore[union-attr]
        tar.extractall(tmp_path / "code", filter="data")
    assert {"train.py", "requirements.txt", "niser/sagemaker_entry.py", "niser/train.py"} <= set(
        names)
    assert any(r.startswith("mlflow==") for r in reqs)
    assert not any(r.startswith("torch") for r in reqs)  # the container brings its own build
    # the launcher imports the packed package (not this checkout) and fails the job on bad data
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, "train.py"], cwd=tmp_path / "code", timeout=120,
                          env={"SM_CHANNEL_TRAIN": str(tmp_path / "none"), "SM_OUTPUT_DIR":
                               str(out), "PATH": "/usr/bin:/bin"}, capture_output=True, text=True)
    assert done.returncode == 1, done.stderr
    assert "is not a folder" in (out / "failure").read_text()
