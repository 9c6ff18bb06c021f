"""The local deployer: real ``mlflow models serve`` processes, and nginx in front of several."""

from __future__ import annotations

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
    frame = mlflow.pyfunc.load_model(model_uri).predict(
        pd.DataFrame({"session": sessions}), params={"k": k})
    return [[int(i) for i in items] for items in frame["items"]]


def test_bad_settings_refused_before_anything_starts(deployer: LocalDeployer) -> None:
    cases: list[tuple[dict[str, object], str]] = [
        ({"workers": 0}, "workers"), ({"instances": "two"}, "instances"),
        ({"torch_thread": 2}, "torch_thread"), ({"balancer": "random"}, "balancer")]
    for raw, field in cases:
        with pytest.raises(SettingsError, match=field):
            deployer.deploy("models:/whatever/1", raw)
    assert deployer.list() == []
    assert not deployer.state_dir.exists() or not any(deployer.state_dir.iterdir())


@pytest.mark.slow
def test_deploy_predict_teardown_leaves_no_process(
        deployer: LocalDeployer, registered_model_uri: str) -> None:
    ep = deployer.deploy(registered_model_uri, {"workers": 2, "torch_threads": 1})
    desc = deployer.describe(ep.name)
    assert desc.status == "running" and desc.cost.kind == "local"
    assert desc.cost.instance_count == 1 and desc.cost.cpus == 2.0
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
