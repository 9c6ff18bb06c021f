"""SageMaker instance shapes on the local stand-in: the refusal of a shape larger than this
machine, and the cgroups of each endpoint's servers, kept on a fake cgroup v1 tree.

The bookkeeping tests deploy through the real control plane (a moto server) with the stand-in's
scoring servers replaced by records of the group each would have run in, so no root is needed;
``test_sagemaker_cgroups.py`` runs real servers in real groups.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import mlflow
import pandas as pd
import pytest

from deployers import aws, procs, standins
from deployers.base import DeploymentFailed, SettingsError
from deployers.sagemaker import SageMakerDeployer, standin
from deployers.standins import shaping
from deployers.standins.sagemaker_dataplane import DataPlane, ScoringServer
from deployers.standins.shaping import Group, Shape
from tests.deployers.test_sagemaker import CONTRACT_MODEL, NOTHING, leftovers
from tests.deployers.test_shaping import _fake_rmdir

CORES = len(os.sched_getaffinity(0))
FIRST_TWO = ",".join(str(c) for c in sorted(os.sched_getaffinity(0))[:2])


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("models") / "m"
    mlflow.pyfunc.save_model(str(path), python_model=str(CONTRACT_MODEL),
                             input_example=(pd.DataFrame({"session": [[1, 2]]}), {"k": 5}))
    return str(path)


# ---- refusal ------------------------------------------------------------------------------

@pytest.mark.skipif(CORES >= 4, reason=f"{CORES} cores: an ml.c5.xlarge (4 vCPUs) fits here")
def test_xlarge_on_the_local_standin_is_refused_before_any_aws_call(
        moto_server: str, aws_calls: list[tuple[str, str]]) -> None:
    with pytest.raises(SettingsError) as err:
        SageMakerDeployer().deploy("models:/whatever/1", {"instance_type": "ml.c5.xlarge"})
    message = str(err.value)
    assert "the shape needs 4 vCPUs" in message and f"this machine has {CORES} cores" in message
    assert "never runs an endpoint smaller than asked" in message
    assert "prediction from measured smaller shapes" in message and "ml.c5.large" in message
    assert aws_calls == []
    assert leftovers() == NOTHING


def test_the_same_settings_against_aws_are_accepted(
        moto_server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    raw = {"instance_type": "ml.c5.4xlarge", "instance_count": 2}
    dep = SageMakerDeployer()
    assert dep.parse_settings({**raw, "local": False}).instance_type == "ml.c5.4xlarge"
    monkeypatch.delenv("AWS_ENDPOINT_URL")  # AWS's own endpoint: local defaults to off
    assert dep.parse_settings(raw).instance_count == 2


def test_serverless_on_the_local_standin_is_never_refused_for_cpus(moto_server: str) -> None:
    s = SageMakerDeployer().parse_settings({"serverless": {"memory_mb": 6144}})
    assert s.serverless is not None and s.serverless.memory_mb == 6144


# ---- groups on a fake cgroup v1 tree --------------------------------------------------------

@pytest.fixture
def v1_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fake cgroup v1 tree that ``shaping.backend()`` returns, with cgroupfs's rmdir."""
    root = tmp_path / "cgroup"
    for controller in ("cpu", "cpuacct", "cpuset", "memory"):
        (root / controller).mkdir(parents=True)
    (root / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    (root / "cpuset" / "cpuset.cpus").write_text(f"0-{max(os.sched_getaffinity(0))}\n")
    (root / "cpuset" / "cpuset.mems").write_text("0\n")
    monkeypatch.setattr(shaping, "_rmdir", _fake_rmdir)
    monkeypatch.setattr(shaping, "backend", lambda: shaping.V1(root))
    return root


@dataclass
class Starts:
    """The groups the stand-in's servers were started in, in order; a start fails at
    ``fail_at`` (its index) when set."""

    groups: list[Group | None] = field(default_factory=list)
    fail_at: int | None = None


@pytest.fixture
def started(monkeypatch: pytest.MonkeyPatch) -> Starts:
    """Replace the scoring servers and nginx routes: each server start records its group."""
    starts = Starts()

    def start(cls: type[ScoringServer], model_path: str, log: Path, workers: int | None = None,
              env: dict[str, str] | None = None, timeout_s: float = 120.0,
              group: Group | None = None, endpoint: str | None = None) -> ScoringServer:
        assert Path(model_path, "MLmodel").is_file()  # the archive was read back from S3
        if len(starts.groups) == starts.fail_at:
            raise RuntimeError("injected start-up failure")
        starts.groups.append(group)
        return ScoringServer(model_path, 40000 + len(starts.groups),
                             procs.ProcessRecord(0, 0, 0.0, str(log), ()), group)

    monkeypatch.setattr(ScoringServer, "start", classmethod(start))
    monkeypatch.setattr(ScoringServer, "stop", lambda self: None)
    monkeypatch.setattr(DataPlane, "route", lambda self, name, port, variant="": None)
    monkeypatch.setattr(DataPlane, "unroute", lambda self, name: None)
    return starts


def _read(path: Path) -> str:
    return path.read_text().strip()


def _stat(group: Group, periods: int, throttled: int, used_s: float) -> None:
    (group.dirs[0] / "cpu.stat").write_text(
        f"nr_periods {periods}\nnr_throttled {throttled}\nthrottled_time 0\n")
    (group.dirs[1] / "cpuacct.usage").write_text(f"{int(used_s * 1e9)}\n")


@pytest.mark.skipif(CORES < 2, reason="an ml.c5.large needs 2 cores")
def test_each_instance_is_a_server_in_its_own_group_shaped_like_the_instance(
        moto_server: str, model_dir: str, v1_root: Path, started: Starts,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(standin, "machine_cores", lambda: 4)  # room for 2 x 2 vCPUs
    dep = SageMakerDeployer()
    dep.deploy(model_dir, {"instance_type": "ml.c5.large", "instance_count": 2}, name="ep-two")
    assert len(started.groups) == 2 and None not in started.groups
    names = [g.name for g in started.groups if g is not None]
    assert len(set(names)) == 2 and all(n.startswith("sagemaker-ep-two-") for n in names)
    for name in names:
        assert _read(v1_root / "cpu/niser-mlops" / name / "cpu.cfs_quota_us") == "200000"
        assert _read(v1_root / "cpuset/niser-mlops" / name / "cpuset.cpus") == FIRST_TWO
        assert _read(v1_root / "memory/niser-mlops" / name / "memory.limit_in_bytes") == str(
            4 * 2**30)
    details = dep.describe("ep-two").details
    assert {k: details[k] for k in ("shaping", "cpus", "memory_mb", "servers", "cgroups")} == {
        "shaping": "cgroup-v1", "cpus": 2, "memory_mb": 4096, "servers": 2, "cgroups": names}
    assert dep.capacity("ep-two") is None
    dep.teardown("ep-two")
    assert not list(v1_root.glob("*/niser-mlops/sagemaker-ep-two-*"))
    assert dep.usage("ep-two") is None


def test_usage_sums_the_groups_and_keeps_a_replaced_groups_last_reading(
        moto_server: str, model_dir: str, v1_root: Path, started: Starts) -> None:
    dep = SageMakerDeployer()
    dep.deploy(model_dir, {"instance_type": "ml.c5.large"}, name="ep-bg")
    first = started.groups[0]
    assert first is not None
    _stat(first, periods=10, throttled=2, used_s=1.5)
    usage = dep.usage("ep-bg")
    assert usage is not None
    assert (usage.shaping, usage.groups, usage.live, usage.quota_cpus) == ("cgroup-v1", 1, 1, 2)
    assert (usage.periods, usage.throttled_periods, usage.used_cpu_s) == (10, 2, 1.5)

    serving = standins.current().sagemaker()  # a blue/green replacement, as update() makes it
    model = aws.client("sagemaker").list_models()["Models"][0]["ModelName"]
    serving.serve("ep-bg", model, "AllTraffic", None, Shape(cpus=2, cores=2, memory_mb=4096))
    second = started.groups[1]
    assert second is not None and second.name != first.name
    assert not any(d.exists() for d in first.dirs)
    _stat(second, periods=4, throttled=1, used_s=0.25)
    usage = dep.usage("ep-bg")
    assert usage is not None
    assert (usage.groups, usage.live, usage.periods, usage.used_cpu_s) == (2, 1, 14, 1.75)
    dep.teardown("ep-bg")
    assert not any(d.exists() for d in second.dirs)


def test_a_serverless_server_is_limited_by_its_memory_only(
        moto_server: str, model_dir: str, v1_root: Path, started: Starts) -> None:
    dep = SageMakerDeployer()
    dep.deploy(model_dir, {"serverless": {"memory_mb": 3072}}, name="ep-sl")
    [group] = started.groups
    assert group is not None
    assert _read(group.dirs[-1] / "memory.limit_in_bytes") == str(3072 * 2**20)
    assert not (group.dirs[0] / "cpu.cfs_quota_us").exists()  # no quota written
    details = dep.describe("ep-sl").details
    assert (details["shaping"], details["cpus"], details["memory_mb"]) == ("cgroup-v1", None,
                                                                          3072)
    _stat(group, periods=0, throttled=0, used_s=0.5)
    usage = dep.usage("ep-sl")
    assert usage is not None and usage.quota_cpus is None and usage.used_cpu_s == 0.5
    dep.teardown("ep-sl")


def test_a_failed_serve_removes_the_groups_it_made_and_everything_else(
        moto_server: str, model_dir: str, v1_root: Path, started: Starts,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(standin, "machine_cores", lambda: 4)  # room for 2 x 2 vCPUs
    started.fail_at = 1  # the second instance fails to start
    with pytest.raises(DeploymentFailed, match="injected start-up failure"):
        SageMakerDeployer().deploy(model_dir, {"instance_count": 2}, name="ep-half")
    assert len(started.groups) == 1
    assert not list(v1_root.glob("*/niser-mlops/sagemaker-ep-half-*"))
    assert leftovers() == NOTHING
    assert "ep-half" not in standins.current().sagemaker().endpoints()


def test_without_cgroups_the_servers_run_unshaped_and_usage_is_none(
        moto_server: str, model_dir: str, monkeypatch: pytest.MonkeyPatch,
        started: Starts) -> None:
    monkeypatch.setattr(shaping, "backend", lambda: None)
    dep = SageMakerDeployer()
    dep.deploy(model_dir, {"instance_type": "ml.c5.large"}, name="ep-plain")
    assert started.groups == [None]
    details = dep.describe("ep-plain").details
    assert (details["shaping"], details["cpus"], details["cgroups"]) == ("none", None, [])
    assert dep.usage("ep-plain") is None
    dep.teardown("ep-plain")


def test_against_aws_usage_and_capacity_are_none_and_describe_says_no_shaping(
        moto_server: str, model_dir: str) -> None:
    aws.client("ecr").create_repository(repositoryName="mlflow-pyfunc")
    dep = SageMakerDeployer()
    dep.deploy(model_dir, {"instance_type": "ml.c5.xlarge", "local": False}, name="ep-aws")
    assert dep.usage("ep-aws") is None and dep.capacity("ep-aws") is None
    assert "shaping" not in dep.describe("ep-aws").details
    dep.teardown("ep-aws")



def test_instances_that_together_need_more_cores_than_the_machine_are_refused(
        moto_server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(standin, "machine_cores", lambda: 2)
    with pytest.raises(SettingsError, match=r"instance_count=2 x instance_type='ml.c5.large': "
                       r"the shape needs 4 vCPUs and this machine has \d+ cores") as err:
        SageMakerDeployer().parse_settings({"instance_type": "ml.c5.large", "instance_count": 2})
    assert "nor lets its instances share cores" in str(err.value)
