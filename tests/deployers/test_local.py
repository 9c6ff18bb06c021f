"""The local deployer: real ``mlflow models serve`` processes, and nginx in front of several."""

from __future__ import annotations

import json
import os
import re
import textwrap
from collections import Counter
from pathlib import Path

import mlflow
import pandas as pd
import psutil
import pytest

from deployers.base import DeploymentFailed, SettingsError
from deployers.http import HttpInvoker
from deployers.local import LocalDeployer
from deployers.local import deployer as local_module
from deployers.standins import shaping

SESSIONS = [[100_000, 100_007, 100_014], [100_021], [100_035, 100_000], [999_999_999]]

PROBE = textwrap.dedent('''
    """Answers with the serving worker's torch intra-op threads and environment."""
    import os

    import mlflow
    import pandas as pd
    import torch


    class Probe(mlflow.pyfunc.PythonModel):
        def predict(self, context, model_input, params=None):
            n = len(model_input)
            return pd.DataFrame({
                "items": [[torch.get_num_threads()]] * n, "scores": [[0.0]] * n,
                "omp": [os.environ.get("OMP_NUM_THREADS", "")] * n, "pid": [os.getpid()] * n,
            })


    mlflow.models.set_model(Probe())
''')


@pytest.fixture
def deployer(tmp_path: Path) -> LocalDeployer:
    return LocalDeployer(state_dir=tmp_path / "state")


def _tree(pids: list[int]) -> list[psutil.Process]:
    """The processes ``pids`` and all their descendants (uvicorn workers included)."""
    out = []
    for pid in pids:
        proc = psutil.Process(pid)
        out += [proc, *proc.children(recursive=True)]
    return out


def _in_process(model_uri: str, sessions: list[list[int]], k: int) -> list[list[int]]:
    rows = mlflow.pyfunc.load_model(model_uri).predict(
        pd.DataFrame({"session": sessions}), params={"k": k})
    return [[int(i) for i in items] for items in pd.DataFrame(rows)["items"]]


def test_bad_settings_refused_before_anything_starts(deployer: LocalDeployer) -> None:
    cases: list[tuple[dict[str, object], str]] = [
        ({"workers": 0}, "workers"), ({"instances": "two"}, "instances"),
        ({"torch_thread": 2}, "torch_thread"), ({"balancer": "random"}, "balancer")]
    for raw, field in cases:
        with pytest.raises(SettingsError, match=field):
            deployer.deploy("models:/whatever/1", raw)
    assert deployer.list() == []
    assert not deployer.state_dir.exists() or not any(deployer.state_dir.iterdir())


def test_cpus_above_the_machines_cores_is_refused_before_anything_starts(
        deployer: LocalDeployer) -> None:
    cores = len(os.sched_getaffinity(0))
    with pytest.raises(SettingsError, match=f"this machine has {cores} cores") as info:
        deployer.deploy("models:/whatever/1", {"cpus": cores + 0.5})
    assert f"needs {cores + 0.5}" in str(info.value)
    assert deployer.list() == []
    assert not deployer.state_dir.exists() or not any(deployer.state_dir.iterdir())


def _cgroup_v1_writable() -> bool:
    return os.geteuid() == 0 and os.access("/sys/fs/cgroup/cpu", os.W_OK) and Path(
        "/sys/fs/cgroup/cpu/cpu.cfs_quota_us").is_file()


def _cpu_cgroup(pid: int) -> str:
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if "cpu" in controllers.split(","):
            return path
    return ""


@pytest.mark.slow
@pytest.mark.skipif(not _cgroup_v1_writable(), reason="needs root and a writable cgroup v1 tree")
def test_cpus_puts_the_server_and_its_workers_in_a_cgroup_teardown_removes_it(
        deployer: LocalDeployer, registered_model_uri: str) -> None:
    ep = deployer.deploy(registered_model_uri, {"workers": 2, "cpus": 0.5})
    desc = deployer.describe(ep.name)
    assert desc.details["shaping"] == "cgroup-v1" and desc.cost.cpus == 0.5
    [group] = desc.details["cgroups"]
    cpu_dir = Path("/sys/fs/cgroup/cpu/niser-mlops") / group
    assert (cpu_dir / "cpu.cfs_quota_us").read_text().strip() == "50000"
    processes = _tree(desc.details["pids"])
    assert len(processes) >= 3  # mlflow CLI -> uvicorn supervisor -> 2 workers
    assert {_cpu_cgroup(p.pid) for p in processes} == {f"/niser-mlops/{group}"}
    assert ep.invoke(SESSIONS, k=3).items
    deployer.teardown(ep.name)
    assert not cpu_dir.exists()


