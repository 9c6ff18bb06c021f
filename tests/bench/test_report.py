import json
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from click.testing import CliRunner
from mlflow.tracking import MlflowClient

from bench.cli import compare
from bench.clock import FakeClock
from bench.hooks import HookOutput
from bench.load_settings import LoadSettings
from bench.payloads import Payloads
from bench.report import TargetRun, compare_table, log_benchmark
from bench.sweep import sweep
from deployers.base import CostDrivers, Description
from tests.bench.support import answers_after

LEVELS = [1, 2, 4]


@pytest.fixture(scope="module")
def targets():
    settings = LoadSettings(warmup_s=0.02, duration_s=0.15, timeout_s=1.0)
    clock = FakeClock()
    payloads = Payloads([[i, i + 1] for i in range(1, 100)])
    fast = TargetRun(
        "fast", sweep(answers_after(clock, 0.002), payloads, LEVELS, settings, clock=clock),
        Description("local", "niser-local-1", "running",
                    CostDrivers(kind="local", cpus=2.0), {"workers": 1}),
        cold_start_s=1.25, settings=settings,
    )
    slow = TargetRun(
        "slow", sweep(answers_after(clock, 0.006), payloads, LEVELS, settings, clock=clock),
        Description("lambda", "niser-fn", "Active",
                    CostDrivers(kind="lambda", memory_mb=3008, architecture="x86_64")),
        provenance="measured-real", settings=settings,
    )
    return [fast, slow]


