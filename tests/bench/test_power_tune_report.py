"""A power-tuning run in MLflow: children per size with step = memory, the parent's picks, the
plot; a failed size is a failed child."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pytest
from mlflow import MlflowClient

from bench import power_tune as pt
from bench import prices
from bench.level_usage import LevelUsage
from bench.power_tune_report import log_power_tune, plot_power_tune


def measured(memory: int, billed: float, probe: pt.CpuProbe | None = None
             ) -> tuple[pt.SizeProfile, pt.SizeMeasurement]:
    m = pt.SizeMeasurement(
        memory_mb=memory, architecture="x86_64", init_ms=(300.0,), billed_ms=(billed,) * 4,
        duration_ms=(billed - 0.4,) * 4, classes=("short", "short", "median", "long"),
        fallback_sessions=1, sessions=8, probe=probe, provenance="measured-local",
        deployments=(f"niser-lambda-{memory}",))
    return pt.profile(m, prices.load().region("us-east-1").lambda_), m


@pytest.fixture
def logged(tracking_uri):
    probe = pt.CpuProbe(LevelUsage("cgroup-v1", 2.0, 1.1, 0.579, 1, 20, 15, 0.8, 0.6), 1.8, 25)
    sizes = [measured(1024, 80.0, probe), measured(1769, 50.0)]
    picks = pt.pick([p for p, _ in sizes])
    run = log_power_tune(sizes, {512: "DeploymentFailed: boom"}, picks, {"batch": "200"},
                         "the table", experiment_name="power-tune-report-test")
    return run, picks


def test_each_size_is_a_child_run_with_its_metrics_at_step_memory(logged, tracking_uri):
    run, _ = logged
    client = MlflowClient(tracking_uri)
    assert sorted(run.child_run_ids) == [512, 1024, 1769]
    for memory in (1024, 1769):
        child = client.get_run(run.child_run_ids[memory])
        assert child.info.status == "FINISHED"
        assert child.data.tags["mlflow.parentRunId"] == run.parent_run_id
        assert child.data.params["batch"] == "200"
        history = client.get_metric_history(child.info.run_id, "duration_p50_ms")
        assert [h.step for h in history] == [memory]
        assert child.data.metrics["fallback_rate"] == pytest.approx(1 / 8)
    shaped = client.get_run(run.child_run_ids[1024]).data
    assert shaped.tags["shaping"] == "cgroup-v1"
    assert shaped.metrics["cpu_share_measured"] == pytest.approx(0.55)
    assert shaped.metrics["standin_cpu_share"] == pytest.approx(0.55)
    assert shaped.metrics["shaping_bound"] == 1.0  # 15 of 20 periods throttled
    assert shaped.metrics["probe_busy_fraction"] == pytest.approx(0.9)
    unshaped = client.get_run(run.child_run_ids[1769]).data
    assert unshaped.tags["shaping"] == "none"
    assert "cpu_share_measured" not in unshaped.metrics, "NaN is not logged"


def test_a_failed_size_is_a_failed_child_run_with_its_error(logged, tracking_uri):
    run, _ = logged
    child = MlflowClient(tracking_uri).get_run(run.child_run_ids[512])
    assert child.info.status == "FAILED"
    assert child.data.tags["error"] == "DeploymentFailed: boom"


def test_the_parent_carries_picks_metrics_across_sizes_and_artifacts(logged, tracking_uri):
    run, picks = logged
    client = MlflowClient(tracking_uri)
    parent = client.get_run(run.parent_run_id)
    assert parent.data.tags["pick.cost"] == str(picks.cost)
    assert parent.data.tags["pick.speed"] == str(picks.speed) == "1769"
    assert parent.data.tags["pick.balanced"] == str(picks.balanced)
    assert parent.data.tags["provenance"] == "measured-local"
    assert parent.data.tags["failed_sizes"] == "512"
    steps = [h.step for h in client.get_metric_history(run.parent_run_id, "cost_per_1m_usd")]
    assert sorted(steps) == [1024, 1769]
    paths = {a.path for a in client.list_artifacts(run.parent_run_id)}
    assert {"summary.json", "power_tune.txt", "plots"} <= paths


def test_the_plot_shows_cost_and_duration_against_memory_with_provenance():
    sizes = [measured(1024, 80.0), measured(1769, 50.0)]
    fig = plot_power_tune([p for p, _ in sizes], pt.pick([p for p, _ in sizes]))
    cost_ax, time_ax = fig.axes
    assert np.asarray(cost_ax.lines[0].get_xdata()).tolist() == [1024, 1769]
    assert "measured-local" in str(cost_ax.lines[0].get_label())
    assert np.asarray(time_ax.lines[0].get_ydata()).tolist() == [80.0, 50.0]  # p50, ms
    assert not np.isnan(np.asarray(cost_ax.lines[0].get_ydata(), dtype=float)).any()
    plt.close(fig)
