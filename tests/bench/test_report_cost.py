
import mlflow
import pytest
from mlflow.tracking import MlflowClient

from bench import prices
from bench.clock import FakeClock
from bench.cost import cost_per_million_at_load
from bench.load_settings import LoadSettings
from bench.payloads import Payloads
from bench.report import TargetRun, log_benchmark
from bench.report_cost import cost_hook
from bench.rounding import significant
from bench.sweep import sweep
from deployers.base import CostDrivers, Description
from tests.bench.support import answers_after


@pytest.fixture(scope="module")
def targets():
    settings = LoadSettings(warmup_s=0.02, duration_s=0.15, timeout_s=1.0)
    clock = FakeClock()
    payloads = Payloads([[i] for i in range(1, 100)])
    inst = TargetRun("c5", sweep(answers_after(clock, 0.003), payloads, [1, 2], settings, clock=clock),
                     Description("sagemaker", "ep", "InService",
                                 CostDrivers(kind="instance", instance_type="ml.c5.xlarge",
                                             instance_count=1)),
                     provenance="measured-local")
    lam = TargetRun("fn", sweep(answers_after(clock, 0.004), payloads, [1, 2], settings, clock=clock),
                    Description("lambda", "fn", "Active",
                                CostDrivers(kind="lambda", memory_mb=3008,
                                            architecture="x86_64")),
                    provenance="measured-local")
    local = TargetRun("box", sweep(answers_after(clock, 0.003), payloads, [1, 2], settings, clock=clock),
                      Description("local", "box", "running", CostDrivers(kind="local", cpus=2)))
    return [inst, lam, local]


@pytest.fixture
def client(tmp_path):
    old = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    c = MlflowClient()
    c.create_experiment("cost-test", artifact_location=(tmp_path / "a").as_uri())
    yield c
    mlflow.set_tracking_uri(old)


def test_cost_hook_prices_each_level_at_its_served_load(targets, client):
    table = prices.load()
    run = log_benchmark(targets, slo_ms=100, experiment_name="cost-test",
                        hooks=[cost_hook(table)])
    inst_id = run.child_run_ids["c5"]
    stats = targets[0].sweep.stats()
    hist = {h.step: h.value for h in client.get_metric_history(inst_id, "cost_per_1m_usd")}
    for st in stats:
        want = cost_per_million_at_load(targets[0].description.cost, table,
                                        served_rps=st.throughput_rps)
        assert hist[int(st.level)] == significant(want, 4)  # USD to 4 significant digits
    inst = client.get_run(inst_id).data.metrics
    assert inst["cost_per_hour_usd"] == pytest.approx(table.instance_hourly("ml.c5.xlarge").usd)
    assert "cost_per_1m_usd_at_saturation" in inst
    # Lambda (4 ms, 3008 MB) costs ~0.0014 USD/h per req/s: it crosses $0.204/h near 130 req/s,
    # well inside the plotted range of 4x the instance's saturation.
    assert 50 < inst["breakeven_rps.fn"] < 4 * inst["saturation_throughput_rps"]

    lam_hist = client.get_metric_history(run.child_run_ids["fn"], "cost_per_1m_usd")
    assert sorted(h.step for h in lam_hist) == [1, 2] and all(h.value > 0 for h in lam_hist)

    # local machines have no price until the user sets one: no figure, a note instead
    assert client.get_metric_history(run.child_run_ids["box"], "cost_per_1m_usd") == []
    arts = {a.path for a in client.list_artifacts(run.parent_run_id)}
    assert "cost_notes.json" in arts
    plots = {a.path for a in client.list_artifacts(run.parent_run_id, "plots")}
    assert {"plots/cost_per_1m_vs_concurrency.png", "plots/breakeven_c5_vs_fn.png",
            "plots/breakeven_box_vs_fn.png"} - plots == {"plots/breakeven_box_vs_fn.png"}


def test_local_prices_set_by_the_user_are_used(targets, client):
    table = prices.load().with_local(per_core_hour=0.05)
    run = log_benchmark(targets[2:], slo_ms=100, experiment_name="cost-test",
                        hooks=[cost_hook(table)])
    m = client.get_run(run.child_run_ids["box"]).data.metrics
    assert m["cost_per_hour_usd"] == pytest.approx(2 * 0.05)
