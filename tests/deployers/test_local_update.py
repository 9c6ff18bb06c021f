"""``LocalDeployer.update``: a deployment moves to another model version while it serves, without
one failed request; a failing update leaves the old one serving. And the MLflow target's
``update_deployment`` uses a deployer's ``update`` where there is one."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import mlflow
import psutil
import pytest
from mlflow.deployments import get_deploy_client

from deployers.base import CostDrivers, DeploymentFailed, Description, SettingsError
from deployers.http import KeepAlive
from deployers.local import LocalDeployer

BODY = json.dumps({"dataframe_records": [{"session": [1, 2]}], "params": {"k": 3}}).encode()
HEADERS = {"Content-Type": "application/json"}


class _Loop:
    """A closed loop of requests to ``url`` in a thread: each answer's status and X-Upstream
    (or the exception), until ``stop``."""

    def __init__(self, url: str) -> None:
        host, port = url.removeprefix("http://").rsplit(":", 1)
        self.conn = KeepAlive(host, int(port), 60.0)
        self.answers: list[tuple[int, str]] = []
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._more = threading.Condition()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                status, data, headers = self.conn.request("POST", "/invocations", BODY, HEADERS)
            except Exception as exc:  # every failure counts
                self.failures.append(f"{type(exc).__name__}: {exc}")
                continue
            if status != 200:
                self.failures.append(f"{status}: {data[:200]!r}")
            with self._more:
                self.answers.append((status, str(headers.get("X-Upstream"))))
                self._more.notify_all()

    def mark(self) -> int:
        return len(self.answers)

    def more(self, than: int) -> int:
        """Wait until five answers more than ``than`` came (or a failure); the count now."""
        with self._more:
            self._more.wait_for(lambda: len(self.answers) >= than + 5 or bool(self.failures),
                                timeout=120)
            return len(self.answers)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=120)
        self.conn.close()


def _running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _next_version(model_uri: str) -> str:
    """Another registered version of the model behind ``model_uri`` (``models:/NAME/N``)."""
    name, version = model_uri.removeprefix("models:/").split("/")
    source = mlflow.MlflowClient().get_model_version(name, version).source
    return f"models:/{name}/{mlflow.register_model(source, name).version}"


@pytest.mark.slow
def test_update_switches_versions_without_a_failed_request(
        tmp_path: Path, registered_model_uri: str) -> None:
    deployer = LocalDeployer(state_dir=tmp_path / "state")
    second = _next_version(registered_model_uri)
    settings = {"workers": 1, "torch_threads": 1, "instances": 1}
    with deployer.deployed(registered_model_uri, settings, name="blue-green") as ep:
        before = deployer.describe(ep.name).details
        old_ports = {str(p) for p in before["ports"]}
        assert ep.url == f"http://127.0.0.1:{before['door_port']}"
        with pytest.raises(SettingsError, match="workers"):
            deployer.update(ep.name, second, {"workers": 0})
        loop = _Loop(str(ep.url))
        try:
            during = loop.more(0)  # the loop runs before the update starts
            deployer.update(ep.name, second)
            after = deployer.describe(ep.name)
            switched = loop.mark()
            assert switched > during  # requests were answered while the update ran
            loop.more(switched)
            new_ports = {str(p) for p in after.details["ports"]}
            assert after.status == "running" and after.details["model_uri"] == second
            assert not new_ports & old_ports
            assert after.details["door_pid"] == before["door_pid"]  # the same door, reloaded
            assert not [pid for pid in before["pids"] if _running(pid)]  # old servers ended
            assert {u.rsplit(":", 1)[1] for _, u in loop.answers[switched:]} <= new_ports

            with pytest.raises(DeploymentFailed, match="still serves"):
                deployer.update(ep.name, "models:/no-such-model-3d9e/1",
                                {**settings, "startup_timeout_s": 120})
            failed = loop.mark()
            loop.more(failed)
            kept = deployer.describe(ep.name)
            assert kept.status == "running" and kept.details["model_uri"] == second
            assert {str(p) for p in kept.details["ports"]} == new_ports
            assert {u.rsplit(":", 1)[1] for _, u in loop.answers[failed:]} <= new_ports
            state = json.loads((deployer.state_dir / "blue-green.json").read_text())
            assert "incoming" not in state and "outgoing" not in state
        finally:
            loop.stop()
        assert loop.failures == [], loop.failures[:5]
        assert len(loop.answers) >= 15
    assert not [p for p in psutil.process_iter(["cmdline"])
                if any("no-such-model-3d9e" in c for c in p.info["cmdline"] or [])]


class _Updatable:
    """A deployer stand-in that records its calls."""

    name = "fake"

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    def parse_settings(self, raw: Any) -> dict[str, Any]:
        return dict(raw or {})

    def describe(self, name: str) -> Description:
        return Description("fake", name, "running", CostDrivers(kind="local"),
                           {"model_uri": "models:/m/1"})

    def update(self, name: str, model_uri: str, settings: Any = None,
               timeout_s: float = 60.0) -> None:
        self.calls.append(("update", (name, model_uri, settings)))

    def teardown(self, name: str) -> None:
        self.calls.append(("teardown", name))


def test_update_deployment_uses_the_deployers_update() -> None:
    client = get_deploy_client("niser-local")
    fake = _Updatable()
    client.deployer = fake  # type: ignore[attr-defined]
    client.update_deployment("dep-a", "models:/m/2")
    client.update_deployment("dep-a", config={"workers": "2"})
    assert fake.calls == [("update", ("dep-a", "models:/m/2", None)),
                          ("update", ("dep-a", "models:/m/1", {"workers": "2"}))]
