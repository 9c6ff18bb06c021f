"""Real cgroups around the SageMaker stand-in's scoring servers (root and cgroup v1 needed)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import mlflow
import pandas as pd
import psutil
import pytest

from deployers import procs, standins
from deployers.base import DeploymentFailed
from deployers.sagemaker import SageMakerDeployer
from deployers.standins import sagemaker_dataplane
from tests.deployers.test_sagemaker import CONTRACT_MODEL, NOTHING, SESSIONS, leftovers

ROOT = Path("/sys/fs/cgroup")
CONTROLLERS = ("cpu", "cpuacct", "cpuset", "memory")


def _cgroup_v1_writable() -> bool:
    return os.geteuid() == 0 and all(os.access(ROOT / c, os.W_OK) for c in CONTROLLERS) and (
        ROOT / "cpu" / "cpu.cfs_quota_us").is_file()


pytestmark = pytest.mark.skipif(
    not _cgroup_v1_writable() or len(os.sched_getaffinity(0)) < 2,
    reason="needs root, a writable cgroup v1 tree (cpu, cpuacct, cpuset, memory) and 2 cores")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("models") / "m"
    mlflow.pyfunc.save_model(str(path), python_model=str(CONTRACT_MODEL),
                             input_example=(pd.DataFrame({"session": [[1, 2]]}), {"k": 5}))
    return str(path)


def _groups_of(pid: int) -> dict[str, str]:
    """Controller -> cgroup path of process ``pid``."""
    out = {}
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        for c in controllers.split(","):
            out[c] = path
    return out


def _leftover_groups(prefix: str) -> list[Path]:
    return [d for c in CONTROLLERS for d in (ROOT / c / "niser-mlops").glob(f"{prefix}*")]


@pytest.mark.slow
def test_a_served_c5_large_runs_with_its_workers_in_a_2_cpu_4_gib_group_gone_after_teardown(
        moto_server: str, model_dir: str) -> None:
    dep = SageMakerDeployer()
    ep = dep.deploy(model_dir, {"instance_type": "ml.c5.large", "model_server_workers": 2},
                    name="ep-shaped")
    try:
        served = standins.current().sagemaker().served("ep-shaped")
        [server] = served.servers
        [group] = served.groups
        cpu = ROOT / "cpu" / "niser-mlops" / group.name
        assert (cpu / "cpu.cfs_quota_us").read_text().strip() == "200000"
        assert (cpu / "cpu.cfs_period_us").read_text().strip() == "100000"
        memory = ROOT / "memory" / "niser-mlops" / group.name
        assert int((memory / "memory.limit_in_bytes").read_text()) == 4 * 2**30
        tree = psutil.Process(server.record.pid)
        processes = [tree, *tree.children(recursive=True)]
        assert len(processes) >= 3  # mlflow CLI -> uvicorn supervisor -> 2 workers
        for proc in processes:
            where = _groups_of(proc.pid)
            assert {where[c] for c in CONTROLLERS} == {f"/niser-mlops/{group.name}"}, proc
        details = dep.describe("ep-shaped").details
        assert (details["shaping"], details["cpus"], details["memory_mb"]) == (
            "cgroup-v1", 2, 4096)
        before = dep.usage("ep-shaped")
        for _ in range(20):
            assert ep.invoke(SESSIONS, k=3).items
        after = dep.usage("ep-shaped")
        assert before is not None and after is not None
        assert after.used_cpu_s > before.used_cpu_s and after.quota_cpus == 2
    finally:
        dep.teardown("ep-shaped")
    assert not any(d.exists() for d in group.dirs)
    assert not procs.alive(server.record)


@pytest.mark.slow
def test_a_server_that_dies_at_start_leaves_no_group_and_nothing_in_aws(
        moto_server: str, model_dir: str, monkeypatch: pytest.MonkeyPatch) -> None:
    def dies(model_uri: str, port: int, workers: int | None = None) -> list[str]:
        return [sys.executable, "-c", "import sys; sys.exit(3)"]

    monkeypatch.setattr(sagemaker_dataplane.procs, "scoring_server_argv", dies)
    with pytest.raises(DeploymentFailed, match="exited with code 3"):
        SageMakerDeployer().deploy(model_dir, {"instance_type": "ml.c5.large"}, name="ep-dies")
    assert _leftover_groups("sagemaker-ep-dies-") == []
    assert leftovers() == NOTHING
