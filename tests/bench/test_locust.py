"""Locust as the load generator of HTTP targets: the mix it is given, real runs against the stub
server, their import into our levels and MLflow, and the options that select it."""

import importlib.util
import sys

import pytest
from click.testing import CliRunner
from mlflow.tracking import MlflowClient

from bench.cli import bench
from bench.level import FRAME_COLUMNS, cores
from bench.load_settings import LoadSettings
from bench.locust_mix import Mix, Records, read_mix, read_records, write_mix
from bench.locust_run import labels, locust_records, to_level
from bench.payloads import Payloads
from bench.stats import ERROR, OK
from bench.stub_server import StubServer
from deployers import wire

# found, never imported: ``import locust`` would monkey-patch this process with gevent
pytestmark = pytest.mark.skipif(importlib.util.find_spec("locust") is None,
                                reason="Locust is the 'load' extra: pip install -e '.[load]'")

SHORT = LoadSettings(warmup_s=0.5, duration_s=1.5, timeout_s=5.0)


def pool(batch_size: int = 2) -> Payloads:
    return Payloads([[i, i + 1, i + 2][: 1 + i % 3] for i in range(1, 301)],
                    batch_size=batch_size, seed=3)


def test_the_locust_mix_is_our_generator_s_bodies_in_its_cycle_order(tmp_path):
    payloads = pool()
    mix = read_mix(write_mix(tmp_path / "mix.json", payloads.batches, "/invocations", 7, 5.0))
    ours = [wire.encode_request(payloads.next_batch(), 7).decode() for _ in range(len(payloads))]
    assert mix.bodies == ours
    assert mix.sessions == [2] * len(payloads)
    assert (mix.path, mix.k, mix.codes["ok"], mix.codes["error"]) == ("/invocations", 7, OK, ERROR)


def test_worker_w_of_n_starts_at_its_share_of_the_pool():
    mix = Mix("/p", 20, 5.0, 4, ["b"] * 10, [1] * 10, {})
    assert [mix.start(w) for w in range(4)] == [0, 2, 5, 7]


def test_records_become_a_level_whose_window_starts_warmup_s_after_the_first_request(tmp_path):
    ms = 1_000_000
    starts = [1000 * ms + i * 100 * ms for i in range(30)]  # one request every 100 ms, for 3 s
    records = Records(start_ns=starts, end_ns=[s + 20 * ms for s in starts], status=[OK] * 30,
                      error=[""] * 30, batch=list(range(30)), cpu_s=0.5, wall_s=2.0, files=1)
    level = to_level(records, 3, SHORT)
    st = level.stats()
    assert (st.count, st.p50_ms, st.window_s) == (15, 20.0, 1.5)  # requests 5..19
    assert int(level.warmup.sum()) == 5
    assert level.cpu_fraction == 0.5 / (2.0 * cores())


def test_a_real_locust_run_at_2_users_sends_the_pool_in_order_and_imports_as_a_level():
    payloads = pool(batch_size=1)  # the stub answers one row: one session per request
    with StubServer(5.0) as server:
        records = locust_records(server.url, payloads.batches, 2, SHORT)
    assert records.files == 1 and records.wall_s > 0
    cycle = [i % len(payloads) for i in range(len(records.batch))]  # ours: the pool, cycled
    assert sorted(records.batch) == sorted(cycle)
    level = to_level(records, 2, SHORT)
    st = level.stats()
    assert list(level.frame().columns) == FRAME_COLUMNS
    assert (level.mode, level.level, level.threads) == ("closed", 2.0, 2)
    assert st.errors == st.timeouts == 0 and st.ok > 50
    assert 5.0 <= st.p50_ms < 50.0
    assert 0 < level.cpu_fraction < 1
    assert "gevent" not in sys.modules and "locust" not in sys.modules