@pytest.mark.slow
@pytest.mark.skipif(not _cgroup_v1_writable(), reason="needs root and a writable cgroup v1 tree")
def test_failed_shaped_deploy_removes_its_cgroup(
        deployer: LocalDeployer, tracking_uri: str) -> None:
    with pytest.raises(DeploymentFailed, match="exited with code"):
        deployer.deploy("models:/no-such-model-5e2b/1", {"cpus": 0.5}, name="shaped-dies")
    assert not list(Path("/sys/fs/cgroup/cpu/niser-mlops").glob("shaped-dies-*"))
    assert not list(Path("/sys/fs/cgroup/cpuacct/niser-mlops").glob("shaped-dies-*"))
    assert deployer.list() == []


def test_cpus_without_shaping_starts_the_server_unshaped_and_records_none(
        deployer: LocalDeployer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shaping, "backend", lambda: None)
    recorded: list[dict[str, object]] = []

    def stop_at_spawn(argv: list[str], *args: object, **kwargs: object) -> None:
        recorded.append(json.loads((deployer.state_dir / "unshaped.json").read_text()))
        raise RuntimeError("stopped where the server would start")

    monkeypatch.setattr(local_module.procs, "spawn", stop_at_spawn)
    with pytest.raises(DeploymentFailed, match="stopped where the server would start"):
        deployer.deploy("models:/whatever/1", {"cpus": 0.5}, name="unshaped")
    [state] = recorded
    assert state["shaping"] == "none" and state["cgroups"] == []
    assert deployer.list() == []


@pytest.mark.slow
def test_deploy_predict_teardown_leaves_no_process(
        deployer: LocalDeployer, registered_model_uri: str) -> None:
    ep = deployer.deploy(registered_model_uri, {"workers": 2, "torch_threads": 1})
    desc = deployer.describe(ep.name)
    assert desc.status == "running" and desc.cost.kind == "local"
    assert desc.cost.instance_count == 1 and desc.cost.cpus == 2.0
    assert desc.details["shaping"] == "none" and "cgroups" not in desc.details
    assert ep.url == desc.details["url"] and ep.name in deployer.list()
    processes = _tree(desc.details["pids"])
    assert len(processes) >= 3  # mlflow CLI -> uvicorn supervisor -> 2 workers
    answer = ep.invoke(SESSIONS, k=7)
    assert answer.items == _in_process(registered_model_uri, SESSIONS, 7)
    assert all(len(row) == 7 for row in answer.scores)

    deployer.teardown(ep.name)
    _, alive = psutil.wait_procs(processes, timeout=1)
    assert alive == [], f"left behind: {alive}"
    assert not Path(desc.details["logs"][0]).exists()
    assert deployer.list() == []
    deployer.teardown(ep.name)  # idempotent
    with pytest.raises(KeyError, match=ep.name):
        deployer.describe(ep.name)


@pytest.mark.slow
def test_two_instances_behind_nginx_share_the_requests(
        deployer: LocalDeployer, registered_model_uri: str) -> None:
    pin = len(os.sched_getaffinity(0)) >= 2  # each instance on its own core, where there are 2
    with deployer.deployed(registered_model_uri, {"instances": 2, "workers": 1,
                                                  "balancer": "round_robin",
                                                  "cpu_affinity": pin}) as ep:
        desc = deployer.describe(ep.name)
        if pin:
            cores = sorted(os.sched_getaffinity(0))
            pinned = [psutil.Process(p).cpu_affinity() for p in desc.details["pids"]]
            assert pinned == [[cores[0]], [cores[1]]]
        ports = desc.details["ports"]
        assert len(ports) == 2 and ep.url == f"http://127.0.0.1:{desc.details['balancer_port']}"
        assert desc.cost.instance_count == 2 and desc.cost.cpus == 1.0
        expected = _in_process(registered_model_uri, SESSIONS, 20)
        for _ in range(10):
            assert ep.invoke(SESSIONS).items == expected
        log = Path(desc.details["balancer_access_log"]).read_text()
        served = Counter(re.findall(r'"POST /invocations[^"]*" 200 upstream=127\.0\.0\.1:(\d+)',
                                    log))
        assert set(served) == {str(p) for p in ports}, log
        assert min(served.values()) >= 4, served
        processes = _tree([*desc.details["pids"], desc.details["balancer_pid"]])
    _, alive = psutil.wait_procs(processes, timeout=1)
    assert alive == [], f"left behind: {alive}"
    assert deployer.list() == []


