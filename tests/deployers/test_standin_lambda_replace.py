"""Replacing a function on the local Lambda runtime without an outage: ``stage`` starts the new
package beside the serving one, ``commit`` switches in one step while invocations in flight
finish on the old environments, ``discard`` ends a staged package that never served."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from deployers.aws_lambda.invoker import parse_report
from deployers.standins import FunctionConfig, LocalLambda
from tests.deployers.lambda_support import toy_package
from tests.deployers.test_standin_lambda import invoke

VERSIONED = """
    import os, pathlib, time
    def handler(event, context):
        if "started" in event:  # tell the test it runs, then wait for its gate
            pathlib.Path(event["started"]).touch()
            while not os.path.exists(event["gate"]):
                time.sleep(0.01)
        return {"code": CODE, "pid": os.getpid()}
"""


def _package(root: Path, code: int) -> Path:
    return toy_package(root, VERSIONED.replace("CODE", str(code)))


def _wait_for(path: Path, thread: threading.Thread) -> None:
    """Until ``path`` exists (the handler started), failing if ``thread`` ended first."""
    deadline = time.monotonic() + 60
    while not path.exists():
        assert thread.is_alive() and time.monotonic() < deadline, "the handler never started"
        time.sleep(0.01)


@pytest.fixture
def service():
    with LocalLambda() as svc:
        yield svc


def test_commit_serves_the_new_package_and_lets_the_old_invocation_finish(service, tmp_path):
    service.add_function(FunctionConfig("toy", _package(tmp_path / "v1", 1), timeout_s=60,
                                        aliases={"live": "1"}))
    started, gate = tmp_path / "started", tmp_path / "gate"
    in_flight: list = []
    thread = threading.Thread(target=lambda: in_flight.append(invoke(
        service, "toy", {"started": str(started), "gate": str(gate)}, Qualifier="live")))
    thread.start()
    _wait_for(started, thread)

    staged = service.stage(FunctionConfig("toy", _package(tmp_path / "v2", 2), timeout_s=60,
                                          provisioned_concurrency=1, aliases={"live": "2"}))
    out, body, _ = invoke(service, "toy", {}, Qualifier="live")
    assert (body["code"], out["ExecutedVersion"]) == (1, "1"), "staged is not serving yet"

    assert service.commit(staged, drain_s=0.0) is False, "one invocation is still running"
    out, body, log = invoke(service, "toy", {}, Qualifier="live")
    assert (body["code"], out["ExecutedVersion"]) == (2, "2")
    assert "init_ms" not in parse_report(log), "the staged provisioned environment answered"
    assert service.environments("toy") == 1

    gate.touch()
    thread.join(60)
    out, body, _ = in_flight[0]
    assert "FunctionError" not in out and (body["code"], out["ExecutedVersion"]) == (1, "1")
    with pytest.raises(ProcessLookupError):  # the old environment ended after its invocation
        os.kill(body["pid"], 0)


def test_commit_drains_then_returns_and_discard_ends_a_staged_package(service, tmp_path):
    service.add_function(FunctionConfig("toy", _package(tmp_path / "v1", 1)))
    old_pid = invoke(service, "toy", {})[1]["pid"]
    unused = service.stage(FunctionConfig("toy", _package(tmp_path / "bad", 3),
                                          provisioned_concurrency=1))
    pids = [env.proc.pid for env in unused.fn.envs]
    service.discard(unused)
    assert invoke(service, "toy", {})[1]["code"] == 1
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)

    assert service.commit(service.stage(FunctionConfig("toy", _package(tmp_path / "v2", 2))))
    with pytest.raises(ProcessLookupError):  # idle: ended at the switch
        os.kill(old_pid, 0)
    assert invoke(service, "toy", {})[1]["code"] == 2


def test_a_failing_staged_init_leaves_the_serving_function_alone(service, tmp_path):
    service.add_function(FunctionConfig("toy", _package(tmp_path / "v1", 1)))
    broken = toy_package(tmp_path / "broken", "raise ImportError('broken package')\n")
    with pytest.raises(RuntimeError, match="failed Init"):
        service.stage(FunctionConfig("toy", broken, provisioned_concurrency=1))
    assert invoke(service, "toy", {})[1]["code"] == 1