def test_http_with_locust_logs_the_levels_to_mlflow_labelled_with_the_generator(
        tracking_uri, tmp_path, monkeypatch):
    data = tmp_path / "split"
    data.mkdir()
    (data / "train_sessions.txt").write_text("1 2 3 4\n5 6 7\n")
    (data / "test.tsv").write_text("1 2\t3\n5\t6\n2 3\t4\n")
    monkeypatch.chdir(tmp_path)
    with StubServer(5.0) as server:
        result = CliRunner().invoke(bench, [
            "http", "--url", server.url, "--data", str(data), "--users", "2",
            "--warmup-s", "0.5", "--duration-s", "1.5", "--generator", "locust",
            "--experiment", "locust-http"])
    assert result.exit_code == 0, result.output
    assert "load generator: locust (1 processes)" in result.stdout
    client = MlflowClient()
    exp = client.get_experiment_by_name("locust-http")
    child = client.search_runs([exp.experiment_id], "tags.`benchmark.target` = 'http'")[0]
    assert child.data.params["load_generator"] == "locust"
    assert child.data.params["load_generator_processes"] == "1"
    assert child.data.tags["benchmark.load_generator"] == "locust"
    history = client.get_metric_history(child.info.run_id, "latency_p50_ms")
    assert [m.step for m in history] == [2] and history[0].value >= 5.0
    assert {"latency_p95_ms", "latency_p99_ms"} <= set(child.data.metrics)


def test_our_generator_is_labelled_niser():
    assert labels("niser") == {"load_generator": "niser"}
    with pytest.raises(ValueError, match="generator must be one of niser, locust"):
        labels("gatling")


@pytest.mark.parametrize(
    ("argv", "option"),
    [
        (["calibrate", "--generator", "gatling"], "--generator"),
        (["calibrate", "--generator", "locust", "--processes", "0"], "--processes"),
        (["calibrate", "--processes", "2"], "--processes"),
        (["http", "--url", "http://127.0.0.1:1", "--data", ".", "--processes", "0"],
         "--processes"),
        (["http", "--url", "http://127.0.0.1:1", "--data", ".", "--generator", "k6"],
         "--generator"),
        (["http", "--url", "http://127.0.0.1:1", "--data", ".", "--processes", "2"],
         "--processes"),
    ],
)
def test_bad_generator_options_exit_2_naming_the_option(argv, option):
    result = CliRunner().invoke(bench, argv)
    assert result.exit_code == 2
    assert option in result.stderr


def test_read_records_merges_every_process_file(tmp_path):
    (tmp_path / "records-1.tsv").write_text("10\t20\t0\t\t0\n#cpu\t0.5\t2.0\n")
    (tmp_path / "records-2.tsv").write_text("11\t31\t1\tHttpStatus(503)\t5\n#cpu\t0.25\t3.0\n")
    rec = read_records(tmp_path)
    assert (rec.start_ns, rec.status, rec.error) == ([10, 11], [OK, ERROR], ["", "HttpStatus(503)"])
    assert (rec.cpu_s, rec.wall_s, rec.files) == (0.75, 3.0, 2)
    assert rec.batch == [0, 5]


def test_no_project_module_imports_locust_or_the_locustfile():
    import ast
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    offenders = []
    for package in ("niser", "deployers", "bench", "flows", "sessions", "scripts"):
        for path in (repo / package).rglob("*.py"):
            if path.name == "locustfile.py":
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                         else [f"{node.module}.{a.name}" for a in node.names]
                         if isinstance(node, ast.ImportFrom) else [])
                if any(n.split(".")[0] in ("locust", "gevent") or n == "bench.locustfile"
                       for n in names):
                    offenders.append(str(path.relative_to(repo)))
    assert offenders == []


def _distributed_run(tmp_path, url: str, clock: str) -> list:
    """A real distributed Locust run on 127.0.0.1: a master and two workers, each worker
    named as its own machine (``NISER_LOCUST_HOST``) with its own records folder."""
    import os
    import subprocess

    from bench.locust_run import LOCUSTFILE
    from deployers.http import free_port

    mix = write_mix(tmp_path / "mix.json", pool(batch_size=1).batches, "/invocations", 20, 5.0,
                    processes=2)
    port, root = free_port(), str(LOCUSTFILE.parents[1])
    base = {**os.environ, "NISER_LOCUST_MIX": str(mix), "NISER_LOCUST_CLOCK": clock,
            "PYTHONPATH": root}
    locust = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--loglevel", "WARNING"]
    folders, procs = [], []
    for name in ("master", "box-a", "box-b"):
        folder = tmp_path / name
        folder.mkdir()
        env = {**base, "NISER_LOCUST_OUT": str(folder), "NISER_LOCUST_HOST": name}
        argv = locust + (
            ["--master", "--master-bind-host", "127.0.0.1", "--master-bind-port", str(port),
             "--expect-workers", "2", "--headless", "--users", "4", "--spawn-rate", "1000",
             "--run-time", "3s", "--stop-timeout", "5", "--host", url, "--only-summary",
             "--exit-code-on-error", "0"] if name == "master" else
            ["--worker", "--master-host", "127.0.0.1", "--master-port", str(port)])
        procs.append(subprocess.Popen(argv, env=env, cwd=tmp_path, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL, start_new_session=True))
        if name != "master":
            folders.append(folder)
    try:
        assert [p.wait(timeout=120) for p in procs] == [0, 0, 0]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    return folders


