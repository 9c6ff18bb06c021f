"""SageMaker training jobs against a real moto server (control plane) with the local training
stand-in running the job: settings refused before any AWS call, the S3 layout, the role, the
logs, failure reasons, interruption, spot checkpoints. The job's program here is a small script
of the test (model-agnostic, like the deployer); ``tests/flows/test_train_on_sagemaker.py`` runs
NISER's own entry point."""

from __future__ import annotations

import io
import json
import sys
import tarfile
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from deployers import aws, ownership, standins
from deployers.base import DeployerError
from deployers.ownership import Owner
from deployers.sagemaker import training
from deployers.sagemaker.training import TrainingSettings

PROGRAM = '''
import json, os, pathlib, sys, time
hps = json.loads(os.environ["SM_HPS"])
print("hello from the job", flush=True)
checkpoints = os.environ.get("NISER_CHECKPOINT_DIR")
if checkpoints:
    pathlib.Path(checkpoints, "last.pt").write_text("epoch 1")
time.sleep(hps.get("sleep", 0))
if hps.get("fail"):
    pathlib.Path(os.environ["SM_OUTPUT_DIR"], "failure").write_text("bad value: fail=%s" % hps["fail"])
    sys.exit(1)
pathlib.Path(os.environ["SM_MODEL_DIR"], "model.txt").write_text("weights")
pathlib.Path(os.environ["SM_OUTPUT_DATA_DIR"], "result.json").write_text(json.dumps({
    "files": sorted(os.listdir(os.environ["SM_CHANNEL_TRAIN"])), "hps": hps,
    "given": os.environ.get("FROM_CALLER"), "leaked": os.environ.get("NOT_PASSED")}))
'''