@pytest.fixture
def tracking(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    old = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    client = MlflowClient()
    client.create_experiment("bench-test", artifact_location=(tmp_path / "artifacts").as_uri())
    yield uri, client
    mlflow.set_tracking_uri(old)


def cost_hook(summaries, slo_ms, workdir):
    """Stands in for the cost model: a made-up per-level metric and one extra figure."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.plot([1, 2], [1, 2])
    return HookOutput(
        figures={"plots/cost_per_1m.png": fig},
        tables={"cost.json": pd.DataFrame({"target": [s.name for s in summaries]})},
        step_metrics={s.name: {"cost_per_1m_usd": [(st.level, 2.0 * st.level) for st in s.stats]}
                      for s in summaries},
        summary_metrics={"fast": {"breakeven_rps": 12.5}},
    )


def test_log_benchmark_writes_parent_children_metrics_and_artifacts(targets, tracking, tmp_path):
    _uri, client = tracking
    run = log_benchmark(targets, slo_ms=50, experiment_name="bench-test", hooks=[cost_hook])
    parent = client.get_run(run.parent_run_id)
    assert parent.info.status == "FINISHED" and parent.data.params["slo_ms"] == "50"
    assert set(run.child_run_ids) == {"fast", "slow"}

    for name, rid in run.child_run_ids.items():
        child = client.get_run(rid)
        assert child.data.tags["mlflow.parentRunId"] == run.parent_run_id
        assert child.data.tags["benchmark.target"] == name
        for metric in ("latency_p50_ms", "latency_p90_ms", "latency_p95_ms", "latency_p99_ms",
                       "latency_mean_ms", "latency_max_ms", "throughput_rps", "error_rate",
                       "timeouts", "cost_per_1m_usd"):
            hist = client.get_metric_history(rid, metric)
            assert sorted(h.step for h in hist) == LEVELS, metric
        assert "saturation_throughput_rps" in child.data.metrics
        arts = {a.path for a in client.list_artifacts(rid)} | {
            a.path for a in client.list_artifacts(rid, "raw")}
        assert {"summary.json", "raw/latencies.parquet"} <= arts

    fast = client.get_run(run.child_run_ids["fast"])
    assert fast.data.params["target"] == "local"
    assert fast.data.params["cost.kind"] == "local"
    assert fast.data.params["detail.workers"] == "1"
    assert fast.data.params["provenance"] == "measured-local"
    assert fast.data.params["load.duration_s"] == "0.15"
    assert fast.data.metrics["cold_start_s"] == 1.25
    assert fast.data.metrics["breakeven_rps"] == 12.5
    p50 = {h.step: h.value for h in client.get_metric_history(fast.info.run_id, "latency_p50_ms")}
    assert set(p50.values()) == {2.0}  # the 2 ms service time, on the fake clock
    slow = client.get_run(run.child_run_ids["slow"])
    assert "cold_start_s" not in slow.data.metrics
    assert slow.data.params["cost.memory_mb"] == "3008"
    assert slow.data.tags["benchmark.provenance"] == "measured-real"

    # raw latencies: every request of every level, read back from the artifact
    local = Path(client.download_artifacts(run.child_run_ids["fast"], "raw/latencies.parquet",
                                           str(tmp_path)))
    raw = pd.read_parquet(local)
    assert len(raw) == sum(len(lv.status) for lv in targets[0].sweep.levels)
    assert {"latency_ms", "status", "intended_ns", "warmup", "error"} <= set(raw.columns)

    parent_arts = {a.path for a in client.list_artifacts(run.parent_run_id, "plots")}
    assert {"plots/latency_vs_concurrency.png", "plots/throughput_vs_concurrency.png",
            "plots/cost_per_1m.png"} <= parent_arts
    summary = Path(client.download_artifacts(run.parent_run_id, "summary.json", str(tmp_path)))
    table = json.loads(summary.read_text())
    assert len(table["data"]) == 2 * len(LEVELS)


def test_compare_reads_the_table_back(targets, tracking):
    uri, _client = tracking
    run = log_benchmark(targets, slo_ms=50, experiment_name="bench-test", hooks=[])
    t = compare_table(parent_run_id=run.parent_run_id)
    assert len(t) == 2 * len(LEVELS)
    assert set(t["target"]) == {"fast", "slow"} and sorted(set(t["level"])) == LEVELS
    fast = t[t["target"] == "fast"]
    slow = t[t["target"] == "slow"]
    assert (fast["latency_p50_ms"].to_numpy() < slow["latency_p50_ms"].to_numpy()).all()
    by_exp = compare_table(experiment_name="bench-test")
    assert len(by_exp) == len(t)

    result = CliRunner().invoke(
        compare, ["--parent-run-id", run.parent_run_id, "--tracking-uri", uri])
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "fast" in out and "slow" in out and "latency_p95_ms" in out


def test_log_benchmark_refuses_empty_or_duplicate_targets(targets, tracking):
    with pytest.raises(ValueError, match="empty"):
        log_benchmark([], slo_ms=50, experiment_name="bench-test")
    with pytest.raises(ValueError, match="unique"):
        log_benchmark([targets[0], targets[0]], slo_ms=50, experiment_name="bench-test")
    with pytest.raises(ValueError, match="exactly one"):
        compare_table()


def test_a_shaped_targets_cpu_per_level_and_its_shaping_reach_mlflow(tracking):
    from deployers.base import Usage

    _uri, client = tracking
    settings = LoadSettings(warmup_s=0.02, duration_s=0.15, timeout_s=1.0)
    clock = FakeClock()
    used = iter([0.0, 0.05, 0.05, 0.2])
    ticks = iter([(0.0, 0.0), (100.0, 100.0), (100.0, 100.0), (200.0, 200.0)])  # all busy
    result = sweep(answers_after(clock, 0.002), Payloads([[1, 2]]), [1, 4], settings,
                   clock=clock, machine=lambda: next(ticks),
                   observe=lambda: Usage("cgroup-v1", 1, 1, 0.5, 10, 9, 0.5, next(used)))
    shaped = TargetRun("shaped", result, settings=settings, shaping="cgroup-v1",
                       notes={"capacity_limit": "levels 8 not measured: one environment"})
    run = log_benchmark([shaped], slo_ms=50, experiment_name="bench-test", hooks=[])
    child = client.get_run(run.child_run_ids["shaped"])
    assert child.data.tags["benchmark.shaping"] == "cgroup-v1"
    assert child.data.tags["benchmark.capacity_limit"].startswith("levels 8 not measured")
    for metric in ("standin_cpu_share", "standin_cpu_quota", "cpu_throttled_periods",
                   "shaping_bound"):
        assert sorted(h.step for h in client.get_metric_history(child.info.run_id, metric)) \
            == [1, 4], metric
