"""What deployments leave behind, found and deleted: ``deployers.leftovers``, ``bench.leftover_cost``
and ``niser-mlops sweep``, against a real moto server and real processes.

The flow tests run ``niser-mlops benchmark`` (a real flow, on a temporary Prefect server) in a
child process against the moto server, stop it mid-benchmark (SIGKILL: nothing of the flow runs
again; SIGTERM: Prefect's cancellation signal) and look at what is left.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from click.testing import CliRunner
from mlflow import MlflowClient

from bench import prices
from bench.leftover_cost import monthly
from bench.leftovers_cli import sweep
from deployers import aws, leftovers, ownership
from deployers.sagemaker import SageMakerDeployer

CONTRACT_MODEL = Path(__file__).with_name("contract_model.py")
TINY = "synthetic:n_items=80,n_sessions=400"
TARGET = [{"name": "sm", "deployer": "sagemaker",
           "settings": {"instance_type": "ml.c5.large", "wait_timeout_s": 120}}]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("leftover-model") / "m"
    mlflow.pyfunc.save_model(str(path), python_model=str(CONTRACT_MODEL),
                             input_example=(pd.DataFrame({"session": [[1, 2]]}), {"k": 20}))
    return str(path)


@pytest.fixture
def account(moto_server: str) -> str:
    repo = aws.client("ecr").create_repository(repositoryName="mlflow-pyfunc")["repository"]
    return f"{repo['repositoryUri']}:{mlflow.__version__}"


def test_every_resource_of_a_deploy_carries_the_deployment_run_and_creation_time(
        account: str, model_dir: str) -> None:
    SageMakerDeployer().deploy(model_dir, {"instance_type": "ml.c5.large", "local": False},
                               name="ep-owned", run_id="run123")
    rows = leftovers.find_aws()
    kinds = sorted(r.kind for r in rows)
    assert kinds == ["iam-role", "s3-prefix", "sagemaker-endpoint", "sagemaker-endpoint-config",
                     "sagemaker-model"]
    for r in rows:
        assert r.deployment == "ep-owned" and r.where == "moto"
        assert r.created is not None and abs(r.age_s() or 1e9) < 600
        if r.kind != "s3-prefix":  # S3 objects are found by their key, not by tags
            assert r.run_id == "run123"


def test_a_left_endpoint_costs_its_instances_for_730_hours_labelled_as_would_be(
        account: str, model_dir: str) -> None:
    SageMakerDeployer().deploy(model_dir, {"instance_type": "ml.c5.xlarge", "instance_count": 2,
                                           "local": False}, name="ep-cost")
    table = prices.load()
    endpoint, = (r for r in leftovers.find_aws() if r.kind == "sagemaker-endpoint")
    cost = monthly(endpoint, table)
    hourly = table.instance_hourly("ml.c5.xlarge").usd
    assert cost.usd == pytest.approx(2 * hourly * 730)
    assert "moto stand-in, nothing billed" in cost.basis
    config, = (r for r in leftovers.find_aws() if r.kind == "sagemaker-endpoint-config")
    assert monthly(config, table).usd == 0


def test_sweep_lists_then_deletes_and_exit_status_says_whether_anything_is_left(
        account: str, model_dir: str, tmp_path: Path) -> None:
    SageMakerDeployer().deploy(model_dir, {"instance_type": "ml.c5.large", "local": False},
                               name="ep-sweep")
    runner = CliRunner()
    listed = runner.invoke(sweep, [])
    assert listed.exit_code == 1, listed.output
    assert "sagemaker-endpoint" in listed.output and "ep-sweep" in listed.output
    assert "USD per month if left running" in listed.output
    refused = runner.invoke(sweep, ["--delete"], input="n\n")
    assert refused.exit_code != 0 and leftovers.find_aws()
    done = runner.invoke(sweep, ["--delete", "--yes"])
    assert done.exit_code == 0, done.output
    assert leftovers.find_aws() == []
    assert runner.invoke(sweep, []).output.startswith("nothing left")


def test_sweep_yes_without_delete_names_the_option() -> None:
    out = CliRunner().invoke(sweep, ["--yes", "--no-aws"])
    assert out.exit_code == 2 and "--yes" in out.output


# -- a flow stopped mid-benchmark ----------------------------------------------------------------
@pytest.fixture(scope="module")
def prefect_api() -> Iterator[str]:
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield str(PREFECT_API_URL.value())


def _start_flow(tmp_path: Path, moto_server: str, prefect_api: str, home: Path,
                targets: list[dict[str, object]] = TARGET, cli: str = "flows.cli"
                ) -> subprocess.Popen[bytes]:
    env = {**os.environ, "AWS_ENDPOINT_URL": moto_server, "PREFECT_API_URL": prefect_api,
           "NISER_LOCAL_STATE_DIR": str(home), "NISER_LAMBDA_STATE_DIR": str(tmp_path / "lam"),
           "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
           "PYTHONPATH": str(Path(__file__).resolve().parents[2])}  # tests.* from tmp_path
    argv = [sys.executable, "-m", cli, "benchmark", "--dataset", TINY, "--epochs", "1",
            "--targets", json.dumps(targets), "--levels", "1,2", "--level-seconds", "120"]
    return subprocess.Popen(argv, env=env, cwd=tmp_path, stdout=open(tmp_path / "flow.log", "wb"),
                            stderr=subprocess.STDOUT, start_new_session=True)


def _served_each(home: Path) -> list[int]:
    """Invocations each stand-in scoring server of ``home`` has answered so far (its access
    log lines)."""
    servers = [p for p in ownership.marked_processes(home) if p.role == "sagemaker-server"]
    logs = [p.workdir / "serve-1.log" for p in servers if p.workdir is not None]
    return [log.read_text(errors="replace").count("/invocations") if log.exists() else 0
            for log in logs]


def _served(home: Path) -> int:
    return sum(_served_each(home))


@contextlib.contextmanager
def _flow_mid_benchmark(tmp_path: Path, moto_server: str, prefect_api: str,
                        monkeypatch: pytest.MonkeyPatch) -> Iterator[subprocess.Popen[bytes]]:
    """A benchmark flow in a child process, yielded once its stand-in endpoint is serving the
    first level (past the single cold-start request); killed afterwards if still running."""
    home = tmp_path / "home"
    monkeypatch.setenv("NISER_LOCAL_STATE_DIR", str(home))
    log = tmp_path / "flow.log"
    flow = _start_flow(tmp_path, moto_server, prefect_api, home)
    try:
        deadline = time.monotonic() + 300
        while _served(home) < 50:
            assert flow.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, f"never reached the benchmark:\n{log.read_text()}"
            time.sleep(0.2)
        yield flow
    finally:
        if flow.poll() is None:
            os.killpg(flow.pid, signal.SIGKILL)
            flow.wait()


def test_a_flow_killed_mid_benchmark_leaves_what_sweep_lists_priced_and_deletes(
        account: str, moto_server: str, prefect_api: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    with _flow_mid_benchmark(tmp_path, moto_server, prefect_api, monkeypatch) as flow:
        os.killpg(flow.pid, signal.SIGKILL)
        flow.wait()
    home = tmp_path / "home"
    workdirs = [p.workdir for p in ownership.marked_processes(home) if p.workdir is not None]
    assert workdirs and all(d.is_dir() for d in workdirs)
    rows = leftovers.find()
    kinds = {r.kind for r in rows}
    assert {"sagemaker-endpoint", "sagemaker-endpoint-config", "sagemaker-model", "iam-role",
            "s3-prefix", "process"} <= kinds, kinds
    roles = {r.detail.split(",")[0] for r in rows if r.kind == "process"}
    assert {"sagemaker-server", "sagemaker-dataplane"} <= roles
    assert all(not r.in_use for r in rows)  # the flow that started them is gone
    table = prices.load()
    endpoint, = (r for r in rows if r.kind == "sagemaker-endpoint")
    assert monthly(endpoint, table).usd == pytest.approx(
        table.instance_hourly("ml.c5.large").usd * 730)
    assert endpoint.run_id  # the flow's MLflow run
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking)
    runs = MlflowClient(tracking_uri=tracking)
    running = runs.search_runs([e.experiment_id for e in runs.search_experiments()],
                               "attributes.status = 'RUNNING'")
    assert {r.info.run_id for r in running} == {endpoint.run_id}  # the killed flow's run
    out = CliRunner().invoke(sweep, ["--delete", "--yes"])
    assert out.exit_code == 0, out.output
    assert "mlflow-run" in out.output
    assert leftovers.find() == []
    assert ownership.marked_processes(home) == []
    assert not any(d.exists() for d in workdirs)  # the stand-in's copy of the model went too
    run = runs.get_run(endpoint.run_id)
    assert run.info.status == "FAILED"
    assert "is gone; marked FAILED by niser-mlops sweep" in run.data.tags["niser.failure"]


def test_a_flow_stopped_with_sigterm_mid_benchmark_tears_down_what_it_created(
        account: str, moto_server: str, prefect_api: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    try:
        with _flow_mid_benchmark(tmp_path, moto_server, prefect_api, monkeypatch) as flow:
            os.kill(flow.pid, signal.SIGTERM)
            flow.wait(120)
        left = leftovers.find()
    finally:
        leftovers.delete(leftovers.find())  # nothing for the next test, whatever happened
    log = (tmp_path / "flow.log").read_text(errors="replace")
    assert left == [], log[-3000:]
    assert flow.returncode != 0  # stopped, not finished


def test_a_sigterm_while_targets_run_in_parallel_tears_every_one_down(
        account: str, moto_server: str, prefect_api: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home"
    monkeypatch.setenv("NISER_LOCAL_STATE_DIR", str(home))
    two = [{**TARGET[0], "name": "sm-a"}, {**TARGET[0], "name": "sm-b"}]
    flow = _start_flow(tmp_path, moto_server, prefect_api, home, two,
                       cli="tests.deployers.as_if_real_aws")
    log = tmp_path / "flow.log"
    try:
        deadline = time.monotonic() + 300
        while not (len(served := _served_each(home)) == 2 and min(served) >= 20):
            assert flow.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, f"never ran both:\n{log.read_text()}"
            time.sleep(0.2)
        began = time.monotonic()
        os.kill(flow.pid, signal.SIGTERM)  # both sweeps are inside a 120 s level
        flow.wait(100)
        stopped_s = time.monotonic() - began
        left = leftovers.find()
    finally:
        if flow.poll() is None:
            os.killpg(flow.pid, signal.SIGKILL)
            flow.wait()
        leftovers.delete(leftovers.find())
    text = log.read_text(errors="replace")
    assert "targets benchmarked in parallel, 2 at a time" in text
    assert left == [], text[-3000:]
    assert ownership.marked_processes(home) == []
    assert flow.returncode != 0 and stopped_s < 100  # cut short, not the levels' 2 x 120 s


def test_an_orphaned_local_process_is_reported_at_start_and_swept(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from bench.leftovers_cli import leftover_line

    home = tmp_path / "home"
    monkeypatch.setenv("NISER_LOCAL_STATE_DIR", str(home))
    starter = ("from pathlib import Path; from deployers import procs; "
               f"procs.spawn(['sleep', '300'], {{}}, Path({str(tmp_path / 'x.log')!r}),"
               " role='local-server', deployment='dep-x')")
    subprocess.run([sys.executable, "-c", starter], check=True, env=os.environ)  # then exits
    orphan, = ownership.marked_processes(home)
    assert (orphan.role, orphan.deployment, orphan.starter_alive) == (
        "local-server", "dep-x", False)
    line = leftover_line(aws=False)
    assert line is not None and "1 resources (process)" in line and "niser-mlops sweep" in line
    out = CliRunner().invoke(sweep, ["--no-aws", "--delete", "--yes"])
    assert out.exit_code == 0, out.output
    assert ownership.marked_processes(home) == [] and leftover_line(aws=False) is None
