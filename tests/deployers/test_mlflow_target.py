"""Our deployers as MLflow deployment targets, through MLflow's own client and its real CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from importlib.metadata import entry_points
from pathlib import Path

import psutil
import pytest
from mlflow.deployments import get_deploy_client
from mlflow.deployments.interface import _target_help
from mlflow.exceptions import MlflowException

from deployers.http import ping
from deployers.local import LocalDeployer, LocalSettings
from deployers.registry import available

SESSIONS = [[100_000, 100_007], [100_021]]


def _mlflow_cli(*args: str, env: dict[str, str], timeout: float = 240
                ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mlflow", "deployments", *args], env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_every_deployer_but_sagemaker_is_an_mlflow_target() -> None:
    targets = {ep.name for ep in entry_points(group="mlflow.deployments")}
    wanted = {f"niser-{name}" for name in available() if name != "sagemaker"}
    assert wanted <= targets, f"missing MLflow targets: {sorted(wanted - targets)}"
    for name in wanted:
        assert get_deploy_client(name) is not None


def test_target_help_lists_every_setting() -> None:
    text = _target_help("niser-local")
    for field in LocalSettings.model_fields:
        assert field in text


def test_config_strings_are_coerced_and_unknown_keys_refused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NISER_LOCAL_STATE_DIR", str(tmp_path))
    client = get_deploy_client("niser-local")
    settings = client._settings({"workers": "2", "cpu_affinity": "false"})
    assert settings.workers == 2 and settings.cpu_affinity is False
    with pytest.raises(MlflowException, match=r"unknown key 'instancez'; valid keys: .*instances"):
        client.create_deployment("refused", "models:/niser/1", config={"instancez": "2"})
    with pytest.raises(MlflowException, match="workers='many'"):
        client.create_deployment("refused", "models:/niser/1", config={"workers": "many"})
    assert client.deployer.state_dir == tmp_path  # type: ignore[attr-defined]
    assert client.list_deployments() == [] and list(tmp_path.iterdir()) == []
    with pytest.raises(MlflowException, match="no local deployment named 'refused'"):
        client.get_deployment("refused")


def test_a_name_that_is_a_path_is_refused_and_deletes_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    state, victim = tmp_path / "state", tmp_path / "victim"
    state.mkdir()
    victim.mkdir()
    (victim / "keep.txt").write_text("mine")
    monkeypatch.setenv("NISER_LOCAL_STATE_DIR", str(state))
    client = get_deploy_client("niser-local")
    with pytest.raises(MlflowException, match="deployment name is") as info:
        client.create_deployment("../victim", "models:/niser/1")
    assert info.value.error_code == "INVALID_PARAMETER_VALUE"
    for call in (client.delete_deployment, client.get_deployment,
                 lambda n: client.predict(n, [{"session": [1]}]),
                 lambda n: client.update_deployment(n, "models:/niser/1")):
        with pytest.raises(MlflowException, match="deployment name is") as info:
            call("../victim")
        assert info.value.error_code == "INVALID_PARAMETER_VALUE"
    assert (victim / "keep.txt").read_text() == "mine" and list(state.iterdir()) == []


def test_inprocess_target_through_mlflow_client(registered_model_uri: str) -> None:
    client = get_deploy_client("niser-inprocess")
    created = client.create_deployment("ip-one", registered_model_uri)
    try:
        assert created["name"] == "ip-one" and created["flavor"] == "python_function"
        assert client.list_deployments() == [{"name": "ip-one"}]
        # a second client of the same target in this process sees the same deployment
        assert get_deploy_client("niser-inprocess").get_deployment("ip-one")["status"] == "loaded"
        request = {"dataframe_records": [{"session": s} for s in SESSIONS], "params": {"k": 3}}
        rows = client.predict("ip-one", request)["predictions"]
        assert [len(r["items"]) for r in rows] == [3, 3]
        frame = client.predict("ip-one", client_frame(SESSIONS)).get_predictions()
        assert len(frame) == 2 and len(frame["items"][0]) == 20
        updated = client.update_deployment("ip-one", config={"warmup_requests": "0"})
        assert updated["model_uri"] == registered_model_uri
        with pytest.raises(MlflowException, match="flavor 'onnx' is not served"):
            client.create_deployment("ip-two", registered_model_uri, flavor="onnx")
    finally:
        client.delete_deployment("ip-one")
    client.delete_deployment("ip-one")  # idempotent
    assert client.list_deployments() == []


def client_frame(sessions: list[list[int]]) -> object:
    import pandas as pd

    return pd.DataFrame({"session": sessions})


@pytest.mark.slow
def test_cli_local_deployment_outlives_the_cli_process(
        registered_model_uri: str, tracking_uri: str, tmp_path: Path) -> None:
    state = tmp_path / "state"
    env = {**os.environ, "NISER_LOCAL_STATE_DIR": str(state), "MLFLOW_TRACKING_URI": tracking_uri}
    created = _mlflow_cli("create", "-t", "niser-local", "--name", "cli-demo", "-m",
                          registered_model_uri, "-C", "workers=1", "-C", "torch_threads=1",
                          env=env)
    assert created.returncode == 0, created.stderr[-3000:]
    assert "deployment cli-demo is created" in created.stdout
    deployer = LocalDeployer(state_dir=state)
    try:
        # the CLI has exited; the server it started still answers, found through the state file
        desc = deployer.describe("cli-demo")
        assert desc.status == "running" and ping(desc.details["url"])
        pids = desc.details["pids"]
        assert all(psutil.Process(p).ppid() != os.getpid() for p in pids)
        assert [len(i) for i in deployer.invoker("cli-demo")(SESSIONS, k=4).items] == [4, 4]

        listed = _mlflow_cli("list", "-t", "niser-local", env=env)
        assert "cli-demo" in listed.stdout, listed.stderr[-2000:]
        request = tmp_path / "sessions.json"
        request.write_text(json.dumps([{"session": s} for s in SESSIONS]))
        predicted = _mlflow_cli("predict", "-t", "niser-local", "--name", "cli-demo",
                                "--input-path", str(request), env=env)
        assert predicted.returncode == 0, predicted.stderr[-2000:]
        rows = json.loads(predicted.stdout.strip().splitlines()[-1])["predictions"]
        assert [len(r["items"]) for r in rows] == [20, 20]

        processes = [psutil.Process(p) for p in pids]
        processes += [c for p in processes for c in p.children(recursive=True)]
        deleted = _mlflow_cli("delete", "-t", "niser-local", "--name", "cli-demo", env=env)
        assert deleted.returncode == 0, deleted.stderr[-2000:]
        _, alive = psutil.wait_procs(processes, timeout=5)
        assert alive == []
        assert deployer.list() == []
        missing = _mlflow_cli("get", "-t", "niser-local", "--name", "cli-demo", env=env)
        assert missing.returncode != 0 and "no local deployment named 'cli-demo'" in missing.stderr
    finally:
        deployer.teardown("cli-demo")


@pytest.mark.slow
def test_cli_run_local_serves_until_terminated(
        registered_model_uri: str, tracking_uri: str, tmp_path: Path) -> None:
    env = {**os.environ, "NISER_LOCAL_STATE_DIR": str(tmp_path / "state"),
           "MLFLOW_TRACKING_URI": tracking_uri}
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "deployments", "run-local", "-t", "niser-local",
         "--name", "run-local-demo", "-m", registered_model_uri],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True)
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 180
        line = ""
        while time.monotonic() < deadline and "answers at" not in line:
            line = proc.stdout.readline()
            assert line or proc.poll() is None, "run-local exited before serving"
        url = line.split("answers at ")[1].split(";")[0]
        assert ping(url)
        deployer = LocalDeployer(state_dir=tmp_path / "state")
        pids = deployer.describe("run-local-demo").details["pids"]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
        assert deployer.list() == [] and not any(psutil.pid_exists(p) for p in pids)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