@pytest.fixture
def job_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """A dataset file and a source archive holding ``PROGRAM`` as ``train.py``."""
    monkeypatch.setenv("NISER_TRAINING_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("NOT_PASSED", "a variable of the caller the job must not see")
    dataset = tmp_path / "data.npz"
    dataset.write_bytes(b"not really a dataset, the program only lists it")
    source = tmp_path / "sourcedir.tar.gz"
    with tarfile.open(source, "w:gz") as tar:
        blob = PROGRAM.encode()
        info = tarfile.TarInfo("train.py")
        info.size = len(blob)
        tar.addfile(info, io.BytesIO(blob))
    return dataset, source


def _run(files: tuple[Path, Path], hps: dict[str, Any], lines: list[str] | None = None,
         **settings: Any) -> training.JobOutcome:
    out = [] if lines is None else lines
    return training.run_job(files[0], files[1], "train.py", hps, {"FROM_CALLER": "yes"},
                            TrainingSettings(**settings), Owner("test-training"),
                            "2.13.0", out.append)


def _keys(bucket: str) -> list[str]:
    found = aws.client("s3").list_objects_v2(Bucket=bucket).get("Contents", [])
    return sorted(o["Key"] for o in found)


@pytest.mark.parametrize(("settings", "field"), [
    ({"instance_type": "ml.p9.huge"}, "instance_type"),
    ({"instance_type": "ml.c5.large"}, "instance_type"),  # not offered for training
    ({"instance_count": 0}, "instance_count"),
    ({"max_runtime_s": 0}, "max_runtime_s"),
    ({"spot": True, "max_runtime_s": 600, "max_wait_s": 300}, "max_wait_s"),
    ({"max_wait_s": 300}, "max_wait_s"),
    ({"image_uri": "python:3.11"}, "image_uri"),
    ({"role_arn": "my-role"}, "role_arn"),
    ({"volume": 30}, "volume"),
])
def test_bad_settings_are_refused_before_any_aws_call_naming_the_field(aws_calls, settings,
                                                                       field):
    with pytest.raises(ValidationError, match=field):
        TrainingSettings(**settings)
    assert aws_calls == []


def test_a_job_runs_with_the_training_contract_and_leaves_its_archives_on_s3(moto_server,
                                                                             job_files):
    lines: list[str] = []
    out = _run(job_files, {"epochs": 2, "lr": 0.001, "name": "x"}, lines,
               instance_type="ml.c5.xlarge", instance_count=2)
    assert out.status == "Completed" and out.local and out.failure_reason == ""
    assert out.result == {"files": ["data.npz"], "given": "yes", "leaked": None,
                          "hps": {"epochs": 2, "lr": 0.001, "name": "x",
                                  "sagemaker_program": "train.py",
                                  "sagemaker_submit_directory": out.inputs["source"],
                                  "sagemaker_region": "us-east-1"}}
    described = aws.client("sagemaker").describe_training_job(TrainingJobName=out.name)
    assert described["ResourceConfig"]["InstanceType"] == "ml.c5.xlarge"
    assert described["AlgorithmSpecification"]["TrainingImage"] == training.LOCAL_IMAGE
    assert out.billable_seconds >= 2 and out.billable_seconds % 2 == 0  # 2 instances
    bucket = out.inputs["train"].removeprefix("s3://").split("/")[0]
    prefix = f"{training.PREFIX}/jobs/{out.name}/output/"
    keys = _keys(bucket)
    assert out.inputs["train"].split(bucket + "/")[1] in keys
    assert {prefix + "model.tar.gz", prefix + "output.tar.gz"} <= set(keys)
    model = aws.client("s3").get_object(Bucket=bucket, Key=prefix + "model.tar.gz")["Body"].read()
    with tarfile.open(fileobj=io.BytesIO(model)) as tar:
        assert tar.getnames() == ["model.txt"]
    assert "hello from the job" in lines
    assert any(line.endswith("Completed (Completed)") for line in lines)
    assert aws.client("iam").list_roles()["Roles"] == []  # the job's role went with the job
    assert json.loads((training_state(out.name)).read_text())["status"] == "Completed"


def training_state(name: str) -> Path:
    return standins.sagemaker_training.state_dir() / f"{name}.json"


def test_the_same_dataset_is_not_uploaded_twice(moto_server, job_files):
    first: list[str] = []
    second: list[str] = []
    a, b = _run(job_files, {}, first), _run(job_files, {}, second)
    assert a.inputs["train"] == b.inputs["train"]
    assert first[0].startswith("dataset uploaded to ")
    assert second[0] == f"dataset already at {a.inputs['train']}"


def test_a_failing_script_fails_the_job_with_its_reason_and_no_model(moto_server, job_files):
    out = _run(job_files, {"fail": 7})
    assert out.status == "Failed" and out.result is None
    assert out.failure_reason == "AlgorithmError: bad value: fail=7"
    bucket = out.inputs["train"].removeprefix("s3://").split("/")[0]
    assert not any(k.endswith(f"{out.name}/output/model.tar.gz") for k in _keys(bucket))
    assert aws.client("iam").list_roles()["Roles"] == []


def test_an_interrupted_wait_stops_the_job_and_deletes_its_role(moto_server, job_files):
    started: list[str] = []

    def on_line(line: str) -> None:
        started.append(line)
        if line == "hello from the job":
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        training.run_job(job_files[0], job_files[1], "train.py", {"sleep": 120}, {},
                         TrainingSettings(), Owner("test-training"), "2.13.0", on_line)
    name = next(line.split()[2] for line in started if line.startswith("training job "))
    local = standins.current().training()
    local.wait(name, 30)
    job = local.status(name)
    assert job is not None and job.status == "Stopped" and job.ended is not None
    assert [p for p in ownership.marked_processes() if p.deployment == name] == []
    assert aws.client("iam").list_roles()["Roles"] == []


def test_spot_training_waits_longer_and_keeps_checkpoints_on_s3(moto_server, job_files):
    out = _run(job_files, {}, spot=True, max_runtime_s=600)
    request = training.create_request("n", TrainingSettings(spot=True, max_runtime_s=600),
                                      "img", "role", "s3://b/t/", "s3://b/s", "p", "b", {}, {},
                                      {})
    assert request["StoppingCondition"] == {"MaxRuntimeInSeconds": 600,
                                            "MaxWaitTimeInSeconds": 1200}
    assert request["EnableManagedSpotTraining"] is True
    assert request["CheckpointConfig"]["LocalPath"] == training.CHECKPOINT_PATH
    bucket = out.inputs["train"].removeprefix("s3://").split("/")[0]
    assert f"{training.PREFIX}/checkpoints/{out.name}/last.pt" in _keys(bucket)


def test_without_the_sdk_a_real_account_needs_an_image_and_the_stand_in_records_its_own(
        monkeypatch):
    for module in ("sagemaker", "sagemaker.core"):  # the aws extra not installed
        monkeypatch.setitem(sys.modules, module, None)
    s = TrainingSettings()
    assert training.image_uri(s, "us-east-1", "2.13.0", local=True) == training.LOCAL_IMAGE
    with pytest.raises(DeployerError, match=r"training\.image_uri is needed"):
        training.image_uri(s, "us-east-1", "2.13.0", local=False)
    given = "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-training:2.8-cpu-py312"
    assert training.image_uri(TrainingSettings(image_uri=given), "us-east-1", "2.13.0",
                              local=False) == given


def test_with_the_sdk_the_image_is_the_newest_pytorch_training_container_up_to_torch():
    pytest.importorskip("sagemaker", reason="the sagemaker SDK (aws extra) is not installed")
    uri = training.image_uri(TrainingSettings(instance_type="ml.g4dn.xlarge"), "us-east-1",
                             "2.13.0", local=False)
    assert "pytorch-training:" in uri and "gpu" in uri
