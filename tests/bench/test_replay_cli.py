"""``niser-mlops replay``: bad options named, a replay through a running server logged to MLflow
like a benchmark target, the equality check's exit status, and starting/stopping a server."""

import re
import sys

import mlflow
import pandas as pd
import psutil
import pytest
from click.testing import CliRunner
from mlflow.tracking import MlflowClient

from bench import replay_cli
from bench.cli import bench
from bench.replay_server import SessionServerError, running_session_server, session_server_argv
from flows.cli import main
from tests.bench.replay_support import FakeSessionServer, direct_invoker

REPO = str(__import__("pathlib").Path(__file__).resolve().parents[2])


@pytest.fixture
def data(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "test.tsv").write_text("1 2\t3\n1\t2\n4\t5\n6 7\t8\n6\t7\n")
    return folder


@pytest.fixture
def tracking(tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.chdir(tmp_path)
    old = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    client = MlflowClient()
    client.create_experiment("replay-test", artifact_location=(tmp_path / "artifacts").as_uri())
    yield client
    mlflow.set_tracking_uri(old)


def run(*args):
    return CliRunner().invoke(bench, ["replay", *args])


@pytest.mark.parametrize(("argv", "option"), [
    (["--sessions", "0"], "--sessions"),
    (["--speedup", "0"], "--speedup"),
    (["--rate", "-1"], "--rate"),
    (["--pace", "recorded"], "--pace"),
    (["--pace", "steady"], "--pace"),
    (["--last-days", "7"], "--last-days"),
    (["--k", "0"], "--k"),
    (["--url", "ftp://127.0.0.1:1"], "--url"),
    (["--deployer", "nope"], "--deployer"),
])
def test_bad_options_exit_2_naming_the_option(data, argv, option):
    result = run("--data", str(data), "--url", "http://127.0.0.1:1", "--no-check", "--no-baseline", *argv)
    assert result.exit_code == 2, result.output
    assert option in result.stderr


@pytest.mark.parametrize(("argv", "option"), [
    ([], "--data"),
    (["--data", "nowhere/test.tsv", "--url", "http://127.0.0.1:1", "--no-check", "--no-baseline"], "--data"),
    (["--data", "."], "--deployment"),  # nothing to start a server for
    (["--data", ".", "--url", "http://127.0.0.1:1"], "--deployment"),  # nothing to check against
])
def test_missing_data_or_deployment_exit_2_naming_the_option(argv, option):
    result = run(*argv)
    assert result.exit_code == 2 and option in result.stderr


def test_a_replay_through_a_running_server_is_logged_like_a_benchmark_target(data, tracking):
    with FakeSessionServer() as server:
        url = server.url.replace("http://", "http://user:secret@")
        result = run("--url", url, "--data", str(data), "--no-check", "--no-baseline", "--rate", "1000",
                     "--think-s", "0", "--experiment", "replay-test")
    assert result.exit_code == 0, result.output
    assert "manager overhead p50 / p95 ms" in result.stdout
    assert re.search(r"^figures +measured-local: measured on this machine", result.stdout, re.M)
    exp = tracking.get_experiment_by_name("replay-test")
    runs = {r.info.run_name: r for r in tracking.search_runs([exp.experiment_id])}
    assert set(runs) == {"replay", "session-server:local"}
    child = runs["session-server:local"]
    assert runs["replay"].data.tags["benchmark.kind"] == "replay"
    assert child.data.tags["benchmark.provenance"] == "measured-local"
    assert child.data.metrics["endpoint_latency_p50_ms"] == 2.0
    assert child.data.metrics["errors"] == 0 and child.data.metrics["requests"] == 8
    for key in ("latency_p50_ms", "latency_p99_ms", "throughput_rps", "manager_overhead_p50_ms",
                "manager_overhead_p95_ms"):
        assert key in child.data.metrics
    assert child.data.params["pace"] == "poisson" and child.data.params["replay.k"] == "20"
    assert child.data.params["url"].startswith("http://127.0.0.1:")
    everything = [*child.data.params.values(), *child.data.tags.values()]
    assert not any("secret" in v for v in everything)
    clicks = tracking.download_artifacts(child.info.run_id, "raw/clicks.parquet")
    assert pd.read_parquet(clicks)["item"].tolist() == [1, 2, 3, 4, 5, 6, 7, 8]


def test_the_check_passes_on_equal_answers_and_exits_1_on_a_mismatch(data, tracking, monkeypatch):
    monkeypatch.setattr(replay_cli, "direct_invoker", lambda deployer, deployment: direct_invoker)
    monkeypatch.setattr(replay_cli, "_description", lambda deployer, deployment: None)
    args = ["--deployment", "fake", "--data", str(data), "--rate", "1000", "--think-s", "0",
            "--experiment", "replay-test"]
    with FakeSessionServer() as server:
        good = run("--url", server.url, *args)
    with FakeSessionServer(wrong={7}) as server:
        bad = run("--url", server.url, *args)
    assert good.exit_code == 0, good.output
    assert re.search(r"^mismatches +0$", good.stdout, re.M)
    assert re.search(r"^manager adds p50 / p95 ms +\S+ / \S+$", good.stdout, re.M)
    assert bad.exit_code == 1
    assert re.search(r"^mismatches +1$", bad.stdout, re.M)
    assert "click 1: different top-k items" in bad.stdout


def test_a_failed_click_exits_1(data, tracking):
    with FakeSessionServer(fail={5: 502}) as server:
        result = run("--url", server.url, "--data", str(data), "--no-check", "--no-baseline",
                     "--rate", "1000", "--think-s", "0", "--experiment", "replay-test")
    assert result.exit_code == 1 and "(502: 1)" in result.stdout


def test_niser_mlops_has_the_replay_command():
    result = CliRunner().invoke(main, ["replay", "--help"])
    assert result.exit_code == 0 and "--pace [recorded|poisson]" in result.output


def test_a_started_server_answers_health_and_is_stopped_by_pid_at_the_end(monkeypatch):
    monkeypatch.setenv("PYTHONPATH", REPO)
    argv = lambda port_file: [sys.executable, "-m", "tests.bench.replay_support",  # noqa: E731
                              "--port-file", str(port_file)]
    with running_session_server(argv, timeout_s=60) as url:
        from bench.replay_client import SessionClient

        assert SessionClient(url).health()["status"] == "ok"
        port = int(url.rsplit(":", 1)[1])
        owners = [c.pid for c in psutil.net_connections("tcp")
                  if c.laddr and c.laddr.port == port and c.status == psutil.CONN_LISTEN]
    assert owners and not any(psutil.pid_exists(p) and psutil.Process(p).status() != "zombie"
                              for p in owners)


def test_a_server_that_exits_at_once_is_reported_with_its_log():
    argv = lambda port_file: [sys.executable, "-c",  # noqa: E731
                              "import sys; print('no such deployment'); sys.exit(3)"]
    with pytest.raises(SessionServerError, match="exited with code 3") as err, \
            running_session_server(argv, timeout_s=60):
        pass
    assert "no such deployment" in str(err.value)


def test_the_server_command_serves_one_deployment_on_a_free_port_with_a_port_file(tmp_path):
    argv = session_server_argv("local", "d1", max_clicks=30, store="sqlite:///s.db")(tmp_path / "p")
    assert argv[1:] == ["-m", "flows.cli", "session-server", "--deployer", "local", "--deployment",
                        "d1", "--port", "0", "--port-file", str(tmp_path / "p"),
                        "--max-clicks", "30", "--store", "sqlite:///s.db"]


def test_a_raw_log_is_replayed_at_its_recorded_pace_by_default(tmp_path, tracking):
    log = tmp_path / "views.csv"
    log.write_text("session_id;user_id;item_id;timeframe;eventdate\n"
                   "1;NA;10;0;2016-05-09\n1;NA;11;500;2016-05-09\n2;NA;20;0;2016-05-09\n"
                   "2;NA;21;1000;2016-05-09\n")
    with FakeSessionServer() as server:
        result = run("--url", server.url, "--data", str(log), "--no-check", "--no-baseline",
                     "--speedup", "100", "--rate", "100", "--experiment", "replay-test")
    assert result.exit_code == 0, result.output
    assert "recorded pace (session starts: poisson)" in result.stderr
    exp = tracking.get_experiment_by_name("replay-test")
    child = tracking.search_runs([exp.experiment_id], "tags.`benchmark.target` != ''")[0]
    assert (child.data.params["pace"], child.data.params["schedule.starts"]) == (
        "recorded", "poisson")
    clicks = pd.read_parquet(tracking.download_artifacts(child.info.run_id, "raw/clicks.parquet"))
    first = clicks[clicks["session"] == 0]["intended_ns"].tolist()
    assert first[1] - first[0] == 5_000_000  # 500 ms recorded, 100 times faster