@pytest.mark.slow
@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2,
                    reason="one core: torch's default of 1 thread equals the setting under test")
def test_torch_threads_reach_each_worker(deployer: LocalDeployer, tracking_uri: str,
                                         tmp_path: Path) -> None:
    code = tmp_path / "probe.py"
    code.write_text(PROBE)
    with mlflow.start_run():
        uri = mlflow.pyfunc.log_model(name="probe", python_model=str(code)).model_uri
    # torch's own default is the core count; torch caps the setting at it (min(threads, cores))
    with deployer.deployed(uri, {"torch_threads": 1, "workers": 1}) as ep:
        raw = ep.invoke([[1], [2]], k=1).raw["predictions"]
    assert [row["items"] for row in raw] == [[1], [1]]
    assert {row["omp"] for row in raw} == {"1"}



@pytest.mark.slow
def test_default_settings_run_a_worker_per_core_with_one_torch_thread_each(
        deployer: LocalDeployer, tracking_uri: str, tmp_path: Path) -> None:
    code = tmp_path / "probe.py"
    code.write_text(PROBE)
    with mlflow.start_run():
        uri = mlflow.pyfunc.log_model(name="probe", python_model=str(code)).model_uri
    cores = len(os.sched_getaffinity(0))
    with deployer.deployed(uri, {}) as ep:
        details = deployer.describe(ep.name).details
        assert (details["workers"], details["torch_threads"]) == (cores, 1)
        raw = [row for _ in range(4) for row in ep.invoke([[1]], k=1).raw["predictions"]]
        processes = _tree(details["pids"])
    assert {row["omp"] for row in raw} == {"1"}
    assert len(processes) >= 2 + cores if cores > 1 else len(processes) >= 1

def _orphans(marker: str) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        if any(marker in part for part in proc.info["cmdline"] or []):
            found.append(proc)
    return found


@pytest.mark.slow
def test_server_dying_at_start_reports_its_log_and_leaves_nothing(
        deployer: LocalDeployer, tracking_uri: str) -> None:
    missing = "models:/no-such-model-7f3a/1"
    with pytest.raises(DeploymentFailed) as info:
        deployer.deploy(missing, {"startup_timeout_s": 120}, name="dies-at-start")
    message = str(info.value)
    assert "exited with code" in message and "no-such-model-7f3a" in message
    assert "last lines of" in message  # the server log's tail is in the message
    assert deployer.list() == [] and _orphans("no-such-model-7f3a") == []
    assert not list(Path("/tmp").glob("niser-local-dies-at-start-*"))


@pytest.mark.slow
def test_second_instance_failing_stops_the_first(
        deployer: LocalDeployer, registered_model_uri: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    real = local_module.server_argv
    started: list[int] = []

    def second_is_broken(model_uri: str, port: int, s: local_module.LocalSettings,
                         instance: int) -> list[str]:
        started.append(port)
        return real(model_uri if instance == 0 else "models:/broken-second-9c1d/1", port, s,
                    instance)

    monkeypatch.setattr(local_module, "server_argv", second_is_broken)
    with pytest.raises(DeploymentFailed, match="instance 2 of 2"):
        deployer.deploy(registered_model_uri, {"instances": 2}, name="half-broken")
    assert len(started) == 2
    assert deployer.list() == []
    for port in started:  # nothing answers where either instance listened
        with pytest.raises(Exception, match="failed"):
            HttpInvoker(f"http://127.0.0.1:{port}", timeout_s=2)([[1]], k=1)
    assert _orphans("broken-second-9c1d") == []