def test_a_distributed_locust_run_of_two_machines_imports_as_one_level_into_mlflow(
        tracking_uri, tmp_path):
    with StubServer(5.0) as server:
        a, b = _distributed_run(tmp_path, server.url, "wall")
        result = CliRunner().invoke(bench, [
            "locust-import", "--level", f"4={a},{b}", "--url", server.url, "--workers", "2",
            "--warmup-s", "0.5", "--duration-s", "2", "--experiment", "locust-import"])
    assert result.exit_code == 0, result.output
    assert "records of 2 machine(s): box-a, box-b" in result.stdout
    records = read_records(a, b)
    assert records.hosts == {"box-a", "box-b"} and records.clocks == {"wall"}
    assert min(len(list(f.glob("records-*.tsv"))) for f in (a, b)) == 1  # each wrote its own
    client = MlflowClient()
    exp = client.get_experiment_by_name("locust-import")
    child = client.search_runs([exp.experiment_id], "tags.`benchmark.target` = 'http'")[0]
    assert child.data.params["load_generator"] == "locust"
    assert child.data.params["load_generator_processes"] == "2"
    history = client.get_metric_history(child.info.run_id, "latency_p50_ms")
    assert [m.step for m in history] == [4] and 5.0 <= history[0].value < 50.0
    level = to_level(records, 4, LoadSettings(warmup_s=0.5, duration_s=2.0, timeout_s=5.0))
    assert level.stats().ok > 100 and level.stats().errors == 0
    assert level.cpu_fraction != level.cpu_fraction  # NaN: the machines' cores are unknown
    assert "gevent" not in sys.modules and "locust" not in sys.modules


def test_monotonic_records_of_two_machines_are_refused_naming_the_clock(tmp_path):
    for host in ("box-a", "box-b"):
        (tmp_path / host).mkdir()
        (tmp_path / host / f"records-{host}-1.tsv").write_text(
            f"#meta\t{host}\tmonotonic\n10\t20\t0\t\t0\n")
    result = CliRunner().invoke(bench, [
        "locust-import", "--level", f"1={tmp_path / 'box-a'},{tmp_path / 'box-b'}",
        "--url", "http://127.0.0.1:1/invocations"])
    assert result.exit_code == 2 and "NISER_LOCUST_CLOCK=wall" in result.output


@pytest.mark.parametrize("spec", ["4", "x=dir", "0=dir", "4=/nonexistent-records"])
def test_a_bad_level_exits_2_naming_the_option(spec):
    result = CliRunner().invoke(bench, ["locust-import", "--level", spec, "--url",
                                        "http://127.0.0.1:1/invocations"])
    assert result.exit_code == 2 and "--level" in result.output


def test_locust_mix_writes_the_pool_our_generator_sends_for_n_workers(tmp_path):
    data = tmp_path / "split"
    data.mkdir()
    (data / "train_sessions.txt").write_text("1 2 3 4\n5 6 7\n")
    (data / "test.tsv").write_text("1 2\t3\n5\t6\n2 3\t4\n")
    result = CliRunner().invoke(bench, ["locust-mix", "--data", str(data), "--out",
                                        str(tmp_path / "mix.json"), "--workers", "3"])
    assert result.exit_code == 0, result.output
    mix = read_mix(tmp_path / "mix.json")
    ours = Payloads.from_samples(*_split(data), batch_size=1)
    assert mix.processes == 3 and mix.path == "/invocations" and mix.k == 20
    assert mix.bodies == [wire.encode_request(b, 20).decode() for b in ours.batches]
    bad = CliRunner().invoke(bench, ["locust-mix", "--data", str(data), "--out",
                                     str(tmp_path / "m.json"), "--path", "invocations"])
    assert bad.exit_code == 2 and "--path" in bad.output


def _split(data):
    from niser.data import load_preprocessed

    dataset = load_preprocessed(str(data))
    return dataset.test, dataset.vocab
